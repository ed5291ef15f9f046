// Empirical check of the Learn-then-Test guarantee over random calibration/test splits, and what
// the certified threshold buys (docs/design.md §6 last paragraph, §7; docs/calibration.md).
// calm-eval is a thin program over this header.
//
// Every prompt of a pool is decoded once per configuration (the full model; each measure at each
// grid lambda); the losses and costs of those decodes are plain data here, reused by every split:
//   validity    per split, learn_then_test on the calibration part picks lambda*; the split
//               violates the tolerance when the test part's mean loss at lambda* exceeds delta.
//               The share of violating splits, with its exact binomial (Clopper-Pearson)
//               interval, should not exceed epsilon;
//   efficiency  at lambda* on the test part: average layers, layer speedup L / average layers,
//               wall-clock speedup = the full model's generation seconds / those at lambda*.
// Where nothing is certified the full model runs: its own decodes count (loss 0, speedup 1).
#pragma once

#include "calm/calibrate/learn_then_test.hpp"
#include "calm/calibrate/pvalues.hpp"
#include "calm/core/error.hpp"
#include "calm/core/printf.hpp"
#include "calm/io/atomic_file.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace calm::calibrate {

namespace detail {
// A double as an error message shows it: 0.5, 1e-07.
inline std::string number(double v) {
  std::ostringstream text;
  text << v;
  return text.str();
}
}  // namespace detail

struct BinomialInterval {
  double lower = 0.0;
  double upper = 1.0;
};

// Exact two-sided interval for the success probability of k successes in n trials (Clopper and
// Pearson 1934): lower solves P[Bin(n, p) >= k] = (1 - confidence) / 2, upper solves
// P[Bin(n, p) <= k] = (1 - confidence) / 2; lower = 0 for k = 0 and upper = 1 for k = n.
// Solved by bisection on binomial_cdf to double precision.
inline BinomialInterval clopper_pearson(std::size_t k, std::size_t n, double confidence = 0.95) {
  if (n == 0 || k > n || !(confidence > 0.0 && confidence < 1.0))
    throw Error("clopper_pearson: need 0 <= k <= n, n >= 1 and confidence in (0, 1), got k = " +
                std::to_string(k) + ", n = " + std::to_string(n) +
                ", confidence = " + detail::number(confidence));
  const double tail = (1.0 - confidence) / 2.0;
  const auto solve = [](auto&& too_low) {  // too_low(p) is true below the root, false above
    double lo = 0.0, hi = 1.0;
    for (int it = 0; it < 100; ++it) {
      const double mid = 0.5 * (lo + hi);
      (too_low(mid) ? lo : hi) = mid;
    }
    return 0.5 * (lo + hi);
  };
  const auto N = static_cast<std::int64_t>(n), K = static_cast<std::int64_t>(k);
  BinomialInterval interval;
  // P[Bin(n, p) >= k] grows with p; P[Bin(n, p) <= k] falls with p.
  if (k > 0)
    interval.lower = solve([&](double p) { return 1.0 - binomial_cdf(K - 1, N, p) < tail; });
  if (k < n) interval.upper = solve([&](double p) { return binomial_cdf(K, N, p) > tail; });
  return interval;
}

// Calibration prompts per split: share (in (0, 1)) of n, rounded; both parts must be non-empty.
inline std::size_t calibration_size(std::size_t n, double share) {
  const auto n_cal = static_cast<std::size_t>(std::llround(share * static_cast<double>(n)));
  if (!(share > 0.0 && share < 1.0) || n_cal < 1 || n_cal >= n) {
    char text[160];
    std::snprintf(text, sizeof text, "%zu pooled prompts cannot be split %.0f%% / %.0f%% into two "
                  "non-empty parts", n, 100 * share, 100 * (1 - share));
    throw Error(text);
  }
  return n_cal;
}

