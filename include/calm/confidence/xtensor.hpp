// ExitSignal's vectors as xtensor expressions, so a confidence measure can be written as array
// math: `calm::as_xtensor(s.logits)` is a (vocab) view of the decoder's buffer (no copy, valid
// for the duration of score()). The decoder's own kernels stay on xsimd.
#pragma once

#include <array>
#include <cstddef>
#include <span>

#include <xtensor/xadapt.hpp>

namespace calm {

// A 1-d xtensor view of a span of floats (read-only).
inline auto as_xtensor(std::span<const float> v) {
  return xt::adapt(v.data(), v.size(), xt::no_ownership(), std::array<std::size_t, 1>{v.size()});
}

}  // namespace calm
