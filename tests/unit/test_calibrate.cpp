// Calibration math (docs/design.md §6): distances, p-values, fixed-sequence Learn-then-Test.
// Expected values are computed by hand (written out below) or by exact big-integer arithmetic in
// Python (a one-off script, not kept; its method is described where its values are used), never
// by the code under test.
#include "test_support.hpp"
#include <doctest/doctest.h>

#include <calm/calibrate/distances.hpp>
#include <calm/calibrate/learn_then_test.hpp>
#include <calm/calibrate/pvalues.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace cc = calm::calibrate;
using Tokens = std::vector<std::int32_t>;

namespace {

using calm::test::error_of;
using calm::test::contains;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Distances

TEST_CASE("token mismatch counts differing positions up to the longer length") {
  // a = 1 2 3 . .
  // b = 1 5 3 4 4   -> positions 1, 3, 4 differ: 3/5
  CHECK(cc::token_mismatch_distance(Tokens{1, 2, 3}, Tokens{1, 5, 3, 4, 4}) ==
        doctest::Approx(0.6));
  CHECK(cc::token_mismatch_distance(Tokens{}, Tokens{}) == 0.0);
  CHECK(cc::token_mismatch_distance(Tokens{}, Tokens{4}) == 1.0);
  CHECK(cc::token_mismatch_distance(Tokens{1, 2}, Tokens{1, 2}) == 0.0);
  // A shifted copy differs everywhere although it shares all tokens.
  CHECK(cc::token_mismatch_distance(Tokens{1, 2, 3}, Tokens{9, 1, 2, 3}) == 1.0);
}

TEST_CASE("LCS and ROUGE-L F1 on hand-checked pairs") {
  // a = 1 2 3 4 5 6, b = 1 3 2 4 6 7: LCS = 1 2 4 6 (or 1 3 4 6), length 4; F1 = 2·4/(6+6) = 2/3.
  const Tokens a{1, 2, 3, 4, 5, 6}, b{1, 3, 2, 4, 6, 7};
  CHECK(cc::longest_common_subsequence(a, b) == 4);
  CHECK(cc::longest_common_subsequence(b, a) == 4);
  CHECK(cc::rouge_l_f1(a, b) == doctest::Approx(2.0 / 3.0).epsilon(1e-15));
  // a = 7 1 7 2, b = 1 2 7: LCS = 1 2 (or 1 7), length 2; 1 2 7 is not one (no 7 after the 2).
  // F1 = 2·2/(4+3) = 4/7. P = 2/4, R = 2/3, 2PR/(P+R) = (2/3)/(7/6) = 4/7 agrees.
  CHECK(cc::longest_common_subsequence(Tokens{7, 1, 7, 2}, Tokens{1, 2, 7}) == 2);
  CHECK(cc::rouge_l_f1(Tokens{7, 1, 7, 2}, Tokens{1, 2, 7}) == doctest::Approx(4.0 / 7.0));
  // Short against long, both argument orders (the DP row runs over the shorter one):
  // a = 1, b = 5 1 5: LCS 1; F1 = 2/4.
  CHECK(cc::rouge_l_f1(Tokens{1}, Tokens{5, 1, 5}) == doctest::Approx(0.5));
  CHECK(cc::rouge_l_f1(Tokens{5, 1, 5}, Tokens{1}) == doctest::Approx(0.5));
  // Edge cases as defined: both empty = identical; one empty = nothing in common.
  CHECK(cc::rouge_l_f1(Tokens{}, Tokens{}) == 1.0);
  CHECK(cc::rouge_l_f1(Tokens{}, Tokens{3}) == 0.0);
  CHECK(cc::rouge_l_f1(Tokens{1, 2, 3}, Tokens{1, 2, 3}) == 1.0);
  CHECK(cc::rouge_l_f1(Tokens{1, 2}, Tokens{3, 4}) == 0.0);
  CHECK(cc::rouge_l_distance(a, b) == doctest::Approx(1.0 / 3.0));
}

TEST_CASE("LCS against a brute-force twin on small random sequences") {
  // Twin: full (|a|+1)·(|b|+1) DP table, the textbook recurrence.
  auto reference = [](const Tokens& a, const Tokens& b) {
    std::vector<std::vector<std::size_t>> table(a.size() + 1,
                                                std::vector<std::size_t>(b.size() + 1));
    for (std::size_t i = 1; i <= a.size(); ++i)
      for (std::size_t j = 1; j <= b.size(); ++j)
        table[i][j] = a[i - 1] == b[j - 1] ? table[i - 1][j - 1] + 1
                                           : std::max(table[i - 1][j], table[i][j - 1]);
    return table[a.size()][b.size()];
  };
  std::uint32_t state = 12345;
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  for (int trial = 0; trial < 300; ++trial) {
    Tokens a(next() % 12), b(next() % 12);
    for (auto& t : a) t = static_cast<std::int32_t>((next() >> 16) % 4);
    for (auto& t : b) t = static_cast<std::int32_t>((next() >> 16) % 4);
    REQUIRE(cc::longest_common_subsequence(a, b) == reference(a, b));
  }
}

TEST_CASE("token F1 counts overlap with multiplicity (SQuAD)") {
  // a = {1,1,2,3}, b = {1,2,2,4,1}: overlap 1×2 + 2×1 = 3 tokens; P = 3/4, R = 3/5,
  // F1 = 2·(9/20)/(27/20) = 2/3 = 2·3/(4+5).
  CHECK(cc::token_f1(Tokens{1, 1, 2, 3}, Tokens{1, 2, 2, 4, 1}) == doctest::Approx(2.0 / 3.0));
  CHECK(cc::token_f1(Tokens{3, 2, 1}, Tokens{1, 2, 3}) == 1.0);  // order does not matter
  CHECK(cc::token_f1(Tokens{}, Tokens{}) == 1.0);
  CHECK(cc::token_f1(Tokens{1}, Tokens{}) == 0.0);
  CHECK(cc::token_f1(Tokens{1, 1}, Tokens{2}) == 0.0);
  CHECK(cc::token_f1_distance(Tokens{1, 1, 2, 3}, Tokens{1, 2, 2, 4, 1}) ==
        doctest::Approx(1.0 / 3.0));
}

TEST_CASE("textual and risk consistency losses") {
  const Tokens reference{1, 2, 3, 4}, early{1, 2}, full{1, 2, 3};
  // R = 1 - ROUGE-L: R(early, Z) = 1 - 2·2/6 = 1/3, R(full, Z) = 1 - 2·3/7 = 1/7; 1/3 - 1/7 = 4/21.
  CHECK(cc::risk_consistency_loss(cc::Distance::rouge_l, early, full, reference) ==
        doctest::Approx(4.0 / 21.0));
  // Exiting early and doing better than the full model costs nothing.
  CHECK(cc::risk_consistency_loss(cc::Distance::rouge_l, full, early, reference) == 0.0);
  // Textual: D(early, full) with token mismatch = 1/3 (position 2 missing).
  CHECK(cc::textual_consistency_loss(cc::Distance::token_mismatch, early, full) ==
        doctest::Approx(1.0 / 3.0));
  CHECK(cc::textual_consistency_loss(cc::Distance::token_f1, early, full) ==
        doctest::Approx(1.0 - 4.0 / 5.0));
}

TEST_CASE("distance and method names parse, and bad names are named in the error") {
  CHECK(cc::parse_distance("token-mismatch") == cc::Distance::token_mismatch);
  CHECK(cc::parse_distance("rouge-l") == cc::Distance::rouge_l);
  CHECK(cc::parse_distance("token-f1") == cc::Distance::token_f1);
  for (auto d : {cc::Distance::token_mismatch, cc::Distance::rouge_l, cc::Distance::token_f1}) {
    CHECK(cc::parse_distance(cc::to_string(d)) == d);
  }
  const std::string message = error_of([] { cc::parse_distance("rougeL"); });
  CHECK(contains(message, "'rougeL'"));
  CHECK(contains(message, "token-mismatch, rouge-l, token-f1"));

  CHECK(cc::parse_p_value_method("hoeffding-bentkus") == cc::PValueMethod::hoeffding_bentkus);
  CHECK(cc::parse_p_value_method("bentkus") == cc::PValueMethod::bentkus);
  CHECK(cc::parse_p_value_method("hoeffding") == cc::PValueMethod::hoeffding);
  CHECK(contains(error_of([] { cc::parse_p_value_method("wsr"); }), "'wsr'"));
  CHECK(cc::parse_consistency("risk") == cc::Consistency::risk);
  CHECK(contains(error_of([] { cc::parse_consistency("global"); }), "'global'"));
}

// ---------------------------------------------------------------------------------------------
// Binomial CDF and p-values

TEST_CASE("binomial CDF, small n, summed by hand") {
  // n = 10, p = 0.1:
  //   P[X <= 0] = 0.9^10                                = 0.3486784401
  //   P[X <= 1] = 0.3486784401 + 10·0.1·0.9^9           = 0.3486784401 + 0.387420489  =
  //   0.7360989291 P[X <= 2] = 0.7360989291 + 45·0.01·0.9^8          = 0.7360989291 + 0.1937102445
  //   = 0.9298091736
  // Tolerance 1e-14 relative: a dozen roundings on terms of size ~1.
  CHECK(cc::binomial_cdf(0, 10, 0.1) == doctest::Approx(0.3486784401).epsilon(1e-14));
  CHECK(cc::binomial_cdf(1, 10, 0.1) == doctest::Approx(0.7360989291).epsilon(1e-14));
  CHECK(cc::binomial_cdf(2, 10, 0.1) == doctest::Approx(0.9298091736).epsilon(1e-14));
  // n = 4, p = 1/2: P[X <= 2] = (1 + 4 + 6)/16 = 11/16 (k above the mode: upper-tail branch).
  CHECK(cc::binomial_cdf(2, 4, 0.5) == doctest::Approx(11.0 / 16.0).epsilon(1e-15));
  CHECK(cc::binomial_cdf(3, 4, 0.5) == doctest::Approx(15.0 / 16.0).epsilon(1e-15));
  // Edges.
  CHECK(cc::binomial_cdf(-1, 10, 0.1) == 0.0);
  CHECK(cc::binomial_cdf(10, 10, 0.1) == 1.0);
  CHECK(cc::binomial_cdf(3, 10, 0.0) == 1.0);
  CHECK(cc::binomial_cdf(3, 10, 1.0) == 0.0);
  CHECK(cc::binomial_cdf(9, 10, 0.5) == doctest::Approx(1.0 - 1.0 / 1024.0).epsilon(1e-15));
  CHECK(contains(error_of([] { cc::binomial_cdf(1, 10, 1.5); }), "p = 1.5"));
}

TEST_CASE("binomial CDF, large n and far tail, against exact big-integer sums") {
  // Reference values: a Python script summed C(n,i)·a^i·(b-a)^(n-i) / b^n over
  // Python integers (p = a/b exactly) and rounded once. Relative tolerance 1e-11: the code uses
  // p = 0.1 as a double (relative error 5e-17, amplified by |k - np|/(pq) <= 4e4 in the log) and
  // its log-space mass has an absolute error ~1e-16·|ln P| (~1e-13 near 1e-300). Measured
  // worst: 5e-13 (k = 6650), 7e-15 elsewhere.
  struct Case {
    std::int64_t k, n;
    double p, expected;
  };
  const Case cases[] = {
      {10, 1000, 0.05, 2.79779856148566657e-12},
      {9000, 100000, 0.1, 5.23522353182928166e-27},
      {9900, 100000, 0.1, 1.47096792710200319e-01},
      {10000, 100000, 0.1, 5.02663272536625683e-01},  // k = mode: upper-tail branch
      {10100, 100000, 0.1, 8.55244526851239195e-01},
      {6700, 100000, 0.1, 2.09722562910600138e-296},  // far tail
      {6650, 100000, 0.1, 5.64422786535630049e-306},  // far tail, still a normal double
      {0, 100000, 0.001, 3.53852768834344216e-44},    // 0.999^100000
      {299, 1000, 0.3, 4.88072515992851563e-01},
  };
  for (const Case& c : cases) {
    CAPTURE(c.k);
    CAPTURE(c.n);
    CHECK(cc::binomial_cdf(c.k, c.n, c.p) == doctest::Approx(c.expected).epsilon(1e-11));
  }
  // Below the smallest normal double the result is subnormal (fewer significant bits), not
  // garbage: exact 1.01571420840588588e-315, checked to 1e-6 relative.
  const double subnormal = cc::binomial_cdf(6600, 100000, 0.1);
  CHECK(subnormal / 1.01571420840588588e-315 == doctest::Approx(1.0).epsilon(1e-6));
}

TEST_CASE("Hoeffding p-value closed forms") {
  // n = 100, Ê = 0.05, δ = 0.1: exp(-2·100·0.05²) = exp(-0.5).
  CHECK(cc::hoeffding_p_value(100, 0.05, 0.1) ==
        doctest::Approx(0.6065306597126334).epsilon(1e-14));
  // n = 10, Ê = 0.1, δ = 0.5: exp(-20·0.16) = exp(-3.2).
  CHECK(cc::hoeffding_p_value(10, 0.1, 0.5) == doctest::Approx(0.04076220397836621).epsilon(1e-14));
  CHECK(cc::hoeffding_p_value(100, 0.1, 0.1) == 1.0);  // Ê >= δ: no evidence at all
  CHECK(cc::hoeffding_p_value(100, 0.7, 0.1) == 1.0);
}

TEST_CASE("Bentkus and Hoeffding-Bentkus p-values") {
  constexpr double e = 2.718281828459045;
  // n = 10, δ = 0.1, Ê = 0: Bentkus = e·0.9^10 = e·0.3486784401.
  CHECK(cc::bentkus_p_value(10, 0.0, 0.1) == doctest::Approx(e * 0.3486784401).epsilon(1e-14));
  // Ê = 0.1: ⌈10·0.1⌉ = 1, e·0.7360989291 > 1 -> clamped to 1.
  CHECK(cc::bentkus_p_value(10, 0.1, 0.1) == 1.0);
  // Hoeffding-Bentkus at Ê = 0: h1(0, 0.1) = -ln 0.9, so exp(-10·h1) = 0.9^10 < e·0.9^10.
  CHECK(cc::hoeffding_bentkus_p_value(10, 0.0, 0.1) ==
        doctest::Approx(0.3486784401).epsilon(1e-14));
  // n = 1e5, δ = 0.1, Ê = 0.09: Bentkus e·P[Bin <= 9000] = e·5.23522353182928166e-27 = 1.4231e-26;
  // Hoeffding part exp(-1e5·h1(0.09, 0.1)) = 1.3154e-25 (python, 50-digit Decimal).
  // The minimum is the Bentkus term.
  CHECK(cc::bentkus_p_value(100000, 0.09, 0.1) ==
        doctest::Approx(e * 5.23522353182928166e-27).epsilon(1e-11));
  CHECK(cc::hoeffding_bentkus_p_value(100000, 0.09, 0.1) ==
        doctest::Approx(e * 5.23522353182928166e-27).epsilon(1e-11));
  // n = 1e5, Ê = 0.0999: the Hoeffding term exp(-1e5·h1(0.0999, 0.1)) = 9.94458210204951398e-01
  // (python, 50-digit Decimal) is the smaller one; Bentkus e·P[Bin <= 9990] = 1.25 clamps to 1.
  CHECK(cc::hoeffding_bentkus_p_value(100000, 0.0999, 0.1) ==
        doctest::Approx(9.94458210204951398e-01).epsilon(1e-11));
  CHECK(cc::bentkus_p_value(100000, 0.0999, 0.1) == 1.0);
  // Every p-value is in [0, 1]; far-tail values underflow to 0, not to garbage.
  CHECK(cc::hoeffding_bentkus_p_value(100000, 0.0, 0.1) == 0.0);
  CHECK(cc::bentkus_p_value(100000, 0.0, 0.1) == 0.0);
}

TEST_CASE("⌈n·Ê⌉ tolerates rounding error in n·Ê") {
  CHECK(cc::ceil_count(3.0000000004) == 3);
  CHECK(cc::ceil_count(2.9999999996) == 3);
  CHECK(cc::ceil_count(3.001) == 4);
  CHECK(cc::ceil_count(0.0) == 0);
  // 10·(0.1 + 0.2) = 3.0000000000000004 in doubles; three losses of 1 out of 10 mean k = 3.
  CHECK(cc::bentkus_p_value(10, 0.1 + 0.2, 0.5) == cc::bentkus_p_value(10, 0.3, 0.5));
  CHECK(cc::bentkus_p_value(10, 0.30000000004, 0.5) == cc::bentkus_p_value(10, 0.3, 0.5));
  CHECK(cc::bentkus_p_value(10, 0.301, 0.5) > cc::bentkus_p_value(10, 0.3, 0.5));
}

TEST_CASE("p-values never decrease as the mean loss grows") {
  for (auto method : {cc::PValueMethod::hoeffding, cc::PValueMethod::bentkus,
                      cc::PValueMethod::hoeffding_bentkus}) {
    CAPTURE(std::string(cc::to_string(method)));
    double previous = 0.0;
    for (int step = 0; step <= 1000; ++step) {
      const double p = cc::p_value(method, 200, step / 1000.0, 0.1);
      REQUIRE(p >= previous);
      REQUIRE(p <= 1.0);
      previous = p;
    }
  }
}

TEST_CASE("p-value inputs are validated and named") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(contains(error_of([] { cc::hoeffding_bentkus_p_value(0, 0.1, 0.1); }), "n = 0"));
  CHECK(contains(error_of([] { cc::hoeffding_bentkus_p_value(10, 0.1, 0.0); }), "delta = 0"));
  CHECK(contains(error_of([] { cc::bentkus_p_value(10, 0.1, 1.0); }), "delta = 1"));
  CHECK(contains(error_of([] { cc::hoeffding_p_value(10, 1.5, 0.1); }), "mean loss = 1.5"));
  CHECK(contains(error_of([&] { cc::hoeffding_p_value(10, nan, 0.1); }), "mean loss = nan"));
  CHECK(contains(error_of([] { cc::hoeffding_p_value(10, -0.1, 0.1); }), "mean loss"));
}

