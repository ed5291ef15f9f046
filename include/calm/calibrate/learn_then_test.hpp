// Learn-then-Test with fixed-sequence testing (docs/design.md §6, steps 2-4).
//
// Thresholds are tested from the most conservative (λ = 1: almost never exit) downwards; the
// first λ whose p-value exceeds ε ends the walk, so the family-wise error stays <= ε without any
// multiplicity correction. λ* is the last λ that passed: the smallest certified threshold.
//
// Two entry points:
//   calibrate(losses_at, options)       losses_at(λ) -> losses of the n prompts, called lazily
//                                       and only for the λs that are tested;
//   learn_then_test(loss_table, options) loss_table[j][i] = loss of prompt i at grid point j.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <xtensor/xtensor.hpp>

#include "calm/calibrate/pvalues.hpp"
#include "calm/core/error.hpp"

namespace calm::calibrate {

// Grid values are built from integers in units of 1e-6, so 1.00, 0.95, ..., 0.05 are the
// doubles nearest to those decimals (repeated subtraction of 0.05 drifts to 0.04999999999999993).
inline constexpr double kGridUnit = 1e-6;

// Descending grid highest, highest - step, ..., lowest. All three must be multiples of 1e-6 in
// [0, 1] and (highest - lowest) a multiple of step.
inline std::vector<double> lambda_grid(double highest, double lowest, double step) {
  auto units = [](double value) { return std::llround(value / kGridUnit); };
  std::ostringstream problem;
  if (!(step > 0.0) || !(lowest >= 0.0) || !(highest <= 1.0) || !(lowest <= highest)) {
    problem << "lambda grid: need 0 <= lowest <= highest <= 1 and step > 0, got highest = "
            << highest << ", lowest = " << lowest << ", step = " << step;
    throw Error(problem.str());
  }
  const long long high_units = units(highest), low_units = units(lowest), step_units = units(step);
  for (double value : {highest, lowest, step}) {
    if (std::abs(value - static_cast<double>(units(value)) * kGridUnit) > 1e-12) {
      problem << "lambda grid: " << value << " is not a multiple of 1e-6";
      throw Error(problem.str());
    }
  }
  if (step_units == 0 || (high_units - low_units) % step_units != 0) {
    problem << "lambda grid: (highest - lowest) = " << (highest - lowest)
            << " is not a multiple of step = " << step << " (in units of 1e-6)";
    throw Error(problem.str());
  }
  std::vector<double> grid;
  for (long long value = high_units; value >= low_units; value -= step_units) {
    grid.push_back(static_cast<double>(value) / 1e6);  // exact integer / 1e6: correctly rounded
  }
  return grid;
}

// The default grid (docs/design.md §6): 1.00, 0.95, ..., 0.05 (20 points).
inline std::vector<double> default_lambda_grid() { return lambda_grid(1.0, 0.05, 0.05); }

struct LearnThenTestOptions {
  double delta = 0.1;    // tolerance on the expected loss
  double epsilon = 0.1;  // risk level: the guarantee holds with probability >= 1 - epsilon
  PValueMethod method = PValueMethod::hoeffding_bentkus;
  std::vector<double> grid = default_lambda_grid();  // strictly descending, in [0, 1]
};

// One grid point of the outcome. Points after the first failure are not tested: their mean loss
// and p-value are empty.
struct GridRow {
  double lambda = 0.0;
  std::optional<double> mean_loss;  // Ê_j
  std::optional<double> p_value;    // p_j
  bool tested = false;
  bool passed = false;  // tested and p_j <= epsilon
};

struct CalibrationResult {
  std::vector<GridRow> table;         // one row per grid point, in grid order
  std::optional<double> lambda_star;  // empty: no threshold is certified (run the full model)
  std::size_t n = 0;                  // number of calibration prompts
  double delta = 0.0;
  double epsilon = 0.0;
  PValueMethod method = PValueMethod::hoeffding_bentkus;