// One decode of one prompt: its loss and its cost.
struct DecodeCost {
  double loss = 0.0;       // in [0, 1], against the full model's decode (docs/design.md §6)
  double layer_sum = 0.0;  // sum of exit layers over the generated tokens
  std::size_t tokens = 0;  // generated tokens
  double seconds = 0.0;    // generation only, prefill excluded (docs/design.md §7)
};

// Sums of DecodeCost over a set of prompts.
struct CostTotals {
  double loss = 0.0, layer_sum = 0.0, tokens = 0.0, seconds = 0.0;
  std::size_t prompts = 0;

  double mean_loss() const { return loss / static_cast<double>(prompts); }
  double average_layers() const { return layer_sum / std::max(tokens, 1.0); }
};

// Totals of costs[i] for i in `prompts`, summed in that order.
inline CostTotals total_cost(std::span<const DecodeCost> costs,
                             std::span<const std::size_t> prompts) {
  CostTotals t;
  for (std::size_t i : prompts) {
    const DecodeCost& c = costs[i];
    t.loss += c.loss;
    t.layer_sum += c.layer_sum;
    t.tokens += static_cast<double>(c.tokens);
    t.seconds += c.seconds;
  }
  t.prompts = prompts.size();
  return t;
}

inline CostTotals total_cost(std::span<const DecodeCost> costs) {
  std::vector<std::size_t> all(costs.size());
  std::iota(all.begin(), all.end(), std::size_t{0});
  return total_cost(costs, all);
}

// reference.seconds / t.seconds: > 1 when t (same prompts) generated faster than the reference.
inline double wall_clock_speedup(const CostTotals& reference, const CostTotals& t) {
  return reference.seconds / std::max(t.seconds, 1e-12);
}

// Decodes every prompt under every configuration once: costs[c][i] of prompt i under
// configuration c, configuration 0 being the full model that the losses compare against.
//   decode(c, i)        -> a GenerationResult (generated tokens and their SequenceReport);
//   loss(i, tokens, full_tokens) -> the loss in [0, 1] of configuration c's tokens for prompt i;
//   after_each()        is called after every decode (a progress line).
// Prompts outside, configurations inside: a slow spell of a shared machine then slows the full
// model and the early exits alike, and the wall-clock ratios stay fair. The configurations' order
// is shuffled per prompt (std::mt19937_64(seed)): whichever decode came first after a new prompt
// was measured up to 20% slower (a static exit at layer L against the identical full model).
template <class Decode, class Loss, class AfterEach>
std::vector<std::vector<DecodeCost>> decode_each_configuration(
    std::size_t prompts, std::size_t configurations, std::uint64_t seed, Decode&& decode,
    Loss&& loss, AfterEach&& after_each) {
  std::vector<std::vector<DecodeCost>> costs(configurations, std::vector<DecodeCost>(prompts));
  std::mt19937_64 rng(seed);
  std::vector<std::size_t> order(configurations);
  std::iota(order.begin(), order.end(), std::size_t{0});
  for (std::size_t i = 0; i < prompts; ++i) {
    std::vector<std::vector<int>> tokens(configurations);
    std::shuffle(order.begin(), order.end(), rng);
    for (std::size_t c : order) {
      auto r = decode(c, i);
      DecodeCost& cost = costs[c][i];
      cost.tokens = r.report.tokens.size();
      cost.layer_sum = r.report.average_layers() * static_cast<double>(cost.tokens);
      cost.seconds = r.report.generation_seconds;
      tokens[c] = std::move(r.tokens);
      after_each();
    }
    for (std::size_t c = 0; c < configurations; ++c)
      costs[c][i].loss = loss(i, std::as_const(tokens[c]), std::as_const(tokens[0]));
  }
  return costs;
}

// One measure's decodes: table[j][i] = prompt i at grid[j].
using CostTable = std::vector<std::vector<DecodeCost>>;

