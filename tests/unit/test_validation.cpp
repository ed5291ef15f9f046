// calm/calibrate/validation.hpp (split validation of the Learn-then-Test guarantee) and
// calm/calibrate/parse_grid.hpp (lists and grids as text).
//
// Reference values (computed outside calm, not by the code under test):
//   Clopper-Pearson at confidence 1 - a: lower = Beta quantile a/2 of Beta(k, n - k + 1), upper =
//   Beta quantile 1 - a/2 of Beta(k + 1, n - k). Closed forms: k = 0 gives upper = 1 - (a/2)^(1/n),
//   k = n gives lower = (a/2)^(1/n), k = 1 gives lower = 1 - (1 - a/2)^(1/n). The other values
//   were found by bisection on mpmath's regularized incomplete beta at 40 digits; R's
//   binom.test(5, 10) prints the same interval, 0.1870860 0.8129140.
//   p-values of the constructed example (n = 100, Hoeffding-Bentkus, docs/design.md §6 step 3),
//   by mpmath at 30 digits: mean 0 at delta 0.05: min((0.95)^100, e * 0.95^100) = 0.00592;
//   mean 0.01 at 0.05: min(exp(-100 h1(0.01, 0.05)), e * P[Bin(100, 0.05) <= 1]) = 0.0843;
//   mean 0.005 at 0.05: 0.0316; mean 0 at delta 0.01: 0.99^100 = 0.366.
#include "test_support.hpp"

#include <calm/calibrate/parse_grid.hpp>
#include <calm/calibrate/validation.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace cc = calm::calibrate;
using calm::test::contains;
using calm::test::error_of;

namespace {

void check_interval(std::size_t k, std::size_t n, double confidence, double lower, double upper) {
  CAPTURE(k);
  CAPTURE(n);
  CAPTURE(confidence);
  const cc::BinomialInterval ci = cc::clopper_pearson(k, n, confidence);
  CHECK(std::abs(ci.lower - lower) < 1e-13);
  CHECK(std::abs(ci.upper - upper) < 1e-13);
}

}  // namespace

TEST_CASE("clopper_pearson: reference intervals") {
  check_interval(0, 10, 0.95, 0.0, 1.0 - std::pow(0.025, 0.1));  // 0.30849710781876082
  check_interval(10, 10, 0.95, std::pow(0.025, 0.1), 1.0);       // 0.69150289218123918
  check_interval(1, 10, 0.95, 1.0 - std::pow(0.975, 0.1), 0.44501611702819536);
  check_interval(5, 10, 0.95, 0.18708602844739857, 0.81291397155260143);
  check_interval(5, 10, 0.90, 0.22244110100812907, 0.77755889899187093);
  check_interval(3, 20, 0.95, 0.032070937185463717, 0.3789268265453139);
  check_interval(3, 9, 0.95, 0.074854631419691812, 0.70070494379145963);
  // 0 of 100 splits: the 3.6% upper bound docs/calibration.md reports.
  check_interval(0, 100, 0.95, 0.0, 0.036216692645176419);

  // k and n - k mirror each other: lower(k) = 1 - upper(n - k).
  for (std::size_t k = 0; k <= 7; ++k) {
    CAPTURE(k);
    CHECK(cc::clopper_pearson(k, 7).lower ==
          doctest::Approx(1.0 - cc::clopper_pearson(7 - k, 7).upper).epsilon(1e-12));
  }
  // A wider confidence gives a wider interval.
  CHECK(cc::clopper_pearson(4, 30, 0.99).lower < cc::clopper_pearson(4, 30, 0.95).lower);
  CHECK(cc::clopper_pearson(4, 30, 0.99).upper > cc::clopper_pearson(4, 30, 0.95).upper);

  CHECK(contains(error_of([] { cc::clopper_pearson(0, 0); }), "n >= 1"));
  CHECK(contains(error_of([] { cc::clopper_pearson(11, 10); }), "k = 11, n = 10"));
  CHECK(contains(error_of([] { cc::clopper_pearson(1, 10, 1.0); }), "confidence"));
}