// ---------------------------------------------------------------------------------------------
// Learn-then-Test

TEST_CASE("default lambda grid is 1.00, 0.95, ..., 0.05 without drift") {
  const std::vector<double> grid = cc::default_lambda_grid();
  REQUIRE(grid.size() == 20);
  for (int j = 0; j < 20; ++j) {
    CAPTURE(j);
    CHECK(grid[j] == (100 - 5 * j) / 100.0);  // the double nearest to the decimal
  }
  CHECK(grid[19] == 0.05);
  CHECK(grid[1] == 0.95);
  CHECK(cc::lambda_grid(0.9, 0.3, 0.3) == std::vector<double>{0.9, 0.6, 0.3});
  CHECK(contains(error_of([] { cc::lambda_grid(1.0, 0.05, 0.07); }), "not a multiple of step"));
  CHECK(contains(error_of([] { cc::lambda_grid(1.0, 0.05, 0.0); }), "step = 0"));
  CHECK(contains(error_of([] { cc::lambda_grid(1.0, 0.05, 0.0500001); }), "multiple of 1e-6"));
}

namespace {

// Options for hand-checkable p-values: Hoeffding with n = 10, δ = 0.5: p = exp(-20·(0.5 - Ê)²);
// p <= ε = 0.1 iff 0.5 - Ê >= sqrt(ln(10)/20) = 0.3393, i.e. Ê <= 0.1607.
cc::LearnThenTestOptions hand_options() {
  cc::LearnThenTestOptions options;
  options.delta = 0.5;
  options.epsilon = 0.1;
  options.method = cc::PValueMethod::hoeffding;
  options.grid = {1.0, 0.9, 0.8, 0.7, 0.6};
  return options;
}

std::vector<double> losses_with_mean(double mean) { return std::vector<double>(10, mean); }

}  // namespace