struct SplitValidationOptions {
  std::size_t splits = 100;
  std::size_t calibration_size = 0;  // prompts that calibrate in each split; the rest test
  std::vector<double> deltas;        // tolerances, each in (0, 1)
  double epsilon = 0.1;
  PValueMethod method = PValueMethod::hoeffding_bentkus;
  std::vector<double> grid = default_lambda_grid();
  std::size_t num_layers = 0;  // L, for the layer speedup
  std::uint64_t seed = 1;      // of RandomSplits
  double confidence = 0.95;    // of the violation share's interval
};

// One split, one measure, one delta.
struct SplitOutcome {
  std::optional<double> lambda_star;  // empty: nothing certified, the full model runs
  double test_loss = 0.0;             // mean loss of the test part at lambda*
  double average_layers = 0.0;
  double layer_speedup = 0.0;
  double wall_clock_speedup = 0.0;
  bool violated = false;  // test_loss > delta
};

// One measure at one delta over all splits; shares and means are over splits.
struct ValidationSummary {
  double delta = 0.0;
  std::vector<SplitOutcome> per_split;
  std::size_t certified = 0;   // splits with a lambda*
  std::size_t violations = 0;  // splits with test_loss > delta
  double certified_share = 0.0;
  double violation_share = 0.0;
  BinomialInterval violation_interval;  // Clopper-Pearson at options.confidence
  double lambda_star_median = std::numeric_limits<double>::quiet_NaN();  // NaN: never certified
  double test_loss = 0.0;
  double average_layers = 0.0;
  double layer_speedup = 0.0;
  double wall_clock_speedup = 0.0;
};

// The pool's order in successive splits: each shuffles the previous order with one
// std::mt19937_64 seeded once, so a seed fixes the whole sequence. The first calibration_size
// entries calibrate, the rest test.
class RandomSplits {
 public:
  RandomSplits(std::size_t n, std::uint64_t seed) : rng_(seed), order_(n) {
    std::iota(order_.begin(), order_.end(), std::size_t{0});
  }
  std::span<const std::size_t> next() {
    std::shuffle(order_.begin(), order_.end(), rng_);
    return order_;
  }

 private:
  std::mt19937_64 rng_;
  std::vector<std::size_t> order_;
};

