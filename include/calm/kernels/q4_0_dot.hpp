// q4_0 weights on the int8 dot product (kernels/int8_dot.hpp: x quantized to int8 blocks once
// per call, exact int32 block sums, one f32 order for every batch size, thread count and host;
// docs/design.md §17): W in q4_0 blocks as stored (kernels/q4_0.hpp: 16 bytes of nibble codes
// 0..15 and one scale d_w per block, weight j = d_w * (code_j - 8)), s_b = sum_j (code_j - 8) *
// q_x,j = sum_j code_j * q_x,j - 8 * sum_j q_x,j (|s_b| <= 32 * 8 * 127). cols % 32 == 0.
//
// The codes go into vpdpbusd / vpmaddubsw as they are (unsigned, <= 15) against the signed x: no
// sign trick as q8_0_dot needs; 8 * sum(q_x) per block is computed once with x. The kernels are
// int8_dot.hpp's with Int8Q4Blocks: matvec_int8_dot<Int8Q4Blocks, P> and its batch and gather.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "calm/core/thread_pool.hpp"
#include "calm/kernels/int8_dot.hpp"
#include "calm/kernels/q4_0.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace calm::kernels {

// One matrix of a segmented q4_0 matvec: y(rows) = W(rows, cols) x; all segments of a call
// share x and cols.
using Q4Segment = BlockSegment<Q4Codec>;

// q4_0's blocks as the int8 dot product reads them (int8_dot.hpp): the raw codes 0..15, offset 8.
struct Int8Q4Blocks {
  using unit = std::uint8_t;
  static constexpr std::size_t units = Q4Codec::units;
  static constexpr int offset = Q4Codec::x_offset;
  [[gnu::always_inline]] static int code(const std::uint8_t* block, std::size_t j) noexcept {
    return Q4Codec::raw(block, j);
  }
#if defined(__AVX2__)
  // Codes <= 15 against |x| <= 127: a pair is at most 2 * 15 * 127, far from int16's limit.
  [[gnu::always_inline]] static __m256i pairs(const std::uint8_t* block, __m256i x) noexcept {
    return _mm256_maddubs_epi16(Q4Codec::raw_u8(block), x);
  }
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  // The 16 blocks' 256 bytes of nibbles straight into int8_dot.hpp's interleaved order: register
  // t of set s (blocks 8s..8s+7) holds at lane 4L + i the 4-byte group t of half L % 2 of block
  // 8s + 2i + L / 2 (interleaved_offset), and a block's 16 bytes hold group t of both halves in
  // their dword t (low nibbles: weights 4t..4t+3, high: 16+4t..16+4t+3). So per set one
  // two-source dword permute of its two 64-byte loads, a shift by 0 or 4 and a mask per
  // register: 8 permutes a step where unpacking to bytes and interleaving would take 24.
  template <bool Partial>
  [[gnu::always_inline]] static void load_step(const std::uint8_t* p, std::size_t blocks,
                                               std::size_t regs, detail::Int8Step& s) noexcept {
    const __m512i base = _mm512_setr_epi32(0, 8, 16, 24, 0, 8, 16, 24, 4, 12, 20, 28, 4, 12, 20, 28);
    const __m512i shifts = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4);
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    const std::size_t bytes = blocks * units;
    for (std::size_t set = 0; set < regs / 4; ++set) {
      __m512i n[2];
      for (std::size_t h = 0; h < 2; ++h) {
        const std::size_t at = set * 128 + h * 64;
        if constexpr (Partial)
          n[h] = _mm512_maskz_loadu_epi8(detail::first_bytes(bytes > at ? bytes - at : 0), p + at);
        else
          n[h] = _mm512_loadu_si512(p + at);
      }
      for (std::size_t t = 0; t < 4; ++t) {
        const __m512i idx = _mm512_add_epi32(base, _mm512_set1_epi32(static_cast<int>(t)));
        const __m512i g = _mm512_permutex2var_epi32(n[0], idx, n[1]);
        s.u[4 * set + t] = _mm512_and_si512(_mm512_srlv_epi32(g, shifts), nibble);
      }
    }
  }
  [[gnu::always_inline]] static __m512i signed_x(const detail::Int8Step&, std::size_t,
                                                 __m512i x) noexcept {
    return x;
  }
#endif
};

}  // namespace calm::kernels