TEST_CASE("fixed-sequence testing stops at the first failure and never evaluates later lambdas") {
  // Means by lambda: 1.0: 0 (p = e^-5), 0.9: 0.1 (p = e^-3.2), 0.8: 0.3 (p = e^-0.8, fails),
  // 0.7: 0 (would pass, but fixed-sequence testing must not look), 0.6: 0.
  std::vector<double> requested;
  auto losses_at = [&](double lambda) {
    requested.push_back(lambda);
    if (lambda == 1.0) return losses_with_mean(0.0);
    if (lambda == 0.9) return losses_with_mean(0.1);
    if (lambda == 0.8) return losses_with_mean(0.3);
    return losses_with_mean(0.0);
  };
  const cc::CalibrationResult result = cc::calibrate(losses_at, hand_options());
  CHECK(requested == std::vector<double>{1.0, 0.9, 0.8});
  REQUIRE(result.lambda_star.has_value());
  CHECK(*result.lambda_star == 0.9);
  CHECK(result.certified());
  CHECK(result.n == 10);
  REQUIRE(result.table.size() == 5);
  CHECK(*result.table[0].p_value == doctest::Approx(0.006737946999085467).epsilon(1e-14));
  CHECK(*result.table[1].p_value == doctest::Approx(0.04076220397836621).epsilon(1e-13));
  CHECK(*result.table[2].p_value == doctest::Approx(0.44932896411722156).epsilon(1e-13));
  CHECK(*result.table[1].mean_loss == doctest::Approx(0.1));
  CHECK((result.table[0].tested && result.table[0].passed));
  CHECK((result.table[2].tested && !result.table[2].passed));
  CHECK((!result.table[3].tested && !result.table[3].passed));
  CHECK(!result.table[3].mean_loss.has_value());
  CHECK(!result.table[4].p_value.has_value());
}

