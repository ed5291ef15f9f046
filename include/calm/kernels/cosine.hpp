// Cosine similarity (hidden-state saturation confidence, docs/design.md §3b).
#pragma once

#include <cmath>
#include <cstddef>

#include <xsimd/xsimd.hpp>

#include "calm/kernels/load.hpp"

namespace calm::kernels {

namespace scalar {

// cos(a(n), b(n)); 0 if either norm is 0.
inline float cosine(const float* a, const float* b, std::size_t n) {
  float ab = 0.0f, aa = 0.0f, bb = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  if (aa == 0.0f || bb == 0.0f) return 0.0f;
  return ab / (std::sqrt(aa) * std::sqrt(bb));
}

}  // namespace scalar

// cos(a(n), b(n)); 0 if either norm is 0. One pass, three accumulators.
template <class Arch = xsimd::default_arch>
float cosine(const float* a, const float* b, std::size_t n) {
  using B = detail::fbatch<Arch>;
  B ab(0.0f), aa(0.0f), bb(0.0f);
  std::size_t i = 0;
  for (; i + B::size <= n; i += B::size) {
    const B x = B::load_unaligned(a + i), y = B::load_unaligned(b + i);
    ab = xsimd::fma(x, y, ab);
    aa = xsimd::fma(x, x, aa);
    bb = xsimd::fma(y, y, bb);
  }
  float sab = xsimd::hadd(ab), saa = xsimd::hadd(aa), sbb = xsimd::hadd(bb);
  for (; i < n; ++i) {
    sab = std::fma(a[i], b[i], sab);
    saa = std::fma(a[i], a[i], saa);
    sbb = std::fma(b[i], b[i], sbb);
  }
  if (saa == 0.0f || sbb == 0.0f) return 0.0f;
  // Separate square roots: aa * bb could overflow f32 where each norm does not.
  return sab / (std::sqrt(saa) * std::sqrt(sbb));
}

}  // namespace calm::kernels
