// A confidence measure defined outside the library: one minus the normalised entropy of the exit
// distribution, written as an xtensor expression. calm-custom-measure registers, calibrates and
// decodes with it; calm-bench-custom-measure benchmarks it against calm's own measures.
#pragma once

#include <calm/concepts.hpp>
#include <calm/confidence/xtensor.hpp>

#include <xtensor/xmath.hpp>
#include <xtensor/xoperation.hpp>

#include <cmath>
#include <string_view>

// The whole measure: it reads the logits, has a name, and scores. c = 1 - H(p) / ln V, with
// H = log z - sum p (l - m), p = exp(l - m) / z.
struct EntropyConfidence {
  static constexpr bool needs_logits = true;
  static constexpr float max_score = 1.0f;  // optional: lets the decoder skip hopeless checks
  static constexpr std::string_view policy_name = "entropy";  // its name in the registry

  float score(const calm::ExitSignal& s) const noexcept {
    const auto logits = xt::cast<double>(calm::as_xtensor(s.logits));  // (vocab)
    const double m = xt::amax(logits)();
    const auto e = xt::exp(logits - m);
    const double z = xt::sum(e)();
    const double entropy = std::log(z) - xt::sum(e * (logits - m))() / z;
    return static_cast<float>(1.0 - entropy / std::log(double(s.logits.size())));
  }
};
static_assert(calm::ConfidenceMeasure<EntropyConfidence>);
