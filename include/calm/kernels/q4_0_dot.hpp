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
  // AMX tiles read bytes: a row group's blocks are written out as codes first (amx_codes).
  static constexpr bool kAmxReadsStored = false;
  // One exact pass over n tokens in decode steps, TinyLlama shape, AMX / AVX-512 VNNI (Xeon, L3
  // 480 MB, 1 thread): n = 4 2.29 / 1.56, 8 2.51 / 2.96, 16 2.86 / 5.56 (a step streams half
  // q8_0's bytes, so the tiles' fixed cost weighs more).
  static constexpr std::size_t kAmxMinVectors = 8;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  // `blocks` (<= 8) blocks from p as 32 code bytes each, in weight order (low nibbles, then
  // high ones): per 4 blocks one load, two masks and two 2-source permutes.
  static void amx_codes(const std::uint8_t* p, std::size_t blocks, std::int8_t* out) noexcept {
    const __m512i low = _mm512_set1_epi8(0x0F);
    const __m512i first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    const __m512i second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    for (std::size_t b = 0; b < blocks; b += 4) {
      const std::size_t have = (blocks - b) * units;  // bytes of nibbles left
      const __m512i v = _mm512_maskz_loadu_epi8(detail::first_bytes(have), p + b * units);
      const __m512i lo = _mm512_and_si512(v, low);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      _mm512_store_si512(out + b * kBlockWeights, _mm512_permutex2var_epi64(lo, first, hi));
      _mm512_store_si512(out + b * kBlockWeights + 64, _mm512_permutex2var_epi64(lo, second, hi));
    }
  }
#endif
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
  // The AVX-512 layout of a 16-block step, x's and the weights' alike: 8 registers, register g
  // holding in its 32-bit lane l the 4 elements 4g..4g+3 of block l. A block's 16 bytes of
  // nibbles hold in their dword t elements 4t..4t+3 (low nibbles) and 16+4t..16+4t+3 (high), so
  // register g is dword g % 4 of every block, shifted by 0 or 4 and masked; vpdpbusd then sums
  // block l in lane l over the 8 registers, in block order: no reduction or pairing per vector.
  static constexpr std::size_t x_place(std::size_t block, std::size_t j) noexcept {
    return (j / 4) * 64 + block * 4 + j % 4;
  }
  static void interleave_x(const std::int8_t* plain, std::int8_t* out, std::size_t cols,
                           std::size_t stride) noexcept {
    const std::size_t nb = cols / kBlockWeights;
    for (std::size_t b = 0; b < stride / kBlockWeights; ++b)
      for (std::size_t j = 0; j < kBlockWeights; ++j)
        out[b / 16 * 512 + x_place(b % 16, j)] = b < nb ? plain[b * kBlockWeights + j] : std::int8_t{0};
  }
  // Per register pair (g, g + 4): one dword permute of each two 64-byte loads, a blend, a shift
  // and two masks.
  template <bool Partial>
  [[gnu::always_inline]] static void load_step(const std::uint8_t* p, std::size_t blocks,
                                               detail::Int8Step& s) noexcept {
    const __m512i dword0 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    const std::size_t bytes = blocks * units;
    __m512i n[4];  // blocks 4k..4k+3
    for (std::size_t k = 0; k < 4; ++k) {
      if constexpr (Partial)
        n[k] = _mm512_maskz_loadu_epi8(detail::first_bytes(bytes > 64 * k ? bytes - 64 * k : 0), p + 64 * k);
      else
        n[k] = _mm512_loadu_si512(p + 64 * k);
    }
    for (std::size_t t = 0; t < 4; ++t) {
      const __m512i idx = _mm512_add_epi32(dword0, _mm512_set1_epi32(static_cast<int>(t)));
      const __m512i g = _mm512_mask_blend_epi32(0xFF00, _mm512_permutex2var_epi32(n[0], idx, n[1]),
                                                _mm512_permutex2var_epi32(n[2], idx, n[3]));
      s.u[t] = _mm512_and_si512(g, nibble);
      s.u[t + 4] = _mm512_and_si512(_mm512_srli_epi32(g, 4), nibble);
    }
  }
  // The accumulator starts at k = -8 * sum(q_x) per block (x's copy holds it, zero-padded).
  template <bool Partial>
  [[gnu::always_inline]] static __m512i step_sums(const detail::Int8Step& s, Int8Input x,
                                                  std::size_t) noexcept {
    __m512i sums = _mm512_loadu_si512(x.k);
    for (std::size_t g = 0; g < 8; ++g)
      sums = _mm512_dpbusd_epi32(sums, s.u[g], _mm512_loadu_si512(x.q + 64 * g));
    return sums;
  }
#endif
};

}  // namespace calm::kernels
