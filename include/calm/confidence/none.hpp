// NoConfidence: the measure of schedules that use none (Never, StaticExit, LocalOracle). It is
// never scored by those strategies; scoring it anyway gives 0, and max_score = 0 tells a
// thresholded schedule that no positive threshold can be met, so no check would run.
#pragma once

#include "calm/concepts.hpp"

namespace calm {

struct NoConfidence {
  static constexpr bool needs_logits = false;
  static constexpr float max_score = 0.0f;
  float score(const ExitSignal&) const noexcept { return 0.0f; }
};

static_assert(ConfidenceMeasure<NoConfidence>);

}  // namespace calm