TEST_CASE("calibration_size, total_cost and wall_clock_speedup") {
  CHECK(cc::calibration_size(16, 0.5) == 8);
  CHECK(cc::calibration_size(319, 0.5) == 160);  // 159.5 rounds up: 160 / 159
  CHECK(cc::calibration_size(10, 0.25) == 3);    // 2.5 rounds away from zero
  CHECK(error_of([] { cc::calibration_size(3, 0.1); }) ==
        "3 pooled prompts cannot be split 10% / 90% into two non-empty parts");
  CHECK(contains(error_of([] { cc::calibration_size(3, 0.9); }), "3 pooled prompts"));
  CHECK(contains(error_of([] { cc::calibration_size(10, 1.0); }), "100% / 0%"));

  const std::vector<cc::DecodeCost> costs{{.loss = 0.5, .layer_sum = 10, .tokens = 4, .seconds = 2},
                                          {.loss = 0.0, .layer_sum = 6, .tokens = 2, .seconds = 1},
                                          {.loss = 1.0, .layer_sum = 0, .tokens = 0, .seconds = 0}};
  const std::vector<std::size_t> some{2, 0};
  const cc::CostTotals t = cc::total_cost(costs, some);
  CHECK(t.prompts == 2);
  CHECK(t.mean_loss() == 0.75);
  CHECK(t.average_layers() == 2.5);  // 10 layers over 4 tokens
  CHECK(t.seconds == 2.0);
  const cc::CostTotals all = cc::total_cost(costs);
  CHECK(all.prompts == 3);
  CHECK(all.average_layers() == doctest::Approx(16.0 / 6.0));
  CHECK(cc::wall_clock_speedup(all, t) == 1.5);  // 3 s against 2 s
  // No tokens at all: average 0 rather than a division by zero.
  CHECK(cc::total_cost(costs, std::vector<std::size_t>{2}).average_layers() == 0.0);
}

TEST_CASE("RandomSplits: permutations, fixed by the seed") {
  cc::RandomSplits a(20, 7), b(20, 7), c(20, 8);
  bool differs_from_other_seed = false, differs_from_previous = false;
  std::vector<std::size_t> previous;
  for (int s = 0; s < 5; ++s) {
    const auto x = a.next();
    const std::vector<std::size_t> order(x.begin(), x.end());
    const auto y = b.next();
    CHECK(order == std::vector<std::size_t>(y.begin(), y.end()));
    const auto z = c.next();
    differs_from_other_seed |= order != std::vector<std::size_t>(z.begin(), z.end());
    std::vector<std::size_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < 20; ++i) CHECK(sorted[i] == i);
    differs_from_previous |= !previous.empty() && order != previous;
    previous = order;
  }
  CHECK(differs_from_other_seed);
  CHECK(differs_from_previous);
}

namespace {

// The constructed example. 110 prompts, 100 calibrate and 10 test; grid {1, 0.5}; epsilon 0.05.
// Measure 0: prompt 0 is "bad" at lambda 0.5 (loss 1), every other loss is 0.
//   bad prompt calibrates: the mean at 0.5 is 0.01, p = 0.0843 > epsilon, lambda* = 1, test loss 0;
//   bad prompt tests: the calibration mean at 0.5 is 0, p = 0.0059, lambda* = 0.5, and the test
//   loss is 1/10 = 0.1 > delta = 0.05: a violation.
// Measure 1: every loss 0, so lambda* = 0.5 always and nothing is violated.
// Measure 2: prompt 0 has loss 0.5 at lambda 0.5: mean 0.005 calibrates (p = 0.0316), and the
//   test loss 0.5/10 = 0.05 equals delta, which is no violation (the rule is "exceeds").
// At delta 0.01 nothing is certified (p = 0.366 at mean 0): the full model runs.
// Costs per prompt: full model 4 tokens, 32 layers (L = 8), 1 s; lambda 1: 28 layers, 0.8 s;
// lambda 0.5: 16 layers, 0.5 s.
constexpr std::size_t kPrompts = 110, kCalibration = 100, kSplits = 9;

struct Example {
  std::vector<cc::DecodeCost> full;
  std::vector<cc::CostTable> measures;
  cc::SplitValidationOptions options;
};

Example constructed_example() {
  Example e;
  e.full.assign(kPrompts, {.loss = 0.0, .layer_sum = 32, .tokens = 4, .seconds = 1.0});
  const std::vector<cc::DecodeCost> at_1(kPrompts,
                                         {.loss = 0, .layer_sum = 28, .tokens = 4, .seconds = 0.8});
  const std::vector<cc::DecodeCost> at_half(
      kPrompts, {.loss = 0, .layer_sum = 16, .tokens = 4, .seconds = 0.5});
  e.measures.assign(3, cc::CostTable{at_1, at_half});
  e.measures[0][1][0].loss = 1.0;
  e.measures[2][1][0].loss = 0.5;
  e.options = {.splits = kSplits,
               .calibration_size = kCalibration,
               .deltas = {0.05, 0.01},
               .epsilon = 0.05,
               .method = cc::PValueMethod::hoeffding_bentkus,
               .grid = {1.0, 0.5},
               .num_layers = 8};
  return e;
}

// Split s puts prompt 0 in the test part when s % 3 == 0, else in the calibration part.
struct HandSplits {
  std::size_t s = 0;
  std::vector<std::size_t> order;
  std::span<const std::size_t> operator()() {
    order.resize(kPrompts);
    std::iota(order.begin(), order.end(), std::size_t{0});
    if (s++ % 3 == 0)
      std::rotate(order.begin(), order.begin() + 1, order.begin() + kCalibration + 1);
    return order;
  }
};

}  // namespace

