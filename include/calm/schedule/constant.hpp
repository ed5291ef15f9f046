// Constant threshold: exit at the first exit point where c >= lambda (docs/design.md §4 baseline).
#pragma once

#include <cstddef>

#include "calm/concepts.hpp"

namespace calm {

struct ConstantThreshold {
  static constexpr bool uses_confidence = true;
  float lambda = 0.9f;

  float threshold(std::size_t /*step*/, std::size_t /*max_steps*/) const noexcept {
    return lambda;
  }
};

static_assert(ExitSchedule<ConstantThreshold>);

}  // namespace calm
