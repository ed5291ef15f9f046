// p-values for the Learn-then-Test null hypothesis H: "E[loss] > delta" (docs/design.md §6,
// step 3), given the mean Ê of n losses in [0, 1]. Small p = strong evidence that the risk is <= delta.
//
// Numerics: the binomial CDF is summed exactly term by term, anchored on one probability mass
// computed in log space with Loader's saddle-point form (Stirling error + deviance, as R's
// dbinom does). Relative accuracy is ~1e-16·|ln P| + rounding of the ratio products: measured
// <= 7e-15 for n = 1e5 at moderate P and <= 6e-13 at P ~ 1e-300 (against exact big-integer sums);
// below the smallest normal double it degrades gracefully to subnormals and then 0, never garbage.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numbers>
#include <sstream>
#include <string>
#include <string_view>

#include "calm/core/error.hpp"

namespace calm::calibrate {

namespace detail {

// stirlerr(n) = ln(n!) - ln(sqrt(2πn)·(n/e)^n), for integer n >= 1.
inline double stirling_error(double n) {
  if (n <= 15.0) {
    // lgamma is accurate to a few ulp of ln(n!) <= 28 here: ~1e-15 absolute.
    return std::lgamma(n + 1.0) - (n + 0.5) * std::log(n) + n -
           0.5 * std::log(2.0 * std::numbers::pi);
  }
  // Asymptotic series; for n > 15 the first omitted term is < 1e-16.
  constexpr double s0 = 1.0 / 12.0, s1 = 1.0 / 360.0, s2 = 1.0 / 1260.0, s3 = 1.0 / 1680.0,
                   s4 = 1.0 / 1188.0;
  const double inv2 = 1.0 / (n * n);
  return (s0 - (s1 - (s2 - (s3 - s4 * inv2) * inv2) * inv2) * inv2) / n;
}

// Deviance term bd0(x, m) = x·ln(x/m) + m - x, without the cancellation of the direct form when
// x ≈ m (there it sums the series in v = (x-m)/(x+m)).
inline double deviance(double x, double m) {
  if (std::abs(x - m) < 0.1 * (x + m)) {
    const double v = (x - m) / (x + m);
    double sum = (x - m) * v;
    double power = 2.0 * x * v;
    for (int j = 1; j < 1000; ++j) {
      power *= v * v;
      const double next = sum + power / (2 * j + 1);
      if (next == sum) return next;
      sum = next;
    }
    return sum;
  }
  return x * std::log(x / m) + m - x;
}

// ln P[Binomial(n, p) = k] for 0 <= k <= n and 0 < p < 1.
inline double log_binomial_pmf(std::int64_t k, std::int64_t n, double p) {
  const double q = 1.0 - p;
  if (k == 0) return static_cast<double>(n) * std::log1p(-p);
  if (k == n) return static_cast<double>(n) * std::log(p);
  const double x = static_cast<double>(k), nn = static_cast<double>(n);
  const double log_core = stirling_error(nn) - stirling_error(x) - stirling_error(nn - x) -
                          deviance(x, nn * p) - deviance(nn - x, nn * q);
  const double log_scale = std::log(2.0 * std::numbers::pi) + std::log(x) + std::log1p(-x / nn);
  return log_core - 0.5 * log_scale;
}

// Σ of a run of binomial masses relative to the first one (which counts as 1), walking away from
// the mode so every ratio is <= 1; stops once a term no longer changes the sum.
template <class Ratio>
double relative_tail_sum(std::int64_t count, Ratio ratio) {
  double term = 1.0, sum = 1.0;
  for (std::int64_t step = 1; step < count; ++step) {
    term *= ratio(step);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return sum;
}

}  // namespace detail

// P[Binomial(n, p) <= k], exact up to rounding, for n >= 0 and p in [0, 1].
inline double binomial_cdf(std::int64_t k, std::int64_t n, double p) {
  if (n < 0 || !(p >= 0.0 && p <= 1.0)) {
    std::ostringstream message;
    message << "binomial_cdf: need n >= 0 and p in [0, 1], got n = " << n << ", p = " << p;
    throw Error(message.str());
  }
  if (k < 0) return 0.0;
  if (k >= n) return 1.0;
  if (p == 0.0) return 1.0;
  if (p == 1.0) return 0.0;
  const double q = 1.0 - p;
  const auto mode = static_cast<std::int64_t>(std::floor((static_cast<double>(n) + 1.0) * p));
  if (k < mode) {
    // Lower tail: masses k, k-1, ..., 0 shrink, ratio P[i-1]/P[i] = i·q / ((n-i+1)·p).
    const double sum = detail::relative_tail_sum(k + 1, [&](std::int64_t step) {
      const double i = static_cast<double>(k - step + 1);
      return i * q / ((static_cast<double>(n) - i + 1.0) * p);
    });
    return std::exp(detail::log_binomial_pmf(k, n, p) + std::log(sum));
  }
  // Upper tail from k+1 > mode: masses shrink, ratio P[i+1]/P[i] = (n-i)·p / ((i+1)·q).
  const double sum = detail::relative_tail_sum(n - k, [&](std::int64_t step) {
    const double i = static_cast<double>(k + step);
    return (static_cast<double>(n) - i) * p / ((i + 1.0) * q);
  });
  const double upper = std::exp(detail::log_binomial_pmf(k + 1, n, p)) * sum;
  return std::clamp(1.0 - upper, 0.0, 1.0);
}

// How a p-value for H: "E[loss] > delta" is computed.
enum class PValueMethod { hoeffding, bentkus, hoeffding_bentkus };

inline constexpr std::string_view kAcceptedPValueMethods = "hoeffding, bentkus, hoeffding-bentkus";

inline std::string_view to_string(PValueMethod method) noexcept {
  switch (method) {
    case PValueMethod::hoeffding:
      return "hoeffding";
    case PValueMethod::bentkus:
      return "bentkus";
    case PValueMethod::hoeffding_bentkus:
      return "hoeffding-bentkus";
  }
  return "unknown";
}

inline PValueMethod parse_p_value_method(std::string_view name) {
  if (name == "hoeffding") return PValueMethod::hoeffding;
  if (name == "bentkus") return PValueMethod::bentkus;
  if (name == "hoeffding-bentkus") return PValueMethod::hoeffding_bentkus;
  throw Error("unknown p-value method '" + std::string(name) +
              "' (accepted: " + std::string(kAcceptedPValueMethods) + ")");
}

// Absolute tolerance when rounding n·Ê up to an integer count: n·Ê = 3.0000000004 is 3 (the
// mean of losses that sum to exactly 3, after rounding), not 4. Compensated summation keeps the
// rounding error of n·Ê near 1e-15·n·Ê, far below 1e-9 for n <= 1e5; a true sum less than 1e-9
// above an integer is snapped down, which changes p by a negligible amount.
inline constexpr double kCountTolerance = 1e-9;

// ⌈x⌉ for x >= 0, treating x within kCountTolerance of an integer as that integer.
inline std::int64_t ceil_count(double x) {
  const double nearest = std::round(x);
  if (std::abs(x - nearest) <= kCountTolerance) return static_cast<std::int64_t>(nearest);
  return static_cast<std::int64_t>(std::ceil(x));
}

namespace detail {

inline void check_p_value_inputs(std::string_view who, std::size_t n, double mean_loss,
                                 double delta) {
  std::ostringstream message;
  message.precision(17);
  if (n == 0) {
    message << who << ": n = 0 calibration examples (need at least one)";
  } else if (!(delta > 0.0 && delta < 1.0)) {
    message << who << ": delta = " << delta << " must be in (0, 1)";
  } else if (!(mean_loss >= 0.0 && mean_loss <= 1.0)) {
    message << who << ": mean loss = " << mean_loss << " must be in [0, 1]";
  } else {
    return;
  }
  throw Error(message.str());
}

// Binary relative entropy h1(a, b) = a·ln(a/b) + (1-a)·ln((1-a)/(1-b)), with 0·ln 0 = 0.
inline double binary_relative_entropy(double a, double b) {
  const double first = (a == 0.0) ? 0.0 : a * std::log(a / b);
  const double second = (a == 1.0) ? 0.0 : (1.0 - a) * (std::log1p(-a) - std::log1p(-b));
  return first + second;
}

}  // namespace detail

// Hoeffding: p = exp(-2n·max(0, delta - Ê)²).
inline double hoeffding_p_value(std::size_t n, double mean_loss, double delta) {
  detail::check_p_value_inputs("hoeffding p-value", n, mean_loss, delta);
  const double gap = std::max(0.0, delta - mean_loss);
  return std::clamp(std::exp(-2.0 * static_cast<double>(n) * gap * gap), 0.0, 1.0);
}

// Bentkus: p = e·P[Binomial(n, delta) <= ⌈n·Ê⌉], clamped to 1.
inline double bentkus_p_value(std::size_t n, double mean_loss, double delta) {
  detail::check_p_value_inputs("bentkus p-value", n, mean_loss, delta);
  const auto count = ceil_count(static_cast<double>(n) * mean_loss);
  const double cdf = binomial_cdf(count, static_cast<std::int64_t>(n), delta);
  return std::clamp(std::numbers::e * cdf, 0.0, 1.0);
}

// Hoeffding–Bentkus (the default): p = min(exp(-n·h1(min(Ê, delta), delta)), Bentkus p).
inline double hoeffding_bentkus_p_value(std::size_t n, double mean_loss, double delta) {
  detail::check_p_value_inputs("hoeffding-bentkus p-value", n, mean_loss, delta);
  const double entropy = detail::binary_relative_entropy(std::min(mean_loss, delta), delta);
  const double hoeffding = std::exp(-static_cast<double>(n) * entropy);
  return std::clamp(std::min(hoeffding, bentkus_p_value(n, mean_loss, delta)), 0.0, 1.0);
}

inline double p_value(PValueMethod method, std::size_t n, double mean_loss, double delta) {
  switch (method) {
    case PValueMethod::hoeffding:
      return hoeffding_p_value(n, mean_loss, delta);
    case PValueMethod::bentkus:
      return bentkus_p_value(n, mean_loss, delta);
    case PValueMethod::hoeffding_bentkus:
      return hoeffding_bentkus_p_value(n, mean_loss, delta);
  }
  throw Error("p_value: invalid PValueMethod value " + std::to_string(static_cast<int>(method)));
}

}  // namespace calm::calibrate
