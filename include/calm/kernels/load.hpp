// Loading one xsimd batch of f32 from weights stored as f32, bf16 or f16.
//
// Weights stay in their checkpoint dtype in memory (half the bytes for bf16/f16, and the big
// products are memory-bound) and are widened to f32 in registers, right before the FMA.
// bf16 -> f32 is exact (shift into the upper half); f16 -> f32 is exact too (F16C vcvtph2ps,
// or calm::to_float where F16C is missing).
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "calm/core/dtype.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace calm::kernels::detail {

template <class Arch>
inline constexpr bool kIsAvx512 = std::is_base_of_v<xsimd::avx512f, Arch>;
template <class Arch>
inline constexpr bool kIsAvx2 = std::is_base_of_v<xsimd::avx2, Arch>;

template <class Arch>
using fbatch = xsimd::batch<float, Arch>;

// a * b + c rounded once. xsimd 8.1 (Debian 12) has no AVX-512 fma: its generic x * y + z is
// fused only where the optimiser contracts it (-O2, not -O1), so a kernel whose numerics are
// "one fma chain" calls the instruction itself.
template <class Arch>
inline fbatch<Arch> fused_fma(const fbatch<Arch>& a, const fbatch<Arch>& b,
                              const fbatch<Arch>& c) noexcept {
#if defined(__AVX512F__)
  if constexpr (kIsAvx512<Arch>) return fbatch<Arch>(_mm512_fmadd_ps(a, b, c));
#endif
  return xsimd::fma(a, b, c);
}

// n floats from p; bf16/f16 are widened exactly.
template <class Arch, class T>
inline fbatch<Arch> load_widened(const T* p) noexcept {
  using B = fbatch<Arch>;
  if constexpr (std::is_same_v<T, float>) {
    return B::load_unaligned(p);
  } else {
#if defined(__AVX512F__)
    if constexpr (kIsAvx512<Arch>) {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      if constexpr (std::is_same_v<T, bf16>) {
        return B(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
      } else {
        return B(_mm512_cvtph_ps(h));
      }
    }
#endif
#if defined(__AVX2__)
    if constexpr (!kIsAvx512<Arch> && kIsAvx2<Arch>) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      if constexpr (std::is_same_v<T, bf16>) {
        return B(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
      }
#if defined(__F16C__)
      if constexpr (std::is_same_v<T, f16>) return B(_mm256_cvtph_ps(h));
#endif
    }
#endif
    alignas(64) float tmp[B::size];
    for (std::size_t i = 0; i < B::size; ++i) tmp[i] = to_float(p[i]);
    return B::load_aligned(tmp);
  }
}

// Largest of the lanes (xsimd 8.1 has no reduce_max).
template <class Arch>
inline float reduce_max(const fbatch<Arch>& b) noexcept {
  alignas(64) float tmp[fbatch<Arch>::size];
  b.store_aligned(tmp);
  float m = tmp[0];
  for (std::size_t i = 1; i < fbatch<Arch>::size; ++i) m = tmp[i] > m ? tmp[i] : m;
  return m;
}

// 1 / scale for a block quantizer, or 0 where that is not finite (scale 0, or below ~3e-39 so
// that the reciprocal overflows): such a block quantizes to all-zero codes, which is what it
// reads as anyway (its scale rounds to 0 in f16), and no code is cast from an infinity.
inline float reciprocal_or_zero(float scale) noexcept {
  const float inv = scale != 0.0f ? 1.0f / scale : 0.0f;
  return inv - inv == 0.0f ? inv : 0.0f;  // inv - inv is NaN for an infinity
}

// The scale a block quantizer keeps for d = (largest weight) / (the format's largest code): d
// rounded to f16's 11 significant bits, as GGUF keeps it. Where f16's exponent ends (|d| < 2^-14,
// its smallest normal) the same 11 bits are kept with f32's exponent instead: GGUF's subnormal
// f16 scale loses bits gradually and reaches 0 for blocks whose largest weight is below ~4e-6
// (q8_0), which then read as zeros -- a checkpoint equivalent in float (one matrix scaled by
// 2^-20, the next by 2^20) would decode garbage. With 11 bits d * q stays exact in f32 for any
// 8-bit code. 0 where 1/d overflows f32 (weights below ~3e-37): the block reads as zeros, as its
// codes are (reciprocal_or_zero). Infinite where d is beyond f16's range: the quantizers refuse it.
inline float block_scale(float d) noexcept {
  if (reciprocal_or_zero(d) == 0.0f) return 0.0f;
  if (std::fabs(d) >= 0x1p-14f) return to_float(to_f16(d));
  std::uint32_t u = std::bit_cast<std::uint32_t>(d);
  u = (u + 0xFFFu + ((u >> 13) & 1u)) & ~std::uint32_t{0x1FFF};  // 10 stored bits, nearest even
  return std::bit_cast<float>(u);
}

}  // namespace calm::kernels::detail
