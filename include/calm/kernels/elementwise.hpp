// Elementwise kernels and reductions on f32 vectors: widen, add, axpy, scale, dot, swiglu,
// first_non_finite.
// Each SIMD kernel runs whole batches, then a scalar tail; each has a scalar twin in
// calm::kernels::scalar with the same signature (the reference the tests compare against).
#pragma once

#include <cmath>
#include <cstddef>

#include <xsimd/xsimd.hpp>

#include "calm/core/dtype.hpp"
#include "calm/kernels/load.hpp"

namespace calm::kernels {

namespace scalar {

template <class T>
void widen(float* out, const T* in, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = to_float(in[i]);
}

inline void add(float* y, const float* x, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] += x[i];
}

inline void axpy(float* y, float a, const float* x, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] += a * x[i];
}

inline void scale(float* y, float a, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] *= a;
}

inline float dot(const float* a, const float* b, std::size_t n) {
  float s = 0.0f;
  for (std::size_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline float silu(float g) { return g / (1.0f + std::exp(-g)); }

inline void swiglu(float* gate, const float* up, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) gate[i] = silu(gate[i]) * up[i];
}

inline std::size_t first_non_finite(const float* x, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return n;
}

}  // namespace scalar

// out(n) = in(n) as f32 (exact for bf16 and f16).
template <class Arch = xsimd::default_arch, class T>
void widen(float* out, const T* in, std::size_t n) {
  using B = detail::fbatch<Arch>;
  std::size_t i = 0;
  for (; i + B::size <= n; i += B::size) detail::load_widened<Arch>(in + i).store_unaligned(out + i);
  for (; i < n; ++i) out[i] = to_float(in[i]);
}

// y(n) += x(n)
template <class Arch = xsimd::default_arch>
void add(float* y, const float* x, std::size_t n) {
  using B = detail::fbatch<Arch>;
  std::size_t i = 0;
  for (; i + B::size <= n; i += B::size) {
    (B::load_unaligned(y + i) + B::load_unaligned(x + i)).store_unaligned(y + i);
  }
  for (; i < n; ++i) y[i] += x[i];
}

// y(n) += a * x(n)   (fused multiply-add in the SIMD body)
template <class Arch = xsimd::default_arch>
void axpy(float* y, float a, const float* x, std::size_t n) {
  using B = detail::fbatch<Arch>;
  const B va(a);
  std::size_t i = 0;
  for (; i + B::size <= n; i += B::size) {
    xsimd::fma(va, B::load_unaligned(x + i), B::load_unaligned(y + i)).store_unaligned(y + i);
  }
  for (; i < n; ++i) y[i] = std::fma(a, x[i], y[i]);
}

// y(n) *= a
template <class Arch = xsimd::default_arch>
void scale(float* y, float a, std::size_t n) {
  using B = detail::fbatch<Arch>;
  const B va(a);
  std::size_t i = 0;
  for (; i + B::size <= n; i += B::size) (B::load_unaligned(y + i) * va).store_unaligned(y + i);
  for (; i < n; ++i) y[i] *= a;
}

// sum a(n) * b(n). Two batch accumulators hide the FMA latency; the summation order differs
// from the scalar twin, so results agree to rounding, not bitwise.
template <class Arch = xsimd::default_arch>
float dot(const float* a, const float* b, std::size_t n) {
  using B = detail::fbatch<Arch>;
  B acc0(0.0f), acc1(0.0f);
  std::size_t i = 0;
  for (; i + 2 * B::size <= n; i += 2 * B::size) {
    acc0 = xsimd::fma(B::load_unaligned(a + i), B::load_unaligned(b + i), acc0);
    acc1 = xsimd::fma(B::load_unaligned(a + i + B::size), B::load_unaligned(b + i + B::size), acc1);
  }
  if (i + B::size <= n) {
    acc0 = xsimd::fma(B::load_unaligned(a + i), B::load_unaligned(b + i), acc0);
    i += B::size;
  }
  float s = xsimd::hadd(acc0 + acc1);
  for (; i < n; ++i) s = std::fma(a[i], b[i], s);
  return s;
}

// gate(n) = silu(gate) * up(n), silu(g) = g / (1 + exp(-g)). xsimd's exp is accurate to a few
// ulp; exp(-g) overflows to inf for g < -88 and then silu gives -0, as the scalar twin does.
template <class Arch = xsimd::default_arch>
void swiglu(float* gate, const float* up, std::size_t n) {
  using B = detail::fbatch<Arch>;
  const B one(1.0f);
  std::size_t i = 0;
  for (; i + B::size <= n; i += B::size) {
    const B g = B::load_unaligned(gate + i);
    const B silu = g / (one + xsimd::exp(-g));
    (silu * B::load_unaligned(up + i)).store_unaligned(gate + i);
  }
  for (; i < n; ++i) gate[i] = scalar::silu(gate[i]) * up[i];
}

// Index of the first NaN or ±Inf of x(n), or n if all are finite. x - x is 0 for a finite x
// and NaN otherwise, and a sum of zeros is 0 in any order, so one branch-free pass decides;
// only a vector that holds a non-finite value is scanned again to find where.
template <class Arch = xsimd::default_arch>
std::size_t first_non_finite(const float* x, std::size_t n) {
  using B = detail::fbatch<Arch>;
  B acc(0.0f);
  std::size_t i = 0;
  for (; i + B::size <= n; i += B::size) {
    const B v = B::load_unaligned(x + i);
    acc += v - v;
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += x[i] - x[i];
  if (xsimd::hadd(acc) + tail == 0.0f) return n;
  return scalar::first_non_finite(x, n);
}

}  // namespace calm::kernels
