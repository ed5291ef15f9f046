// q8_0 weights on the int8 dot product (kernels/int8_dot.hpp: x quantized to int8 blocks once
// per call, exact int32 block sums, one f32 order for every batch size, thread count and host;
// docs/design.md §16): W in q8_0 blocks (kernels/q8_0.hpp: 32 int8 quants q_w and one scale d_w
// per block), s_b = sum_j q_w,j * q_x,j (|s_b| <= 32 * 127 * 127). cols must be a multiple of 32.
//
// The kernels are int8_dot.hpp's with Int8Q8Blocks (matvec_int8_dot<Int8Q8Blocks, P> and its
// batch and gather). Against q8_0 with f32 activations (blocks.hpp) this adds x's quantization
// error (<= d_x / 2 per element) and replaces 32 f32 FMAs per block and vector by integer
// multiply-adds on 32 bytes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "calm/kernels/int8_dot.hpp"
#include "calm/kernels/q8_0.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace calm::kernels {

// q8_0's blocks as the int8 dot product reads them (int8_dot.hpp): the quants themselves.
struct Int8Q8Blocks {
  using unit = std::int8_t;
  static constexpr std::size_t units = kBlockWeights;
  static constexpr int offset = 0;
  [[gnu::always_inline]] static int code(const std::int8_t* block, std::size_t j) noexcept {
    return block[j];
  }
#if defined(__AVX2__)
  // vpmaddubsw adds two u8 * s8 products into an int16 with saturation: here |w| <= 128 and
  // |x * sign(w)| <= 127, so a pair is at most 2 * 128 * 127 = 32512 < 32767 and never saturates.
  [[gnu::always_inline]] static __m256i pairs(const std::int8_t* block, __m256i x) noexcept {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block));
    return _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
  }
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  // The 16 blocks' 512 quants as 8 registers (register m: blocks 2m and 2m + 1), interleaved in
  // registers as x's copy is. The sign trick: vpdpbusd multiplies u8 by s8, so |w| (<= 127) goes
  // as u8 and x * sign(w) as s8; each product is w * x, and the int32 sums are exact.
  template <bool Partial>
  [[gnu::always_inline]] static void load_step(const std::int8_t* p, std::size_t blocks,
                                               std::size_t regs, detail::Int8Step& s) noexcept {
    __m512i z[8];
    for (std::size_t m = 0; m < 8; ++m) {
      if (m >= regs) {
        z[m] = _mm512_setzero_si512();
      } else if constexpr (Partial) {
        const std::size_t have = blocks * kBlockWeights > 64 * m ? blocks * kBlockWeights - 64 * m : 0;
        z[m] = _mm512_maskz_loadu_epi8(detail::first_bytes(have), p + 64 * m);
      } else {
        z[m] = _mm512_loadu_si512(p + 64 * m);
      }
    }
    if (regs == 8)
      detail::interleave_int8_group(z);
    else
      detail::interleave_int8_set(z);
    for (std::size_t m = 0; m < regs; ++m) {
      s.u[m] = _mm512_abs_epi8(z[m]);
      s.neg[m] = _mm512_movepi8_mask(z[m]);
    }
  }
  [[gnu::always_inline]] static __m512i signed_x(const detail::Int8Step& s, std::size_t m,
                                                 __m512i x) noexcept {
    return _mm512_mask_sub_epi8(x, s.neg[m], _mm512_setzero_si512(), x);
  }
#endif
};

}  // namespace calm::kernels
