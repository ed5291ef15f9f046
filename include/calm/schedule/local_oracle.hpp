// Local oracle (docs/design.md §7): run the whole model, then report the token as exiting at the
// first exit point whose exit-head argmax equals the top layer's. Needs the full forward plus one
// vocabulary projection per exit point: an analysis tool, not a speedup. The KV cache is the
// full model's; the output logits are those of the oracle exit layer.
#pragma once

#include <cstddef>
#include <type_traits>

#include "calm/concepts.hpp"

namespace calm {

struct LocalOracle {
  static constexpr bool uses_confidence = false;
  static constexpr bool local_oracle = true;
  std::size_t fixed_exit_layer(std::size_t num_layers) const noexcept { return num_layers; }
};

static_assert(ExitSchedule<LocalOracle>);
static_assert(std::is_empty_v<LocalOracle>);

}  // namespace calm
