// Static exit: every generated token leaves after layer k (1-based), no confidence checks.
// k >= L runs the whole model.
#pragma once

#include <cstddef>

#include "calm/concepts.hpp"

namespace calm {

struct StaticExit {
  static constexpr bool uses_confidence = false;
  std::size_t layer = 1;

  std::size_t fixed_exit_layer(std::size_t num_layers) const noexcept {
    return layer == 0 ? 1 : (layer < num_layers ? layer : num_layers);
  }
};

static_assert(ExitSchedule<StaticExit>);

}  // namespace calm