namespace detail {

inline double median(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

template <class Field>
double mean_over_splits(const std::vector<SplitOutcome>& splits, Field field) {
  double sum = 0.0;
  for (const SplitOutcome& s : splits) sum += s.*field;
  return sum / static_cast<double>(splits.size());
}

inline void check_costs(std::span<const DecodeCost> costs, std::size_t n, const std::string& what) {
  if (costs.size() != n)
    throw Error("split validation: " + what + " has " + std::to_string(costs.size()) +
                " decodes, expected one per prompt (" + std::to_string(n) + ")");
  for (std::size_t i = 0; i < n; ++i)
    if (!(costs[i].loss >= 0.0 && costs[i].loss <= 1.0))
      throw Error("split validation: " + what + ", prompt " + std::to_string(i) + ": loss " +
                  number(costs[i].loss) + " is outside [0, 1]");
}

inline void check_inputs(const std::vector<DecodeCost>& full,
                         const std::vector<CostTable>& measures, const SplitValidationOptions& o) {
  const std::size_t n = full.size();
  if (o.calibration_size < 1 || o.calibration_size >= n)
    throw Error("split validation: " + std::to_string(n) + " prompts cannot be split into " +
                std::to_string(o.calibration_size) +
                " calibration prompts and a non-empty test part");
  if (o.splits == 0) throw Error("split validation: need at least one split");
  if (o.deltas.empty()) throw Error("split validation: no tolerances (deltas)");
  if (o.num_layers == 0) throw Error("split validation: num_layers must be >= 1");
  if (!(o.confidence > 0.0 && o.confidence < 1.0))
    throw Error("split validation: confidence " + number(o.confidence) +
                " is not in (0, 1)");
  check_costs(full, n, "the full model");
  for (std::size_t m = 0; m < measures.size(); ++m) {
    if (measures[m].size() != o.grid.size())
      throw Error("split validation: measure " + std::to_string(m) + " has " +
                  std::to_string(measures[m].size()) + " grid rows but the grid has " +
                  std::to_string(o.grid.size()) + " points");
    for (std::size_t j = 0; j < o.grid.size(); ++j)
      check_costs(measures[m][j], n,
                  "measure " + std::to_string(m) + " at lambda " + number(o.grid[j]));
  }
}

}  // namespace detail

// Runs options.splits splits; next_split() returns the pool's order for the next split (a
// permutation of 0..n-1, viewable as std::span<const std::size_t>). Result [m][d]: measure m
// (full.size() prompts, measures[m][j][i]) at options.deltas[d].
template <class NextSplit>
std::vector<std::vector<ValidationSummary>> validate_splits(const std::vector<DecodeCost>& full,
                                                            const std::vector<CostTable>& measures,
                                                            const SplitValidationOptions& options,
                                                            NextSplit&& next_split) {
  detail::check_inputs(full, measures, options);
  const std::size_t n = full.size(), n_cal = options.calibration_size;
  const auto L = static_cast<double>(options.num_layers);
  std::vector<std::vector<ValidationSummary>> out(
      measures.size(), std::vector<ValidationSummary>(options.deltas.size()));
  std::vector<char> seen(n);
  for (std::size_t s = 0; s < options.splits; ++s) {
    const std::span<const std::size_t> order = next_split();
    if (order.size() != n)
      throw Error("split validation: split " + std::to_string(s) + " orders " +
                  std::to_string(order.size()) + " prompts, expected " + std::to_string(n));
    std::fill(seen.begin(), seen.end(), 0);
    for (std::size_t i : order)
      if (i >= n || std::exchange(seen[i], 1))
        throw Error("split validation: split " + std::to_string(s) + " is not a permutation of "
                    "prompts 0.." + std::to_string(n - 1));
    const std::span<const std::size_t> cal_part = order.first(n_cal),
                                       test_part = order.subspan(n_cal);
    const CostTotals full_test = total_cost(full, test_part);
    for (std::size_t m = 0; m < measures.size(); ++m) {
      xt::xtensor<double, 2> losses({options.grid.size(), n_cal});  // (grid, calibration prompt)
      for (std::size_t j = 0; j < options.grid.size(); ++j)
        for (std::size_t k = 0; k < n_cal; ++k) losses(j, k) = measures[m][j][cal_part[k]].loss;
      for (std::size_t d = 0; d < options.deltas.size(); ++d) {
        const CalibrationResult result = learn_then_test(
            losses, {.delta = options.deltas[d], .epsilon = options.epsilon,
                     .method = options.method, .grid = options.grid});
        std::span<const DecodeCost> at_star = full;
        if (result.lambda_star) {
          const auto j = static_cast<std::size_t>(
              std::find(options.grid.begin(), options.grid.end(), *result.lambda_star) -
              options.grid.begin());
          at_star = measures[m][j];
        }
        const CostTotals t = total_cost(at_star, test_part);
        SplitOutcome o{.lambda_star = result.lambda_star,
                       .test_loss = t.mean_loss(),
                       .average_layers = t.average_layers(),
                       .layer_speedup = L / t.average_layers(),
                       .wall_clock_speedup = wall_clock_speedup(full_test, t)};
        o.violated = o.test_loss > options.deltas[d];
        out[m][d].per_split.push_back(o);
      }
    }
  }
  for (auto& per_measure : out)
    for (std::size_t d = 0; d < options.deltas.size(); ++d) {
      ValidationSummary& v = per_measure[d];
      v.delta = options.deltas[d];
      std::vector<double> stars;
      for (const SplitOutcome& o : v.per_split) {
        v.violations += o.violated;
        if (o.lambda_star) stars.push_back(*o.lambda_star);
      }
      v.certified = stars.size();
      const auto splits = static_cast<double>(options.splits);
      v.certified_share = static_cast<double>(v.certified) / splits;
      v.violation_share = static_cast<double>(v.violations) / splits;
      v.violation_interval = clopper_pearson(v.violations, options.splits, options.confidence);
      v.lambda_star_median = detail::median(std::move(stars));
      v.test_loss = detail::mean_over_splits(v.per_split, &SplitOutcome::test_loss);
      v.average_layers = detail::mean_over_splits(v.per_split, &SplitOutcome::average_layers);
      v.layer_speedup = detail::mean_over_splits(v.per_split, &SplitOutcome::layer_speedup);
      v.wall_clock_speedup =
          detail::mean_over_splits(v.per_split, &SplitOutcome::wall_clock_speedup);
    }
  return out;
}

// The same over RandomSplits(full.size(), options.seed).
inline std::vector<std::vector<ValidationSummary>> validate_splits(
    const std::vector<DecodeCost>& full, const std::vector<CostTable>& measures,
    const SplitValidationOptions& options) {
  RandomSplits splits(full.size(), options.seed);
  return validate_splits(full, measures, options, [&] { return splits.next(); });
}

// One line of calm-eval's tables and CSV: a calibrated (measure, delta) summarised over the
// splits, or a reference line (kind full, oracle or static) over the whole pool. NaN: not
// applicable to the kind (an empty CSV field).
struct EvaluationRow {
  std::string kind;  // calibrated | full | oracle | static
  std::string measure;
  double delta = std::numeric_limits<double>::quiet_NaN();
  std::size_t static_layer = 0;  // static exits only; 0 otherwise
  std::size_t splits = 0;
  double certified_share = std::numeric_limits<double>::quiet_NaN();
  double lambda_star_median = std::numeric_limits<double>::quiet_NaN();
  double test_loss = 0.0;
  double violation_share = std::numeric_limits<double>::quiet_NaN();
  double ci_low = std::numeric_limits<double>::quiet_NaN();
  double ci_high = std::numeric_limits<double>::quiet_NaN();
  double average_layers = 0.0;
  double layer_speedup = 0.0;
  double wall_clock_speedup = 0.0;
  // (L - average_layers) / (L - the local oracle's average layers): the share of the oracle's
  // layer saving this row captures (docs/design.md §7); NaN without an oracle row or when the
  // oracle saves nothing. set_oracle_saving_shares() fills it.
  double oracle_saving_share = std::numeric_limits<double>::quiet_NaN();
};

// (L - average_layers) / (L - oracle_average_layers); NaN when the oracle saves no layer.
inline double oracle_saving_share(std::size_t num_layers, double average_layers,
                                  double oracle_average_layers) {
  const auto L = static_cast<double>(num_layers);
  const double oracle_saving = L - oracle_average_layers;
  if (!(oracle_saving > 0.0)) return std::numeric_limits<double>::quiet_NaN();
  return (L - average_layers) / oracle_saving;
}

// Fills every row's oracle_saving_share against the first row of kind "oracle" (a reference line
// over the whole pool; a calibrated row's average is the mean over the splits' test parts, which
// together cover the pool). Without an oracle row the shares stay NaN.
inline void set_oracle_saving_shares(std::vector<EvaluationRow>& rows, std::size_t num_layers) {
  const auto oracle = std::find_if(rows.begin(), rows.end(),
                                   [](const EvaluationRow& r) { return r.kind == "oracle"; });
  if (oracle == rows.end()) return;
  const double oracle_layers = oracle->average_layers;
  for (EvaluationRow& r : rows)
    r.oracle_saving_share = oracle_saving_share(num_layers, r.average_layers, oracle_layers);
}

inline EvaluationRow calibrated_row(const std::string& measure, const ValidationSummary& v) {
  return {.kind = "calibrated", .measure = measure, .delta = v.delta, .splits = v.per_split.size(),
          .certified_share = v.certified_share, .lambda_star_median = v.lambda_star_median,
          .test_loss = v.test_loss, .violation_share = v.violation_share,
          .ci_low = v.violation_interval.lower, .ci_high = v.violation_interval.upper,
          .average_layers = v.average_layers, .layer_speedup = v.layer_speedup,
          .wall_clock_speedup = v.wall_clock_speedup};
}

// A configuration over all prompts (costs[i]) against the full model's totals on them.
inline EvaluationRow reference_row(std::string kind, std::string measure, std::size_t static_layer,
                                   std::span<const DecodeCost> costs, const CostTotals& full,
                                   std::size_t num_layers) {
  const CostTotals t = total_cost(costs);
  return {.kind = std::move(kind), .measure = std::move(measure), .static_layer = static_layer,
          .test_loss = t.mean_loss(), .average_layers = t.average_layers(),
          .layer_speedup = static_cast<double>(num_layers) / t.average_layers(),
          .wall_clock_speedup = wall_clock_speedup(full, t)};
}

// calm-eval's configurations, costs[c][prompt]: c = 0 the full model, 1 + m * G + j measure m at
// options.grid[j] (G thresholds), then the local oracle and the static exits 1..L. Returns each
// measure's table ([m][j][prompt]) and every row of the evaluation: each (measure, delta)
// validated over the random splits, then the reference lines over the whole pool (nothing to
// calibrate: full model, oracle, static exits) with the oracle's saving shares.
struct Evaluation {
  std::vector<CostTable> tables;
  std::vector<EvaluationRow> rows;
};
inline Evaluation evaluate_configurations(const CostTable& costs,
                                          const std::vector<std::string>& measures,
                                          const SplitValidationOptions& options) {
  const std::size_t M = measures.size(), G = options.grid.size(), L = options.num_layers;
  const std::size_t oracle = 1 + M * G, static_1 = oracle + 1;
  if (costs.size() != static_1 + L)
    throw Error("evaluate_configurations: " + std::to_string(costs.size()) + " configurations, "
                "expected " + std::to_string(static_1 + L));
  Evaluation e;
  e.tables.resize(M);
  for (std::size_t m = 0; m < M; ++m)
    e.tables[m].assign(costs.begin() + 1 + m * G, costs.begin() + 1 + (m + 1) * G);
  const auto validation = validate_splits(costs[0], e.tables, options);
  for (std::size_t m = 0; m < M; ++m)
    for (const auto& v : validation[m]) e.rows.push_back(calibrated_row(measures[m], v));
  const CostTotals full = total_cost(costs[0]);
  e.rows.push_back(reference_row("full", "full", 0, costs[0], full, L));
  e.rows.push_back(reference_row("oracle", "oracle", 0, costs[oracle], full, L));
  for (std::size_t k = 1; k <= L; ++k)
    e.rows.push_back(reference_row("static", "static", k, costs[static_1 + k - 1], full, L));
  set_oracle_saving_shares(e.rows, L);
  return e;
}

// The rows as CSV with a header line (tools/plot_efficiency.py reads it); numbers with 6
// significant digits, empty fields for NaN; epsilon is written on calibrated rows only. Columns
// are only ever added at the end (oracle_saving_share was), so older readers keep working.
inline std::string evaluation_csv(const std::vector<EvaluationRow>& rows, double epsilon,
                                  std::size_t num_layers) {
  const auto number = [](double v) -> std::string {
    if (std::isnan(v)) return "";
    char text[64];
    std::snprintf(text, sizeof text, "%.6g", v);
    return text;
  };
  std::string csv =
      "kind,measure,delta,epsilon,static_layer,num_layers,splits,certified_share,"
      "lambda_star_median,test_loss,violation_share,violation_ci95_low,violation_ci95_high,"
      "average_layers,layer_speedup,wall_clock_speedup,oracle_saving_share\n";
  for (const EvaluationRow& r : rows) {
    const std::string fields[] = {
        r.kind, r.measure, number(r.delta), r.kind == "calibrated" ? number(epsilon) : "",
        r.static_layer ? std::to_string(r.static_layer) : "", std::to_string(num_layers),
        std::to_string(r.splits), number(r.certified_share), number(r.lambda_star_median),
        number(r.test_loss), number(r.violation_share), number(r.ci_low), number(r.ci_high),
        number(r.average_layers), number(r.layer_speedup), number(r.wall_clock_speedup),
        number(r.oracle_saving_share)};
    for (std::size_t k = 0; k < std::size(fields); ++k)
      csv += fields[k] + (k + 1 == std::size(fields) ? "\n" : ",");
  }
  return csv;
}

// The evaluation as text tables (what calm-eval prints): the validity of each calibrated row
// (the share of splits whose test loss exceeds delta, with its 95% Clopper-Pearson interval,
// against epsilon), then every row's efficiency at lambda* on the test parts.
inline std::string evaluation_tables(const std::vector<EvaluationRow>& rows, double epsilon) {
  char eps[32];  // epsilon as written (shortest round trip), not rounded to %g's 6 digits
  const char* eps_end = std::to_chars(eps, eps + sizeof eps, epsilon).ptr;
  std::string out = "validity: share of splits whose test loss exceeds delta (95% Clopper-Pearson "
                    "interval); must be <= epsilon = " + std::string(eps, static_cast<std::size_t>(eps_end - eps)) + "\n";
  out += printf_string("%-12s %6s %10s %9s %10s %10s %17s  %s\n", "measure", "delta", "certified",
                       "lambda*", "test loss", "exceeding", "95% interval", "");
  for (const EvaluationRow& r : rows) {
    if (r.kind != "calibrated") continue;
    const std::string lambda =
        std::isnan(r.lambda_star_median) ? "-" : printf_string("%.2f", r.lambda_star_median);
    const std::string interval = printf_string("[%.1f%%, %.1f%%]", 100 * r.ci_low, 100 * r.ci_high);
    out += printf_string("%-12s %6.2f %9.0f%% %9s %10.4f %9.0f%% %17s  %s\n", r.measure.c_str(),
                         r.delta, 100 * r.certified_share, lambda.c_str(), r.test_loss,
                         100 * r.violation_share, interval.c_str(),
                         r.violation_share <= epsilon ? "ok" : "EXCEEDS epsilon");
  }
  out += "\nefficiency at lambda* on the test parts (mean over splits; full model where nothing "
         "is certified)\nof oracle: (L - avg layers) / (L - the local oracle's avg layers), the "
         "share of the oracle's layer saving\n";
  out += printf_string("%-12s %6s %10s %10s %14s %10s %10s\n", "measure", "delta", "avg layers",
                       "layer x", "wall-clock x", "test loss", "of oracle");
  for (const EvaluationRow& r : rows) {
    const std::string delta = r.kind == "calibrated" ? printf_string("%.2f", r.delta) : "-";
    const std::string name = r.kind == "static"       ? printf_string("static %zu", r.static_layer)
                             : r.kind == "calibrated" ? r.measure
                                                      : r.kind;
    const std::string share = std::isnan(r.oracle_saving_share)
                                  ? std::string("-")
                                  : printf_string("%.0f%%", 100 * r.oracle_saving_share);
    out += printf_string("%-12s %6s %10.2f %9.2fx %13.2fx %10.4f %10s\n", name.c_str(),
                         delta.c_str(), r.average_layers, r.layer_speedup, r.wall_clock_speedup,
                         r.test_loss, share.c_str());
  }
  return out;
}

// Writes evaluation_csv atomically: readers see the old file or the complete new one.
inline void write_evaluation_csv(const std::filesystem::path& path,
                                 const std::vector<EvaluationRow>& rows, double epsilon,
                                 std::size_t num_layers) {
  const std::string text = evaluation_csv(rows, epsilon, num_layers);
  io::write_atomically(path, [&](std::FILE* file) {
    io::write_all(file, text.data(), text.size(), path);
  });
}

}  // namespace calm::calibrate
