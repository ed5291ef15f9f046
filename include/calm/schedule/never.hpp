// Never exit: the full model, through the same decoder (the baseline every speedup is against).
#pragma once

#include <cstddef>
#include <type_traits>

#include "calm/concepts.hpp"

namespace calm {

struct Never {
  static constexpr bool uses_confidence = false;
  std::size_t fixed_exit_layer(std::size_t num_layers) const noexcept { return num_layers; }
};

static_assert(ExitSchedule<Never>);
static_assert(std::is_empty_v<Never>);

}  // namespace calm