TEST_CASE("validate_splits: the guarantee check counts violations on a constructed example") {
  // The premises of the construction, from the p-values computed by hand above.
  CHECK(cc::hoeffding_bentkus_p_value(100, 0.0, 0.05) ==
        doctest::Approx(0.00592052922).epsilon(1e-8));
  CHECK(cc::hoeffding_bentkus_p_value(100, 0.01, 0.05) ==
        doctest::Approx(0.08427963824).epsilon(1e-8));
  CHECK(cc::hoeffding_bentkus_p_value(100, 0.005, 0.05) ==
        doctest::Approx(0.0316302185).epsilon(1e-8));
  CHECK(cc::hoeffding_bentkus_p_value(100, 0.0, 0.01) ==
        doctest::Approx(0.3660323413).epsilon(1e-8));

  const Example e = constructed_example();
  const auto v = cc::validate_splits(e.full, e.measures, e.options, HandSplits{});
  REQUIRE(v.size() == 3);
  for (const auto& per_measure : v) REQUIRE(per_measure.size() == 2);

  const cc::ValidationSummary& bad = v[0][0];
  CHECK(bad.delta == 0.05);
  REQUIRE(bad.per_split.size() == kSplits);
  for (std::size_t s = 0; s < kSplits; ++s) {
    CAPTURE(s);
    const cc::SplitOutcome& o = bad.per_split[s];
    const bool bad_prompt_tests = s % 3 == 0;
    REQUIRE(o.lambda_star.has_value());
    CHECK(*o.lambda_star == (bad_prompt_tests ? 0.5 : 1.0));
    CHECK(o.test_loss == (bad_prompt_tests ? 0.1 : 0.0));
    CHECK(o.violated == bad_prompt_tests);
    CHECK(o.average_layers == (bad_prompt_tests ? 4.0 : 7.0));
    CHECK(o.layer_speedup == doctest::Approx(bad_prompt_tests ? 2.0 : 8.0 / 7.0));
    CHECK(o.wall_clock_speedup == doctest::Approx(bad_prompt_tests ? 2.0 : 1.25));
  }
  CHECK(bad.certified == 9);
  CHECK(bad.violations == 3);
  CHECK(bad.certified_share == 1.0);
  CHECK(bad.violation_share == doctest::Approx(1.0 / 3.0));
  CHECK(bad.violation_interval.lower == doctest::Approx(0.074854631419691812).epsilon(1e-12));
  CHECK(bad.violation_interval.upper == doctest::Approx(0.70070494379145963).epsilon(1e-12));
  CHECK(bad.lambda_star_median == 1.0);  // six 1.0s and three 0.5s
  CHECK(bad.test_loss == doctest::Approx(0.3 / 9));
  CHECK(bad.average_layers == doctest::Approx(6.0));        // (3·4 + 6·7) / 9
  CHECK(bad.layer_speedup == doctest::Approx(10.0 / 7.0));  // (3·2 + 6·8/7) / 9
  CHECK(bad.wall_clock_speedup == doctest::Approx(1.5));    // (3·2 + 6·1.25) / 9

  // Nothing certified: the full model's own decodes count.
  for (const auto& per_measure : v) {
    const cc::ValidationSummary& none = per_measure[1];
    CHECK(none.delta == 0.01);
    CHECK(none.certified == 0);
    CHECK(none.violations == 0);
    CHECK(std::isnan(none.lambda_star_median));
    CHECK(none.test_loss == 0.0);
    CHECK(none.average_layers == 8.0);
    CHECK(none.layer_speedup == 1.0);
    CHECK(none.wall_clock_speedup == 1.0);
    CHECK(none.violation_interval.lower == 0.0);
    CHECK(none.violation_interval.upper ==
          doctest::Approx(1.0 - std::pow(0.025, 1.0 / 9)).epsilon(1e-12));
  }

  const cc::ValidationSummary& clean = v[1][0];
  CHECK(clean.certified == 9);
  CHECK(clean.violations == 0);
  CHECK(clean.lambda_star_median == 0.5);
  CHECK(clean.average_layers == 4.0);

  // A test loss equal to delta is not a violation.
  const cc::ValidationSummary& boundary = v[2][0];
  CHECK(boundary.certified == 9);
  CHECK(boundary.lambda_star_median == 0.5);
  CHECK(boundary.per_split[0].test_loss == 0.05);
  CHECK(boundary.violations == 0);
}

