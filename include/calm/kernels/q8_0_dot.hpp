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
  static constexpr bool kAmxReadsStored = true;  // int8 codes, row after row: tile A reads them
  // One exact pass over n tokens in decode steps, TinyLlama shape, AMX / AVX-512 VNNI (Xeon, L3
  // 480 MB, 1 thread, paired blocks up to 8 vectors): n = 2 1.28 / 1.17, 4 1.24 / 1.65, 8 1.34 /
  // 2.40, 16 1.71 / 4.10.
  static constexpr std::size_t kAmxMinVectors = 4;
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
  // x's copy in int8_dot.hpp's interleaved order (interleaved_offset), zero-padded to `stride`.
  static void interleave_x(const std::int8_t* plain, std::int8_t* out, std::size_t cols,
                           std::size_t stride) noexcept {
    for (std::size_t c = 0; c < stride; c += 512) {
      __m512i z[8];
      for (std::size_t m = 0; m < 8; ++m) {
        const std::size_t at = c + 64 * m, have = at < cols ? cols - at : 0;
        z[m] = _mm512_maskz_loadu_epi8(detail::first_bytes(have), plain + (at < cols ? at : 0));
      }
      detail::interleave_int8_group(z);
      for (std::size_t m = 0; m < 8; ++m) _mm512_storeu_si512(out + c + 64 * m, z[m]);
    }
  }
  // A partial step of at most 8 blocks has no set B: its registers and products are skipped.
  static constexpr std::size_t registers(bool partial, std::size_t blocks) noexcept {
    return partial && blocks <= kInt8DotLanes ? 4 : 8;
  }
  // The 16 blocks' 512 quants as 8 registers (register m: blocks 2m and 2m + 1), interleaved in
  // registers as x's copy is. The sign trick: vpdpbusd multiplies u8 by s8, so |w| (<= 127) goes
  // as u8 and x * sign(w) as s8; each product is w * x, and the int32 sums are exact.
  template <bool Partial>
  [[gnu::always_inline]] static void load_step(const std::int8_t* p, std::size_t blocks,
                                               detail::Int8Step& s) noexcept {
    const std::size_t regs = registers(Partial, blocks);
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
  // Per set, vpdpbusd sums each half block in one lane; two 2-source permutes and an add give
  // the 16 block sums in block order.
  template <bool Partial>
  [[gnu::always_inline]] static __m512i step_sums(const detail::Int8Step& s, Int8Input x,
                                                  std::size_t blocks) noexcept {
    // Block b of the step (b < 8: set A, else set B) = lanes idx_lo[b] + idx_hi[b] of (A, B).
    const __m512i idx_lo = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 16, 24, 17, 25, 18, 26, 19, 27);
    const __m512i idx_hi = _mm512_setr_epi32(4, 12, 5, 13, 6, 14, 7, 15, 20, 28, 21, 29, 22, 30, 23, 31);
    const __m512i zero = _mm512_setzero_si512();
    __m512i half[2] = {zero, zero};  // sets A and B
    for (std::size_t m = 0; m < registers(Partial, blocks); ++m) {
      const __m512i xm = _mm512_loadu_si512(x.q + 64 * m);
      half[m / 4] = _mm512_dpbusd_epi32(half[m / 4], s.u[m], _mm512_mask_sub_epi8(xm, s.neg[m], zero, xm));
    }
    return _mm512_add_epi32(_mm512_permutex2var_epi32(half[0], idx_lo, half[1]),
                            _mm512_permutex2var_epi32(half[0], idx_hi, half[1]));
  }
#endif
};

}  // namespace calm::kernels
