// q4_0 weights: blocks of 32 weights as 4-bit integers with one scale each, the numerics of GGUF's Q4_0
// (not its file layout), quantized at load from f32/f16/bf16. For a block w[0..32), m is the
// weight of largest magnitude (its sign kept), d = m / -8, and q_j = min(15, trunc(w_j / d +
// 8.5)) in 0..15 (computed as w_j * (1/d), as GGUF does; round half up, with m itself at 0);
// the scale kept is d rounded to f16 (held as f32, as q8_0's; below f16's normal range, f16's
// precision with f32's exponent: detail::block_scale); a block of zeros has d = 0 and q = 8. A weight reads as d * (q_j - 8).
//
// Layout of a (rows, cols) matrix, cols a multiple of 32: `data` (rows, cols / 2) bytes, each
// block's 16 bytes holding q_j in the low nibble of byte j and q_{j+16} in its high nibble
// (GGUF's order: one AND and one shift give the two halves of a block); `scales` (rows,
// cols / 32) f32. 0.625 bytes per weight (q8_0: 1.125, bf16: 2).
//
// The kernels are kernels/blocks.hpp's with this codec (Q4Codec). Decode quantizes x to int8 blocks and
// takes integer dot products (the error of x's quantization is a fifteenth of the 4-bit
// weights'; docs/design.md §13); prefill keeps x in f32 and decodes micro-panels of W for
// matmul.hpp's tiles (matmul_blocks), or where the process may use AMX-BF16 dequantizes W to bf16
// for its tiles (matmul_blocks_amx: x rounded to bf16, as the bf16 prefill does).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include <xsimd/xsimd.hpp>

#include "calm/core/dtype.hpp"
#include "calm/kernels/blocks.hpp"
#include "calm/kernels/load.hpp"

namespace calm::kernels {

// The q4_0 block codec (kernels/blocks.hpp): 16 bytes of nibbles, widened to q - 8 in f32.
struct Q4Codec {
  using unit = std::uint8_t;
  static constexpr std::size_t units = kBlockWeights / 2;
  // x is quantized to int8 blocks and each block's product taken in integers (blocks.hpp): the
  // raw codes 0..15 times x, less 8 times x's block sum.
  static constexpr bool quantizes_x = true;
  static constexpr int x_offset = 8;
  [[gnu::always_inline]] static int raw(const std::uint8_t* p, std::size_t j) noexcept {
    return j < units ? (p[j] & 0x0F) : (p[j - units] >> 4);
  }
#if defined(__AVX2__)
  // The 32 raw codes as bytes, in weight order: low nibbles (weights 0..15), then high ones.
  [[gnu::always_inline]] static __m256i raw_u8(const std::uint8_t* p) noexcept {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
  }
#endif

  template <class Arch>
  [[gnu::always_inline]] static void decode(const std::uint8_t* p,
                                            detail::fbatch<Arch>* w) noexcept {
    using B = detail::fbatch<Arch>;
#if defined(__AVX2__)
    if constexpr (detail::kIsAvx2<Arch> || detail::kIsAvx512<Arch>) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      const __m128i nibble = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
      const __m128i lo = _mm_sub_epi8(_mm_and_si128(v, nibble), eight);  // weights 0..15
      const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), nibble), eight);  // 16..31
#if defined(__AVX512F__)
      if constexpr (detail::kIsAvx512<Arch>) {
        w[0] = B(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)));
        w[1] = B(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)));
        return;
      }
#endif
      if constexpr (!detail::kIsAvx512<Arch>) {
        w[0] = B(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)));
        w[1] = B(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))));
        w[2] = B(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)));
        w[3] = B(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))));
        return;
      }
    }
#endif
    alignas(64) float tmp[kBlockWeights];
    for (std::size_t j = 0; j < kBlockWeights; ++j) tmp[j] = weight(p, j);
    for (std::size_t k = 0; k < kBlockWeights / B::size; ++k) w[k] = B::load_aligned(tmp + k * B::size);
  }

  [[gnu::always_inline]] static float weight(const std::uint8_t* p, std::size_t j) noexcept {
    return static_cast<float>(raw(p, j) - x_offset);
  }

  // One row quantized (quantize_row_q4_0 below).
  template <class T>
  static bool quantize_row(std::uint8_t* q, float* d, const T* w, std::size_t cols) noexcept;
};

