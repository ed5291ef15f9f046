// Threshold decaying over generation steps t = 1..N (docs/design.md §4): later tokens exit more
// easily.
//   paper form (default):  lambda_t = clip_[0,1](0.9 lambda + 0.1 exp(-tau t / N))
//   original-code form:    lambda_t = lambda (0.9 + 0.1 exp(-tau t / N))
#pragma once

#include <cmath>
#include <cstddef>

#include "calm/concepts.hpp"

namespace calm {

struct DecayingThreshold {
  enum class Form : unsigned char { paper, scaled };
  static constexpr bool uses_confidence = true;

  float lambda = 0.9f;
  float tau = 4.0f;  // temperature, >= 0
  Form form = Form::paper;

  // step t (1-based) out of max_steps N (> 0).
  float threshold(std::size_t step, std::size_t max_steps) const noexcept {
    const double n = max_steps > 0 ? static_cast<double>(max_steps) : 1.0;
    const double decay = std::exp(-static_cast<double>(tau) * static_cast<double>(step) / n);
    if (form == Form::scaled) return static_cast<float>(lambda * (0.9 + 0.1 * decay));
    const double v = 0.9 * lambda + 0.1 * decay;
    return static_cast<float>(v < 0.0 ? 0.0 : (v > 1.0 ? 1.0 : v));
  }
};

static_assert(ExitSchedule<DecayingThreshold>);

}  // namespace calm