TEST_CASE("validate_splits: deterministic for a seed") {
  // Losses that differ between prompts, so that different splits give different results.
  const std::size_t n = 40;
  std::vector<cc::DecodeCost> full(n, {.loss = 0, .layer_sum = 16, .tokens = 2, .seconds = 1});
  cc::CostTable table(3, full);
  for (std::size_t j = 0; j < 3; ++j)
    for (std::size_t i = 0; i < n; ++i) {
      table[j][i].loss =
          static_cast<double>((i * 7 + j * 3) % 11) / 10.0 * static_cast<double>(j) / 2;
      table[j][i].layer_sum = 16.0 - 4.0 * static_cast<double>(j);
      table[j][i].seconds = 1.0 - 0.2 * static_cast<double>(j) + 0.001 * static_cast<double>(i);
    }
  cc::SplitValidationOptions options{.splits = 25,
                                     .calibration_size = 30,
                                     .deltas = {0.2, 0.4},
                                     .epsilon = 0.2,
                                     .grid = {1.0, 0.9, 0.8},
                                     .num_layers = 8,
                                     .seed = 11};
  const auto same = [](const cc::ValidationSummary& a, const cc::ValidationSummary& b) {
    if (a.per_split.size() != b.per_split.size()) return false;
    for (std::size_t s = 0; s < a.per_split.size(); ++s) {
      const cc::SplitOutcome &x = a.per_split[s], &y = b.per_split[s];
      if (x.lambda_star != y.lambda_star || x.test_loss != y.test_loss ||
          x.average_layers != y.average_layers || x.wall_clock_speedup != y.wall_clock_speedup)
        return false;
    }
    return a.violations == b.violations && a.certified == b.certified;
  };
  const auto first = cc::validate_splits(full, {table}, options);
  const auto again = cc::validate_splits(full, {table}, options);
  cc::RandomSplits splits(n, 11);
  const auto explicit_splits =
      cc::validate_splits(full, {table}, options, [&] { return splits.next(); });
  for (std::size_t d = 0; d < 2; ++d) {
    CAPTURE(d);
    CHECK(same(first[0][d], again[0][d]));
    CHECK(same(first[0][d], explicit_splits[0][d]));
  }
  // Split 0's test loss is the mean over the last 10 prompts of RandomSplits(n, seed)'s first
  // order, at lambda* (the full model, loss 0, where nothing is certified).
  cc::RandomSplits replay(n, 11);
  const auto order = replay.next();
  const cc::SplitOutcome& o = first[0][0].per_split[0];
  double loss = 0.0;
  if (o.lambda_star) {
    const auto j = static_cast<std::size_t>(
        std::find(options.grid.begin(), options.grid.end(), *o.lambda_star) - options.grid.begin());
    for (std::size_t k = 30; k < n; ++k) loss += table[j][order[k]].loss;
  }
  CHECK(o.test_loss == doctest::Approx(loss / 10));

  // Some split differs under another seed (the losses differ between prompts).
  options.seed = 12;
  const auto other = cc::validate_splits(full, {table}, options);
  CHECK_FALSE((same(first[0][0], other[0][0]) && same(first[0][1], other[0][1])));
}