TEST_CASE("fixed-sequence testing: none valid, all valid, table form") {
  int calls = 0;
  auto always_bad = [&](double) {
    ++calls;
    return losses_with_mean(0.5);
  };
  const auto none = cc::calibrate(always_bad, hand_options());
  CHECK(calls == 1);
  CHECK(!none.lambda_star.has_value());
  CHECK(!none.certified());
  CHECK((none.table[0].tested && !none.table[0].passed));

  calls = 0;
  auto always_good = [&](double) {
    ++calls;
    return losses_with_mean(0.0);
  };
  const auto all = cc::calibrate(always_good, hand_options());
  CHECK(calls == 5);
  REQUIRE(all.lambda_star.has_value());
  CHECK(*all.lambda_star == 0.6);

  // Table form: a mixed row (mean 0.15 = (0.1 + 0.2)/2 per pair) passes; the row with one loss
  // of 1 among zeros (mean 0.1) passes; mean 0.2 fails.
  const xt::xtensor<double, 2> table = {
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
      {0.1, 0.2, 0.1, 0.2, 0.1, 0.2, 0.1, 0.2, 0.1, 0.2},
      {1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
      {0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
  };
  const auto from_table = cc::learn_then_test(table, hand_options());
  REQUIRE(from_table.lambda_star.has_value());
  CHECK(*from_table.lambda_star == 0.8);
  CHECK(*from_table.table[1].mean_loss == doctest::Approx(0.15));
  CHECK(*from_table.table[3].p_value == doctest::Approx(std::exp(-20 * 0.09)).epsilon(1e-13));
  CHECK(!from_table.table[4].tested);
}

TEST_CASE("learn-then-test rejects bad input with a clear message") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto options = hand_options();
  CHECK(contains(error_of([&] { cc::learn_then_test(xt::xtensor<double, 2>{}, options); }),
                 "loss table is empty"));
  CHECK(contains(error_of([&] { cc::learn_then_test(xt::xtensor<double, 2>{{0.0}}, options); }),
                 "1 rows"));

  auto bad = hand_options();
  bad.delta = 1.0;
  CHECK(contains(error_of([&] { cc::calibrate([](double) { return losses_with_mean(0); }, bad); }),
                 "delta = 1"));
  bad = hand_options();
  bad.epsilon = 0.0;
  CHECK(contains(error_of([&] { cc::calibrate([](double) { return losses_with_mean(0); }, bad); }),
                 "epsilon = 0"));
  bad = hand_options();
  bad.grid = {0.9, 0.95};
  CHECK(contains(error_of([&] { cc::calibrate([](double) { return losses_with_mean(0); }, bad); }),
                 "strictly descending"));

  const std::string nan_message = error_of([&] {
    cc::calibrate([&](double) { return std::vector<double>{0.0, nan}; }, options);
  });
  CHECK(contains(nan_message, "prompt 1"));
  CHECK(contains(nan_message, "lambda = 1"));
  CHECK(contains(nan_message, "nan"));
  CHECK(contains(
      error_of([&] { cc::calibrate([](double) { return std::vector<double>{1.5}; }, options); }),
      "1.5"));
  CHECK(contains(
      error_of([&] { cc::calibrate([](double) { return std::vector<double>{}; }, options); }),
      "no losses"));
  // Every lambda must score the same prompts.
  const std::string size_message = error_of([&] {
    cc::calibrate([](double lambda) { return std::vector<double>(lambda == 1.0 ? 20 : 19, 0.0); },
                  options);
  });
  CAPTURE(size_message);
  CHECK(contains(size_message, "19 losses at lambda = 0.9"));
}