  bool certified() const noexcept { return lambda_star.has_value(); }
};

// Mean of losses that must each lie in [0, 1]; compensated (Neumaier) summation keeps n·mean
// within ~1e-15 relative of the true sum, which the ⌈n·Ê⌉ of the Bentkus bound relies on.
inline double mean_loss(std::span<const double> losses, double lambda) {
  std::ostringstream problem;
  problem.precision(17);
  if (losses.empty()) {
    problem << "learn-then-test: no losses at lambda = " << lambda << " (need n >= 1 prompts)";
    throw Error(problem.str());
  }
  double sum = 0.0, compensation = 0.0;
  for (std::size_t i = 0; i < losses.size(); ++i) {
    const double loss = losses[i];
    if (!(loss >= 0.0 && loss <= 1.0)) {
      problem << "learn-then-test: loss of prompt " << i << " at lambda = " << lambda << " is "
              << loss << "; losses must be in [0, 1]";
      throw Error(problem.str());
    }
    const double next = sum + loss;
    compensation += (std::abs(sum) >= loss) ? (sum - next) + loss : (loss - next) + sum;
    sum = next;
  }
  return std::clamp((sum + compensation) / static_cast<double>(losses.size()), 0.0, 1.0);
}

namespace detail {

inline void check_options(const LearnThenTestOptions& options) {
  std::ostringstream problem;
  problem.precision(17);
  if (!(options.delta > 0.0 && options.delta < 1.0)) {
    problem << "learn-then-test: delta = " << options.delta << " must be in (0, 1)";
  } else if (!(options.epsilon > 0.0 && options.epsilon < 1.0)) {
    problem << "learn-then-test: epsilon = " << options.epsilon << " must be in (0, 1)";
  } else if (options.grid.empty()) {
    problem << "learn-then-test: the lambda grid is empty";
  } else {
    for (std::size_t j = 0; j < options.grid.size(); ++j) {
      const double lambda = options.grid[j];
      if (!(lambda >= 0.0 && lambda <= 1.0)) {
        problem << "learn-then-test: grid[" << j << "] = " << lambda << " is outside [0, 1]";
        break;
      }
      if (j > 0 && !(lambda < options.grid[j - 1])) {
        problem << "learn-then-test: grid must be strictly descending, but grid[" << j
                << "] = " << lambda << " >= grid[" << j - 1 << "] = " << options.grid[j - 1];
        break;
      }
    }
  }
  if (!problem.str().empty()) throw Error(problem.str());
}

// Fixed-sequence testing over options.grid; losses_of(j) yields the losses at grid point j.
template <class LossesOf>
CalibrationResult fixed_sequence_test(LossesOf&& losses_of, const LearnThenTestOptions& options) {
  check_options(options);
  CalibrationResult result;
  result.delta = options.delta;
  result.epsilon = options.epsilon;
  result.method = options.method;
  result.table.reserve(options.grid.size());
  for (double lambda : options.grid) {
    GridRow row;
    row.lambda = lambda;
    result.table.push_back(row);
  }

  for (std::size_t j = 0; j < options.grid.size(); ++j) {
    const double lambda = options.grid[j];
    const auto losses = losses_of(j);
    const std::span<const double> view(losses);
    if (j == 0) {
      result.n = view.size();
    } else if (view.size() != result.n) {
      std::ostringstream problem;
      problem << "learn-then-test: " << view.size() << " losses at lambda = " << lambda << " but "
              << result.n << " at lambda = " << options.grid[0]
              << " (every lambda needs one loss per calibration prompt)";
      throw Error(problem.str());
    }
    GridRow& row = result.table[j];
    row.mean_loss = mean_loss(view, lambda);
    row.p_value = p_value(options.method, result.n, *row.mean_loss, options.delta);
    row.tested = true;
    row.passed = *row.p_value <= options.epsilon;
    if (!row.passed) break;  // fixed sequence: later lambdas are never tested
    result.lambda_star = lambda;
  }
  return result;
}

}  // namespace detail

// A callable that returns the n losses (each in [0, 1]) of the calibration prompts at threshold λ:
// a std::vector<double>, std::array, or anything else a std::span<const double> views.
template <class F>
concept LossesAtLambda =
    std::invocable<F&, double> && std::constructible_from < std::span<const double>,
const std::invoke_result_t<F&, double>& > ;

// Calls losses_at(λ_j) for λ_j = grid[0], grid[1], ... and stops at the first failing λ: later
// λs are never evaluated, so a decoder-based caller never decodes them.
template <LossesAtLambda LossesAt>
CalibrationResult calibrate(LossesAt&& losses_at, const LearnThenTestOptions& options) {
  return detail::fixed_sequence_test(
      [&](std::size_t j) { return std::invoke(losses_at, options.grid[j]); }, options);
}

// Data-only form over the loss table (grid points, prompts): loss_table(j, i) is the loss of
// prompt i at options.grid[j] — what a caller that decodes every (lambda, prompt) up front builds.
inline CalibrationResult learn_then_test(const xt::xtensor<double, 2>& loss_table,
                                         const LearnThenTestOptions& options) {
  const std::size_t rows = loss_table.shape(0), prompts = loss_table.shape(1);
  if (rows == 0 || prompts == 0)
    throw Error("learn-then-test: the loss table is empty (" + std::to_string(rows) + " x " +
                std::to_string(prompts) + ")");
  if (rows != options.grid.size())
    throw Error("learn-then-test: the loss table has " + std::to_string(rows) +
                " rows but the lambda grid has " + std::to_string(options.grid.size()) +
                " points");
  return detail::fixed_sequence_test(
      [&](std::size_t j) { return std::span<const double>(loss_table.data() + j * prompts, prompts); },
      options);
}

}  // namespace calm::calibrate
