// In-place softmax with the maximum subtracted first (no overflow for any finite input).
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>

#include <xsimd/xsimd.hpp>

#include "calm/kernels/load.hpp"

namespace calm::kernels {

namespace scalar {

// x(n), in place.
inline void softmax(float* x, std::size_t n) {
  if (n == 0) return;
  float m = x[0];
  for (std::size_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  float sum = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (std::size_t i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace scalar

// x(n), in place. xsimd's exp differs from std::exp by a few ulp; sums are reassociated.
template <class Arch = xsimd::default_arch>
void softmax(float* x, std::size_t n) {
  using B = detail::fbatch<Arch>;
  if (n == 0) return;
  std::size_t i = 0;
  B vmax(-std::numeric_limits<float>::infinity());
  for (; i + B::size <= n; i += B::size) vmax = xsimd::max(vmax, B::load_unaligned(x + i));
  float m = detail::reduce_max<Arch>(vmax);
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;

  const B vm(m);
  B acc(0.0f);
  i = 0;
  for (; i + B::size <= n; i += B::size) {
    const B e = xsimd::exp(B::load_unaligned(x + i) - vm);
    e.store_unaligned(x + i);
    acc += e;
  }
  float sum = xsimd::hadd(acc);
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  const B vinv(inv);
  i = 0;
  for (; i + B::size <= n; i += B::size) (B::load_unaligned(x + i) * vinv).store_unaligned(x + i);
  for (; i < n; ++i) x[i] *= inv;
}

}  // namespace calm::kernels