TEST_CASE("validate_splits: bad input is an error naming what is wrong") {
  Example e = constructed_example();
  const auto error_for = [&](auto&& change) {
    Example copy = e;
    change(copy);
    return error_of([&] { cc::validate_splits(copy.full, copy.measures, copy.options); });
  };
  CHECK(contains(error_for([](Example& x) { x.options.calibration_size = kPrompts; }),
                 "110 prompts cannot be split into 110 calibration prompts"));
  CHECK(contains(error_for([](Example& x) { x.options.calibration_size = 0; }), "cannot be split"));
  CHECK(contains(error_for([](Example& x) { x.options.splits = 0; }), "at least one split"));
  CHECK(contains(error_for([](Example& x) { x.options.deltas.clear(); }), "no tolerances"));
  CHECK(contains(error_for([](Example& x) { x.measures[1].pop_back(); }),
                 "measure 1 has 1 grid rows but the grid has 2 points"));
  CHECK(contains(error_for([](Example& x) { x.measures[2][1].pop_back(); }),
                 "measure 2 at lambda 0.5"));
  CHECK(contains(error_for([](Example& x) { x.measures[0][0][5].loss = 1.5; }),
                 "prompt 5: loss 1.5"));
  CHECK(contains(error_for([](Example& x) { x.full.pop_back(); }), "measure 0 at lambda 1 has 110 decodes, expected one per prompt (109)"));
  // A split that is not a permutation.
  std::vector<std::size_t> twice(kPrompts, 0);
  CHECK(contains(error_of([&] {
                   cc::validate_splits(e.full, e.measures, e.options,
                                       [&] { return std::span<const std::size_t>(twice); });
                 }),
                 "split 0 is not a permutation"));
}

TEST_CASE("decode_each_configuration: every prompt once per configuration, losses against 0") {
  struct FakeReport {
    std::vector<int> tokens;  // one entry per generated token
    double generation_seconds = 0.0;
    double average_layers() const { return 3.0; }
  };
  struct FakeResult {
    std::vector<int> tokens;
    FakeReport report;
  };
  std::vector<std::pair<std::size_t, std::size_t>> calls;
  std::size_t ticks = 0;
  const auto run = [&](std::uint64_t seed) {
    calls.clear();
    return cc::decode_each_configuration(
        2, 3, seed,
        [&](std::size_t c, std::size_t i) {
          calls.emplace_back(c, i);
          const int t = static_cast<int>(10 * i + c);
          return FakeResult{{t, t}, {{0, 0, 0}, 0.5 * static_cast<double>(c + 1)}};
        },
        [](std::size_t i, const std::vector<int>& tokens, const std::vector<int>& full) {
          // Configuration c's tokens are 10 i + c, the full model's 10 i (0.5 more if not).
          return static_cast<double>(tokens[0] - full[0]) / 10.0 +
                 (full[0] == static_cast<int>(10 * i) ? 0.0 : 0.5);
        },
        [&] { ++ticks; });
  };
  const auto costs = run(5);
  const auto first_calls = calls;
  CHECK(ticks == 6);
  REQUIRE(costs.size() == 3);
  for (std::size_t c = 0; c < 3; ++c)
    for (std::size_t i = 0; i < 2; ++i) {
      CAPTURE(c);
      CAPTURE(i);
      CHECK(costs[c][i].loss == doctest::Approx(0.1 * static_cast<double>(c)));
      CHECK(costs[c][i].tokens == 3);
      CHECK(costs[c][i].layer_sum == 9.0);
      CHECK(costs[c][i].seconds == 0.5 * static_cast<double>(c + 1));
    }
  // Prompts outside, configurations inside, each exactly once.
  REQUIRE(first_calls.size() == 6);
  for (std::size_t k = 0; k < 6; ++k) CHECK(first_calls[k].second == k / 3);
  for (std::size_t i = 0; i < 2; ++i) {
    std::vector<std::size_t> cs;
    for (std::size_t k = 0; k < 3; ++k) cs.push_back(first_calls[3 * i + k].first);
    std::sort(cs.begin(), cs.end());
    CHECK(cs == std::vector<std::size_t>{0, 1, 2});
  }
  run(5);
  CHECK(calls == first_calls);  // the same seed, the same order
}

