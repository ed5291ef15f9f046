// RMSNorm as in Hugging Face's LlamaRMSNorm: out = (x * rsqrt(mean(x^2) + eps)) * weight.
// The mean of squares is accumulated in f32 (HF upcasts to float32 too).
#pragma once

#include <cmath>
#include <cstddef>

#include <xsimd/xsimd.hpp>

#include "calm/kernels/load.hpp"

namespace calm::kernels {

namespace scalar {

// out(n) may alias x(n); weight(n).
inline void rmsnorm(float* out, const float* x, const float* weight, std::size_t n, float eps) {
  if (n == 0) return;
  float ss = 0.0f;
  for (std::size_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  for (std::size_t i = 0; i < n; ++i) out[i] = (x[i] * inv) * weight[i];
}

}  // namespace scalar

// out(n) may alias x(n); weight(n).
template <class Arch = xsimd::default_arch>
void rmsnorm(float* out, const float* x, const float* weight, std::size_t n, float eps) {
  using B = detail::fbatch<Arch>;
  if (n == 0) return;
  B acc0(0.0f), acc1(0.0f);
  std::size_t i = 0;
  for (; i + 2 * B::size <= n; i += 2 * B::size) {
    const B a = B::load_unaligned(x + i), b = B::load_unaligned(x + i + B::size);
    acc0 = xsimd::fma(a, a, acc0);
    acc1 = xsimd::fma(b, b, acc1);
  }
  if (i + B::size <= n) {
    const B a = B::load_unaligned(x + i);
    acc0 = xsimd::fma(a, a, acc0);
    i += B::size;
  }
  float ss = xsimd::hadd(acc0 + acc1);
  for (; i < n; ++i) ss = std::fma(x[i], x[i], ss);
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);

  const B vinv(inv);
  i = 0;
  for (; i + B::size <= n; i += B::size) {
    ((B::load_unaligned(x + i) * vinv) * B::load_unaligned(weight + i)).store_unaligned(out + i);
  }
  for (; i < n; ++i) out[i] = (x[i] * inv) * weight[i];
}

}  // namespace calm::kernels
