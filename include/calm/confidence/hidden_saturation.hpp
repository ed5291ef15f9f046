// Hidden-state saturation (docs/design.md §3b): c = cos(d_t^prev, d_t^i) between the pre-norm
// residual states at consecutive exit points; 0 at the first exit point, which has no previous
// state.
// O(d) per check and no vocabulary projection (needs_logits = false).
#pragma once

#include "calm/concepts.hpp"
#include "calm/kernels/cosine.hpp"

namespace calm {

struct HiddenSaturation {
  static constexpr bool needs_logits = false;
  static constexpr bool needs_previous_state = true;
  static constexpr float max_score = 1.0f;

  float score(const ExitSignal& s) const noexcept {
    if (s.previous_state.empty() || s.previous_state.size() != s.state.size()) return 0.0f;
    const float c = kernels::cosine(s.previous_state.data(), s.state.data(), s.state.size());
    // Rounding can overshoot 1 by an ulp: keep max_score a bound. A NaN (non-finite states)
    // is no confidence at all: it never exits.
    return c < 1.0f ? c : (c >= 1.0f ? 1.0f : 0.0f);
  }
};

static_assert(ConfidenceMeasure<HiddenSaturation>);
static_assert(sizeof(HiddenSaturation) == 1 && std::is_empty_v<HiddenSaturation>);

}  // namespace calm
