// calm-eval: checks the calibration guarantee empirically and measures what it buys
// (docs/design.md §6, §7).
//   calm-eval --model DIR --calibration-prompts FILE --test-prompts FILE [--splits 100]
//             [--measures softmax,saturation,classifier] [--deltas 0.05,0.1,0.2,0.3,0.4]
//             [--epsilon 0.1] [--max-new-tokens 32] [--csv out.csv] [--threads N] [--seed S]
//
// Every prompt of both files is decoded ONCE per configuration: the full model, each measure at
// each grid threshold, the local oracle and a static exit at each layer 1..L. Losses, layers and
// times of those decodes are then reused by every random calibration/test split of the pooled
// prompts, which is what makes 100 splits cost no more decoding than one.
//
// (1) Validity: per split, Learn-then-Test on the calibration part picks lambda*; the split
//     violates the tolerance when the mean loss of the test part at lambda* exceeds delta. The
//     share of violating splits (with a 95% Clopper-Pearson interval) must not exceed epsilon.
// (2) Efficiency at lambda*, on the test part, averaged over splits: average layers, layer
//     speedup L / average, and wall-clock speedup = the full model's generation time on the test
//     part / the generation time at lambda* (prefill excluded: it always runs every layer).
#include "policy_flags.hpp"
#include "prompts.hpp"

#include <calm/calibrate/distances.hpp>
#include <calm/calibrate/learn_then_test.hpp>
#include <calm/calibrate/pvalues.hpp>
#include <calm/io/atomic_file.hpp>
#include <calm/io/tokenizer.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <filesystem>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace cal = calm::calibrate;

struct Flags {
  std::filesystem::path model;
  std::filesystem::path calibration_prompts;
  std::filesystem::path test_prompts;
  std::size_t splits = 100;
  std::vector<std::string> measures = {"softmax", "saturation", "classifier"};
  std::vector<double> deltas = {0.05, 0.1, 0.2, 0.3, 0.4};
  double epsilon = 0.1;
  double calibration_share = 0.5;
  std::size_t max_new_tokens = 32;
  std::size_t max_prompts = 0;
  std::string distance = "rouge-l";
  std::string consistency = "textual";
  std::string method = "hoeffding-bentkus";
  std::string grid = "1,0.05,0.05";
  std::filesystem::path csv;
  std::size_t threads = 1;
  std::uint64_t seed = 1;
  calm::cli::PolicyFlags policy;
};

// One decoding configuration; every prompt is decoded once with each.
struct Config {
  std::string measure;  // a thresholded measure, or "full", "oracle", "static"
  double lambda = 1.0;
  std::size_t static_layer = 0;
};

// What one decode of one prompt left behind.
struct Outcome {
  double layer_sum = 0.0;  // sum of exit layers over the generated tokens
  std::size_t tokens = 0;
  double seconds = 0.0;    // generation only (docs/design.md §7 timings), prefill excluded
  double loss = 0.0;
};

// Exact (Clopper-Pearson) two-sided interval of a binomial share k / n, by bisection on the CDF.
std::pair<double, double> clopper_pearson(std::size_t k, std::size_t n, double confidence = 0.95) {
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
  // Lower: P[Bin(n, p) >= k] = tail; that tail grows with p.
  const double lower =
      k == 0 ? 0.0 : solve([&](double p) { return 1.0 - cal::binomial_cdf(K - 1, N, p) < tail; });
  // Upper: P[Bin(n, p) <= k] = tail; that CDF falls with p.
  const double upper =
      k == n ? 1.0 : solve([&](double p) { return cal::binomial_cdf(K, N, p) > tail; });
  return {lower, upper};
}