namespace {

// Two rows of an evaluation: a calibrated softmax row and a static exit at layer 2 of 2.
std::vector<cc::EvaluationRow> two_evaluation_rows() {
  cc::ValidationSummary v;
  v.delta = 0.2;
  v.per_split.resize(20);
  v.certified_share = 0.75;
  v.lambda_star_median = 0.85;
  v.test_loss = 0.123456789;
  v.violation_share = 0.05;
  v.violation_interval = {0.00126, 0.248732};
  v.average_layers = 1.5;
  v.layer_speedup = 4.0 / 3.0;
  v.wall_clock_speedup = 1.25;
  const std::vector<cc::DecodeCost> costs(
      2, {.loss = 0.25, .layer_sum = 4, .tokens = 2, .seconds = 2});
  const cc::CostTotals full{.seconds = 8, .prompts = 2};
  return {cc::calibrated_row("softmax", v), cc::reference_row("static", "static", 2, costs, full, 2)};
}

}  // namespace

TEST_CASE("evaluation_csv: header, 6 significant digits, empty fields for what does not apply") {
  const std::vector<cc::EvaluationRow> rows = two_evaluation_rows();
  const std::string csv = cc::evaluation_csv(rows, 0.3, 2);
  CHECK(
      csv ==
      "kind,measure,delta,epsilon,static_layer,num_layers,splits,certified_share,"
      "lambda_star_median,test_loss,violation_share,violation_ci95_low,violation_ci95_high,"
      "average_layers,layer_speedup,wall_clock_speedup,oracle_saving_share\n"
      "calibrated,softmax,0.2,0.3,,2,20,0.75,0.85,0.123457,0.05,0.00126,0.248732,1.5,1.33333,1.25,\n"
      "static,static,,,2,2,0,,,0.25,,,,2,1,2,\n");
}

TEST_CASE("evaluation_tables: calm-eval's validity and efficiency tables, column by column") {
  std::vector<cc::EvaluationRow> rows = two_evaluation_rows();
  rows[0].oracle_saving_share = 0.4;
  CHECK(cc::evaluation_tables(rows, 0.1) ==
        "validity: share of splits whose test loss exceeds delta (95% Clopper-Pearson interval); "
        "must be <= epsilon = 0.1\n"
        "measure       delta  certified   lambda*  test loss  exceeding      95% interval  \n"
        "softmax        0.20        75%      0.85     0.1235         5%     [0.1%, 24.9%]  ok\n"
        "\nefficiency at lambda* on the test parts (mean over splits; full model where nothing "
        "is certified)\nof oracle: (L - avg layers) / (L - the local oracle's avg layers), the "
        "share of the oracle's layer saving\n"
        "measure       delta avg layers    layer x   wall-clock x  test loss  of oracle\n"
        "softmax        0.20       1.50      1.33x          1.25x     0.1235        40%\n"
        "static 2          -       2.00      1.00x          2.00x     0.2500          -\n");
  // Past epsilon, the row says so.
  CHECK(cc::evaluation_tables(rows, 0.01).find("EXCEEDS epsilon") != std::string::npos);
}