namespace scalar {

// Quantizes one row w(cols), cols % 32 == 0, into its nibbles q(cols / 2) and scales
// d(cols / 32). Returns false, leaving q and d unspecified, if a weight is not finite or a
// block's scale overflows f16 (|m| > 8 * 65504).
// NUMERICS: w_j * (1/d) + 8.5 is one fused multiply-add (one rounding), what GCC made of GGUF's
// expression on every FMA host; written out so that the SIMD twin below gives the same bits.
template <class T>
bool quantize_row_q4_0(std::uint8_t* q, float* d, const T* w, std::size_t cols) noexcept {
  for (std::size_t b = 0; b * kBlockWeights < cols; ++b) {
    const T* wb = w + b * kBlockWeights;
    float amax = 0.0f, m = 0.0f;
    for (std::size_t j = 0; j < kBlockWeights; ++j) {
      const float v = to_float(wb[j]);
      if (!std::isfinite(v)) return false;
      if (std::fabs(v) > amax) amax = std::fabs(v), m = v;
    }
    const float scale = m / -8.0f;
    const float inv = detail::reciprocal_or_zero(scale);
    std::uint8_t* qb = q + b * Q4Codec::units;
    for (std::size_t j = 0; j < Q4Codec::units; ++j) {
      const auto nibble = [&](std::size_t i) {
        const float t = std::fma(to_float(wb[i]), inv, 8.5f);  // in [0.5, 16.5]: trunc is floor
        const int v = static_cast<int>(t);
        return static_cast<std::uint8_t>(v < 15 ? v : 15);
      };
      qb[j] = static_cast<std::uint8_t>(nibble(j) | (nibble(j + Q4Codec::units) << 4));
    }
    d[b] = detail::block_scale(scale);
    if (!std::isfinite(d[b])) return false;
  }
  return true;
}

}  // namespace scalar

// Quantizes one row (see scalar::quantize_row_q4_0; the same bits: the largest magnitude is found
// in SIMD and its signed value read back in the scalar order -- the first of equal magnitudes --,
// the codes are the same fused multiply-add, truncation and clamp lane by lane).
template <class Arch = xsimd::default_arch, class T>
bool quantize_row_q4_0(std::uint8_t* q, float* d, const T* w, std::size_t cols) noexcept {
  using B = detail::fbatch<Arch>;
  using I = xsimd::batch<std::int32_t, Arch>;
  constexpr std::size_t N = B::size;
  static_assert(kBlockWeights % (2 * N) == 0, "a q4_0 block must be an even number of vectors");
  constexpr std::size_t K = kBlockWeights / N, H = K / 2;  // vectors per block, per half
  for (std::size_t b = 0; b * kBlockWeights < cols; ++b) {
    const T* wb = w + b * kBlockWeights;
    alignas(64) float v[kBlockWeights];
    B amax(0.0f), bad(0.0f);
    for (std::size_t k = 0; k < K; ++k) {
      const B x = detail::load_widened<Arch>(wb + k * N);
      x.store_aligned(v + k * N);
      amax = xsimd::max(amax, xsimd::abs(x));
      bad += x - x;  // 0 for a finite x, NaN for an infinity or a NaN
    }
    if (xsimd::hadd(bad) != 0.0f) return false;
    const float a = detail::reduce_max<Arch>(amax);
    float m = 0.0f;
    for (std::size_t j = 0; j < kBlockWeights; ++j)
      if (std::fabs(v[j]) == a) {
        m = v[j];
        break;
      }
    const float scale = m / -8.0f;
    const float inv = detail::reciprocal_or_zero(scale);
    // Codes of weights j and j + 16 share byte j: low nibble, high nibble.
    alignas(64) std::int32_t packed[kBlockWeights / 2];
    const I fifteen(15);
    for (std::size_t k = 0; k < H; ++k) {
      const auto code = [&](std::size_t kk) {
        const B t = detail::fused_fma<Arch>(B::load_aligned(v + kk * N), B(inv), B(8.5f));
        return xsimd::min(xsimd::batch_cast<std::int32_t>(t), fifteen);  // truncates
      };
      (code(k) | (code(k + H) << 4)).store_aligned(packed + k * N);
    }
    std::uint8_t* qb = q + b * Q4Codec::units;
    for (std::size_t j = 0; j < Q4Codec::units; ++j) qb[j] = static_cast<std::uint8_t>(packed[j]);
    d[b] = detail::block_scale(scale);
    if (!std::isfinite(d[b])) return false;
  }
  return true;
}

template <class T>
bool Q4Codec::quantize_row(std::uint8_t* q, float* d, const T* w, std::size_t cols) noexcept {
  return quantize_row_q4_0(q, d, w, cols);
}

}  // namespace calm::kernels