double median(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

double mean(const std::vector<double>& v) {
  return v.empty() ? std::numeric_limits<double>::quiet_NaN()
                   : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

// One row of the CSV and the printed tables.
struct Row {
  std::string kind;  // calibrated | oracle | static | full
  std::string measure;
  double delta = std::numeric_limits<double>::quiet_NaN();
  std::size_t static_layer = 0;
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
};

std::string csv_number(double v) { return std::isnan(v) ? "" : fmt::format("{:.6g}", v); }

void write_csv(const std::filesystem::path& path, const std::vector<Row>& rows, const Flags& f,
               std::size_t num_layers) {
  std::string text =
      "kind,measure,delta,epsilon,static_layer,num_layers,splits,certified_share,"
      "lambda_star_median,test_loss,violation_share,violation_ci95_low,violation_ci95_high,"
      "average_layers,layer_speedup,wall_clock_speedup\n";
  for (const Row& r : rows)
    text += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", r.kind, r.measure,
                        csv_number(r.delta), r.kind == "calibrated" ? csv_number(f.epsilon) : "",
                        r.static_layer ? std::to_string(r.static_layer) : "", num_layers, r.splits,
                        csv_number(r.certified_share), csv_number(r.lambda_star_median),
                        csv_number(r.test_loss), csv_number(r.violation_share),
                        csv_number(r.ci_low), csv_number(r.ci_high), csv_number(r.average_layers),
                        csv_number(r.layer_speedup), csv_number(r.wall_clock_speedup));
  calm::io::write_atomically(path, [&](std::FILE* file) {
    calm::io::write_all(file, text.data(), text.size(), path);
  });
}

int run(Flags& f) {
  if (!(f.epsilon > 0.0 && f.epsilon < 1.0))
    throw calm::Error(fmt::format("--epsilon {} must be in (0, 1) (exclusive)", f.epsilon));
  for (double d : f.deltas)
    if (!(d > 0.0 && d < 1.0))
      throw calm::Error(fmt::format("--deltas: {} must be in (0, 1) (exclusive)", d));
  if (!(f.calibration_share > 0.0 && f.calibration_share < 1.0))
    throw calm::Error(fmt::format("--calibration-share {} must be in (0, 1)", f.calibration_share));
  for (const std::string& m : f.measures) {
    calm::cli::PolicyFlags p = f.policy;
    p.measure = m;
    if (!p.thresholded())
      throw calm::Error("--measures: unknown or unthresholded measure '" + m + "' (use softmax, "
                        "softmax-top1, saturation, classifier; the oracle and static exits are "
                        "always evaluated)");
  }
  const std::vector<double> grid = calm::cli::parse_lambda_grid(f.grid);
  const bool wants_classifier =
      std::find(f.measures.begin(), f.measures.end(), "classifier") != f.measures.end();
  const auto classifier_file = f.policy.classifier_file(f.model);
  if (wants_classifier && !std::filesystem::exists(classifier_file))
    throw calm::Error("--measures classifier needs '" + classifier_file.string() +
                      "': train it with calm-train-classifier --model " + f.model.string() +
                      ", or leave classifier out of --measures");
  const cal::Distance distance = cal::parse_distance(f.distance);
  const cal::Consistency consistency = cal::parse_consistency(f.consistency);
  const cal::PValueMethod method = cal::parse_p_value_method(f.method);

  // The pool: the calibration file's prompts, then the test file's.
  calm::cli::PromptFile pool{f.calibration_prompts, {}};
  std::vector<std::size_t> from_file;  // prompts taken from each file
  for (const auto& path : {f.calibration_prompts, f.test_prompts}) {
    calm::cli::PromptFile file = calm::cli::read_prompt_file(path);
    if (consistency == cal::Consistency::risk) calm::cli::require_references(file);
    const std::size_t keep =
        f.max_prompts ? std::min(f.max_prompts, file.prompts.size()) : file.prompts.size();
    from_file.push_back(keep);
    // Error messages keep naming the prompt's own file and line.
    for (std::size_t i = 0; i < keep; ++i) pool.prompts.push_back(file.prompts[i]);
  }
  const std::size_t n = pool.prompts.size();
  const auto n_cal = static_cast<std::size_t>(std::llround(f.calibration_share * static_cast<double>(n)));
  if (n_cal < 1 || n_cal >= n)
    throw calm::Error(fmt::format("{} pooled prompts cannot be split {:.0f}% / {:.0f}% into two "
                                  "non-empty parts", n, 100 * f.calibration_share,
                                  100 * (1 - f.calibration_share)));

  const calm::Tokenizer tokenizer = calm::Tokenizer::load(f.model / "tokenizer.model");
  const auto model = calm::LlamaModel::load(f.model);
  const calm::SessionOptions sessions{.pool = calm::cli::make_pool(f.threads)};
  if (wants_classifier) f.policy.load_classifier(f.model, model->hidden_size());  // once, not per decoder
  const std::size_t L = model->num_layers();
  const calm::cli::EncodedPrompts encoded =
      calm::cli::encode_prompts(pool, tokenizer, f.max_new_tokens, model->max_context());
  const int eos = tokenizer.eos_id();

  // Configurations: 0 = full model, then each measure x grid, the oracle, static 1..L.
  std::vector<Config> configs{{"full", 1.0, 0}};
  for (const std::string& m : f.measures)
    for (double lambda : grid) configs.push_back({m, lambda, 0});
  const std::size_t oracle_config = configs.size();
  configs.push_back({"oracle", 1.0, 0});
  const std::size_t static_config = configs.size();
  for (std::size_t k = 1; k <= L; ++k) configs.push_back({"static", 1.0, k});
  const auto measure_config = [&](std::size_t m, std::size_t j) { return 1 + m * grid.size() + j; };

  // Decode. Prompts outside, configurations inside: a slow spell of a shared machine then slows
  // the full model and the early exits alike, and the wall-clock ratios stay fair. The order of
  // the configurations is shuffled per prompt: whichever decode came first after a new prompt was
  // measured up to 20% slower (static exit at layer L against the identical full model).
  std::vector<std::vector<Outcome>> outcomes(configs.size(), std::vector<Outcome>(n));  // [c][i]
  std::vector<std::vector<int>> full_tokens(n);
  const auto decode = [&](const Config& c, const std::vector<int>& prompt) {
    calm::cli::PolicyFlags p = f.policy;
    p.measure = c.measure;
    p.static_layer = std::max<std::size_t>(c.static_layer, 1);
    return calm::cli::with_decoder(model, sessions, f.model, p, static_cast<float>(c.lambda),
                                   [&](auto&& decoder) {
      return calm::cli::greedy_decode(decoder, prompt, f.max_new_tokens, eos);
    });
  };
  decode(configs[0], encoded.prompts[0]);  // warm-up: caches and page faults, not timed
  {
    calm::cli::Progress progress(fmt::format("decoding {} prompts x {} configurations", n,
                                             configs.size()), n * configs.size());
    std::mt19937_64 order_rng(f.seed + 1);
    std::vector<std::size_t> config_order(configs.size());
    std::iota(config_order.begin(), config_order.end(), std::size_t{0});
    for (std::size_t i = 0; i < n; ++i) {
      std::vector<std::vector<int>> tokens(configs.size());
      std::shuffle(config_order.begin(), config_order.end(), order_rng);
      for (std::size_t c : config_order) {
        calm::GenerationResult r = decode(configs[c], encoded.prompts[i]);
        Outcome& o = outcomes[c][i];
        o.tokens = r.report.tokens.size();
        o.layer_sum = r.report.average_layers() * static_cast<double>(o.tokens);
        o.seconds = r.report.generation_seconds;
        tokens[c] = std::move(r.tokens);
        progress.tick();
      }
      for (std::size_t c = 0; c < configs.size(); ++c)
        outcomes[c][i].loss =
            consistency == cal::Consistency::textual
                ? cal::textual_consistency_loss(distance, tokens[c], tokens[0])
                : cal::risk_consistency_loss(distance, tokens[c], tokens[0], encoded.references[i]);
    }
    progress.finish();
  }

  // Aggregates of configuration c over a set of prompts.
  struct Totals {
    double loss = 0.0, layers = 0.0, tokens = 0.0, seconds = 0.0;
  };
  const auto totals = [&](std::size_t c, std::span<const std::size_t> prompts) {
    Totals t;
    for (std::size_t i : prompts) {
      const Outcome& o = outcomes[c][i];
      t.loss += o.loss;
      t.layers += o.layer_sum;
      t.tokens += static_cast<double>(o.tokens);
      t.seconds += o.seconds;
    }
    return t;
  };

  // Random splits, seeded: shuffle the pool, the first n_cal prompts calibrate, the rest test.
  struct PerSplit {
    std::vector<double> lambda_star, test_loss, average_layers, layer_speedup, wall_speedup;
    std::size_t violations = 0, certified = 0;
  };
  std::vector<std::vector<PerSplit>> stats(f.measures.size(), std::vector<PerSplit>(f.deltas.size()));
  std::mt19937_64 rng(f.seed);
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  for (std::size_t s = 0; s < f.splits; ++s) {
    std::shuffle(order.begin(), order.end(), rng);
    const std::span<const std::size_t> cal_part(order.data(), n_cal);
    const std::span<const std::size_t> test_part(order.data() + n_cal, n - n_cal);
    const Totals full_test = totals(0, test_part);
    for (std::size_t m = 0; m < f.measures.size(); ++m) {
      std::vector<std::vector<double>> table(grid.size());  // [j][calibration prompt]
      for (std::size_t j = 0; j < grid.size(); ++j)
        for (std::size_t i : cal_part) table[j].push_back(outcomes[measure_config(m, j)][i].loss);
      for (std::size_t d = 0; d < f.deltas.size(); ++d) {
        const cal::CalibrationResult result = cal::learn_then_test(
            table, {.delta = f.deltas[d], .epsilon = f.epsilon, .method = method, .grid = grid});
        // No certified threshold: the full model runs (loss 0, no speedup).
        std::size_t c = 0;
        if (result.lambda_star) {
          const auto j = static_cast<std::size_t>(
              std::find(grid.begin(), grid.end(), *result.lambda_star) - grid.begin());
          c = measure_config(m, j);
        }
        const Totals t = totals(c, test_part);
        const double test_loss = t.loss / static_cast<double>(test_part.size());
        const double avg = t.layers / std::max(t.tokens, 1.0);
        PerSplit& ps = stats[m][d];
        ps.violations += test_loss > f.deltas[d];
        ps.certified += result.certified();
        if (result.lambda_star) ps.lambda_star.push_back(*result.lambda_star);
        ps.test_loss.push_back(test_loss);
        ps.average_layers.push_back(avg);
        ps.layer_speedup.push_back(static_cast<double>(L) / avg);
        ps.wall_speedup.push_back(full_test.seconds / std::max(t.seconds, 1e-12));
      }
    }
  }

  std::vector<Row> rows;
  for (std::size_t m = 0; m < f.measures.size(); ++m)
    for (std::size_t d = 0; d < f.deltas.size(); ++d) {
      const PerSplit& ps = stats[m][d];
      Row r{.kind = "calibrated", .measure = f.measures[m], .delta = f.deltas[d], .splits = f.splits};
      r.certified_share = static_cast<double>(ps.certified) / static_cast<double>(f.splits);
      r.lambda_star_median = median(ps.lambda_star);
      r.test_loss = mean(ps.test_loss);
      r.violation_share = static_cast<double>(ps.violations) / static_cast<double>(f.splits);
      std::tie(r.ci_low, r.ci_high) = clopper_pearson(ps.violations, f.splits);
      r.average_layers = mean(ps.average_layers);
      r.layer_speedup = mean(ps.layer_speedup);
      r.wall_clock_speedup = mean(ps.wall_speedup);
      rows.push_back(r);
    }
  // Reference lines, over the whole pool: nothing to calibrate.
  std::vector<std::size_t> everyone(n);
  std::iota(everyone.begin(), everyone.end(), std::size_t{0});
  const Totals full_all = totals(0, everyone);
  const auto reference_row = [&](std::string kind, std::size_t c, std::size_t layer) {
    const Totals t = totals(c, everyone);
    const double avg = t.layers / std::max(t.tokens, 1.0);
    return Row{.kind = std::move(kind), .measure = configs[c].measure, .static_layer = layer,
               .test_loss = t.loss / static_cast<double>(n), .average_layers = avg,
               .layer_speedup = static_cast<double>(L) / avg,
               .wall_clock_speedup = full_all.seconds / std::max(t.seconds, 1e-12)};
  };
  rows.push_back(reference_row("full", 0, 0));
  rows.push_back(reference_row("oracle", oracle_config, 0));
  for (std::size_t k = 1; k <= L; ++k) rows.push_back(reference_row("static", static_config + k - 1, k));

  // Report.
  fmt::print("calm-eval: {} prompts ({} + {}), {} calibration / {} test per split, {} splits "
             "(seed {}), {} new tokens, {} consistency with {}, p-values {}, epsilon {}\n"
             "schedule: {}\n\n",
             n, from_file[0], from_file[1],
             n_cal, n - n_cal, f.splits, f.seed, f.max_new_tokens, cal::to_string(consistency),
             cal::to_string(distance), cal::to_string(method), f.epsilon,
             f.policy.schedule_description());
  fmt::print("validity: share of splits whose test loss exceeds delta (95% Clopper-Pearson "
             "interval); must be <= epsilon = {}\n", f.epsilon);
  fmt::print("{:<12} {:>6} {:>10} {:>9} {:>10} {:>10} {:>17}  {}\n", "measure", "delta",
             "certified", "lambda*", "test loss", "exceeding", "95% interval", "");
  for (const Row& r : rows) {
    if (r.kind != "calibrated") continue;
    fmt::print("{:<12} {:>6.2f} {:>9.0f}% {:>9} {:>10.4f} {:>9.0f}% {:>17}  {}\n", r.measure,
               r.delta, 100 * r.certified_share,
               std::isnan(r.lambda_star_median) ? "-" : fmt::format("{:.2f}", r.lambda_star_median),
               r.test_loss, 100 * r.violation_share,
               fmt::format("[{:.1f}%, {:.1f}%]", 100 * r.ci_low, 100 * r.ci_high),
               r.violation_share <= f.epsilon ? "ok" : "EXCEEDS epsilon");
  }
  fmt::print("\nefficiency at lambda* on the test parts (mean over splits; full model where "
             "nothing is certified)\n");
  fmt::print("{:<12} {:>6} {:>10} {:>10} {:>14} {:>10}\n", "measure", "delta", "avg layers",
             "layer x", "wall-clock x", "test loss");
  for (const Row& r : rows) {
    const std::string delta = r.kind == "calibrated" ? fmt::format("{:.2f}", r.delta) : "-";
    const std::string name = r.kind == "static" ? fmt::format("static {}", r.static_layer)
                             : r.kind == "calibrated" ? r.measure : r.kind;
    fmt::print("{:<12} {:>6} {:>10.2f} {:>9.2f}x {:>13.2f}x {:>10.4f}\n", name, delta,
               r.average_layers, r.layer_speedup, r.wall_clock_speedup, r.test_loss);
  }
  fmt::print("\nover all {} prompts at each threshold: mean loss / average layers / wall-clock "
             "speedup\n{:>7}", n, "lambda");
  for (const std::string& m : f.measures) fmt::print("  {:>24}", m);
  fmt::print("\n");
  for (std::size_t j = 0; j < grid.size(); ++j) {
    fmt::print("{:>7.4g}", grid[j]);
    for (std::size_t m = 0; m < f.measures.size(); ++m) {
      const Totals t = totals(measure_config(m, j), everyone);
      fmt::print("  {:>8.4f} {:>6.2f} {:>7.2f}x", t.loss / static_cast<double>(n),
                 t.layers / std::max(t.tokens, 1.0), full_all.seconds / std::max(t.seconds, 1e-12));
    }
    fmt::print("\n");
  }
  if (!f.csv.empty()) {
    write_csv(f.csv, rows, f, L);
    fmt::print("\nwrote {}\n", f.csv.string());
  }
  return 0;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"calm-eval: empirical validity of the calibration and efficiency at lambda*"};
  Flags f;
  std::string measures = "softmax,saturation,classifier";
  std::string deltas = "0.05,0.1,0.2,0.3,0.4";
  app.add_option("--model", f.model, "checkpoint directory (config.json, model.safetensors, tokenizer.model)")
      ->required()->check(CLI::ExistingDirectory);
  app.add_option("--calibration-prompts", f.calibration_prompts, "prompt file (*.jsonl or one "
                 "prompt per line); pooled with --test-prompts")->required();
  app.add_option("--test-prompts", f.test_prompts, "prompt file (*.jsonl or one prompt per line)")
      ->required();
  app.add_option("--splits", f.splits, "random calibration/test splits of the pooled prompts")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--measures", measures, "comma-separated: softmax, softmax-top1, saturation, classifier");
  app.add_option("--deltas", deltas, "comma-separated tolerances, each in (0, 1)");
  app.add_option("--epsilon", f.epsilon, "risk level, in (0, 1)");
  app.add_option("--calibration-share", f.calibration_share, "share of the pool that calibrates in "
                 "each split");
  app.add_option("--grid", f.grid, "thresholds: HIGH,LOW,STEP, descending (saturation needs a "
                 "fine grid near 1, e.g. 1,0.9,0.005)");
  app.add_option("--max-new-tokens", f.max_new_tokens, "tokens generated per prompt")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-prompts", f.max_prompts, "use at most this many prompts of each file (0 = all)");
  app.add_option("--distance", f.distance, "token-mismatch | rouge-l | token-f1")
      ->check(CLI::IsMember({"token-mismatch", "rouge-l", "token-f1"}));
  app.add_option("--consistency", f.consistency, "textual | risk (needs references)")
      ->check(CLI::IsMember({"textual", "risk"}));
  app.add_option("--method", f.method, "p-values: hoeffding-bentkus | hoeffding | bentkus")
      ->check(CLI::IsMember({"hoeffding-bentkus", "hoeffding", "bentkus"}));
  app.add_option("--csv", f.csv, "write every row of the tables as CSV (tools/plot_efficiency.py)");
  app.add_option("--threads", f.threads, "threads for the matrix products")->check(CLI::Range(1, 256));
  app.add_option("--seed", f.seed, "seed of the random splits");
  calm::cli::add_policy_flags(app, f.policy);
  // Measures come from --measures; thresholds are calibrated; static exits are all evaluated.
  app.remove_option(app.get_option("--measure"));
  app.remove_option(app.get_option("--threshold"));
  app.remove_option(app.get_option("--static-layer"));
  CLI11_PARSE(app, argc, argv);
  try {
    f.measures = split_list(measures);
    if (f.measures.empty()) throw calm::Error("--measures is empty");
    f.deltas.clear();
    for (const std::string& d : split_list(deltas)) {
      std::size_t used = 0;
      double value = std::numeric_limits<double>::quiet_NaN();
      try {
        value = std::stod(d, &used);
      } catch (const std::exception&) {
      }
      if (used != d.size() || std::isnan(value))
        throw calm::Error("--deltas: '" + d + "' is not a number");
      f.deltas.push_back(value);
    }
    if (f.deltas.empty()) throw calm::Error("--deltas is empty");
    return run(f);
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-eval: error: {}\n", e.what());
    return 1;
  }
}