// By hand, L = 8: the oracle averages 2.8 layers, a saving of 8 - 2.8 = 5.2 layers. λ* at 7.35
// layers saves 0.65 of them: 0.65 / 5.2 = 0.125; 6.44 layers: 1.56 / 5.2 = 0.3; the full model
// (8 layers) 0; the oracle itself 1; a static exit at 1.5 layers 6.5 / 5.2 = 1.25 (it saves more
// than the oracle, at a loss).
TEST_CASE("oracle_saving_share: (L - layers at lambda*) / (L - oracle layers), in rows and CSV") {
  CHECK(cc::oracle_saving_share(8, 7.35, 2.8) == doctest::Approx(0.125).epsilon(1e-12));
  CHECK(cc::oracle_saving_share(8, 6.44, 2.8) == doctest::Approx(0.3).epsilon(1e-12));
  CHECK(cc::oracle_saving_share(8, 8.0, 2.8) == 0.0);
  CHECK(cc::oracle_saving_share(8, 2.8, 2.8) == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(std::isnan(cc::oracle_saving_share(8, 7.0, 8.0)));  // the oracle saves nothing

  std::vector<cc::EvaluationRow> rows(5);
  rows[0] = {.kind = "calibrated", .measure = "softmax", .delta = 0.2, .average_layers = 7.35};
  rows[1] = {.kind = "calibrated", .measure = "softmax", .delta = 0.4, .average_layers = 6.44};
  rows[2] = {.kind = "full", .measure = "full", .average_layers = 8.0};
  rows[3] = {.kind = "oracle", .measure = "oracle", .average_layers = 2.8};
  rows[4] = {.kind = "static", .measure = "static", .static_layer = 1, .average_layers = 1.5};
  std::vector<cc::EvaluationRow> no_oracle = {rows[0]};
  cc::set_oracle_saving_shares(no_oracle, 8);
  CHECK(std::isnan(no_oracle[0].oracle_saving_share));
  cc::set_oracle_saving_shares(rows, 8);
  CHECK(rows[0].oracle_saving_share == doctest::Approx(0.125).epsilon(1e-12));
  CHECK(rows[1].oracle_saving_share == doctest::Approx(0.3).epsilon(1e-12));
  CHECK(rows[2].oracle_saving_share == 0.0);
  CHECK(rows[3].oracle_saving_share == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(rows[4].oracle_saving_share == doctest::Approx(1.25).epsilon(1e-12));
  const std::string csv = cc::evaluation_csv(rows, 0.1, 8);
  std::vector<std::string> lines;
  std::stringstream in(csv);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  REQUIRE(lines.size() == 6);
  CHECK(lines[0].ends_with(",wall_clock_speedup,oracle_saving_share"));
  CHECK(lines[1].ends_with(",0.125"));
  CHECK(lines[2].ends_with(",0.3"));
  CHECK(lines[3].ends_with(",0"));
  CHECK(lines[4].ends_with(",1"));
  CHECK(lines[5].ends_with(",1.25"));
}

TEST_CASE("parse_lambda_grid, parse_number_list, split_comma_list") {
  CHECK(cc::parse_lambda_grid("1,0.9,0.05") == std::vector<double>{1.0, 0.95, 0.9});
  CHECK(cc::parse_lambda_grid("1,0.05,0.05").size() == 20);
  CHECK(error_of([] { cc::parse_lambda_grid("1,0.9", "--grid"); }) ==
        "--grid '1,0.9': expected three numbers HIGH,LOW,STEP");
  CHECK(error_of([] { cc::parse_lambda_grid("1,x,0.1", "--grid"); }) ==
        "--grid '1,x,0.1': 'x' is not a number (expected HIGH,LOW,STEP)");
  CHECK(contains(error_of([] { cc::parse_lambda_grid("1,,0.1"); }), "lambda grid '1,,0.1': ''"));
  CHECK(contains(error_of([] { cc::parse_lambda_grid("1,0.9,0.03", "--grid"); }),
                 "--grid '1,0.9,0.03': lambda grid: (highest - lowest)"));

  CHECK(cc::parse_number(" 0.5") == 0.5);
  CHECK_FALSE(cc::parse_number("0.5x").has_value());
  CHECK_FALSE(cc::parse_number("").has_value());
  CHECK_FALSE(cc::parse_number("1e999").has_value());  // out of range

  CHECK(cc::parse_number_list("0.05,,0.2,", "--deltas") == std::vector<double>{0.05, 0.2});
  CHECK(cc::parse_number_list("", "--deltas").empty());
  CHECK(error_of([] { cc::parse_number_list("0.1,x", "--deltas"); }) ==
        "--deltas: 'x' is not a number");
  CHECK(error_of([] { cc::parse_number_list("nan", "--deltas"); }) ==
        "--deltas: 'nan' is not a number");

  CHECK(cc::split_comma_list(",softmax,,saturation,") ==
        std::vector<std::string>{"softmax", "saturation"});
  CHECK(cc::split_comma_list("").empty());
}
