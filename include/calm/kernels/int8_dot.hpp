// Block weights on the int8 dot product, with one arithmetic for every batch size and every host:
// y = W x with W in blocks of 32 small integers w_j and one f32 scale d_w each (q8_0: w_j the
// int8 quants, kernels/q8_0.hpp; q4_0: w_j = code_j - 8, kernels/q4_0.hpp) and x quantized to
// int8 blocks once per call (docs/design.md §16, §17):
//   - x's block b: d_x = max|x_b| / 127 (f32), q_x = x / d_x rounded to nearest even, as int8
//     (|q_x| <= 127; d_x = 0 gives q_x = 0; a block holding a NaN or an infinity gets d_x = NaN
//     and q_x = 0, so the outputs of that vector are NaN, as an f32 product's would be non-finite);
//   - per row and block, s_b = sum_j w_j * q_x,j, an exact int32 (|s_b| <= 32 * 128 * 127);
//   - y = the 8 partial sums acc[b mod 8], each acc = fma(float(s_b), d_w,b * d_x,b, acc) over
//     the blocks in order, combined as ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)).
// Integer sums are exact in any order, and the float steps are f32 operations lane by lane, so
// each path -- vpdpbusd (AVX-512 VNNI), vpmaddubsw + vpmaddwd (AVX2) and scalar code -- gives the
// same bits, and row t of an n-vector call is bitwise the row alone, for any n, row grouping or
// thread count. cols must be a multiple of 32.
//
// The arithmetic and the walk are written once here; a block format brings only how its blocks
// reach the integer products (an Int8Blocks type: Int8Q8Blocks in q8_0_dot.hpp, Int8Q4Blocks in
// q4_0_dot.hpp):
//   using unit; units                 the block's payload (C::unit elements, C::units of them)
//   offset                            w_j = code_j - offset: the kernels add k = -offset * sum(q_x)
//                                     per block (computed with x) to sum(code_j * q_x,j)
//   kAmxMinVectors                    batches of kAmxMinVectors or more may run on AMX-INT8
//                                     tiles (the rows' blocks as tile A: 16 rows x 32 code
//                                     bytes): a tile product costs about the same for 1 vector
//                                     as for 16, so the smallest batches stay on AVX-512
//   kAmxReadsStored                   the units are the codes as bytes (tile A reads the rows
//                                     where they are); else amx_codes(p, blocks, out) writes
//                                     `blocks` blocks' 32 codes each as bytes, in weight order
//   code(block, j)                    code j as an int (the scalar path)
//   AVX2: pairs(block, x)             the 16 int16 sums of pairs code * q_x of one block (vpmaddubsw)
//   AVX-512, 16 blocks a step, x's copy laid out as the blocks type chooses:
//     interleave_x(plain, out, cols, stride)   x's copy (one vector) in that layout, zero-padded
//     load_step<Partial>(p, blocks, Int8Step&) a row's 16 blocks from p, as vpdpbusd operands
//     step_sums<Partial>(step, x, blocks)      the 16 blocks' exact s_b against x's step, in
//                                              block order (k included)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>

#include "calm/core/aligned.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/kernels/amx.hpp"
#include "calm/kernels/blocks.hpp"
#include "calm/kernels/load.hpp"
#include "calm/kernels/matvec.hpp"
#include "calm/kernels/row_groups.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#define CALM_KERNEL [[gnu::flatten]]

namespace calm::kernels {

// The paths of the int8 dot product; every one gives the same bits.
enum class Int8DotPath { avx512vnni, avx2, scalar };
// Whether this build compiles a path (a path asked for must be there: the AVX-512 path's x is laid
// out for it alone).
inline constexpr bool int8_dot_path_built(Int8DotPath p) noexcept {
  switch (p) {
    case Int8DotPath::avx512vnni:
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
      return true;
#else
      return false;
#endif
    case Int8DotPath::avx2:
#if defined(__AVX2__) && defined(__FMA__)
      return true;
#else
      return false;
#endif
    case Int8DotPath::scalar: return true;
  }
  return false;
}
inline constexpr Int8DotPath kHostInt8DotPath =
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    Int8DotPath::avx512vnni;
#elif defined(__AVX2__) && defined(__FMA__)
    Int8DotPath::avx2;
#else
    Int8DotPath::scalar;
#endif

// Blocks per step of the SIMD paths: one f32 accumulator lane each (acc[b mod 8]).
inline constexpr std::size_t kInt8DotLanes = 8;

// x quantized for the int8 dot product: per vector, q (cols) int8, d (cols / 32) scales and
// k (cols / 32) int32, -offset * the block's sum of q (set for weight blocks with an offset).
// `x + elements` moves all three to that element (a whole number of blocks).
struct Int8Input {
  const std::int8_t* q;
  const float* d;
  const std::int32_t* k;
  Int8Input operator+(std::size_t elements) const noexcept {
    return {q + elements, d + elements / kBlockWeights, k + elements / kBlockWeights};
  }
};

namespace scalar {

// Quantizes x(n * cols) (n vectors, cols % 32 == 0) into q and d: the definition (see the top of
// this file), one element at a time.
inline void quantize_int8_input(std::int8_t* q, float* d, const float* x,
                                std::size_t elements) noexcept {
  for (std::size_t b = 0; b * kBlockWeights < elements; ++b) {
    const float* xb = x + b * kBlockWeights;
    std::int8_t* qb = q + b * kBlockWeights;
    float amax = 0.0f;
    bool finite = true;
    for (std::size_t j = 0; j < kBlockWeights; ++j) {
      finite = finite && std::isfinite(xb[j]);
      amax = std::fmax(amax, std::fabs(xb[j]));
    }
    const float scale = amax / 127.0f;
    if (!finite) {
      d[b] = std::numeric_limits<float>::quiet_NaN();
      for (std::size_t j = 0; j < kBlockWeights; ++j) qb[j] = 0;
    } else if (scale == 0.0f) {  // zeros, or below 127 * the smallest denormal
      d[b] = 0.0f;
      for (std::size_t j = 0; j < kBlockWeights; ++j) qb[j] = 0;
    } else {
      // |x / scale| <= 127 * (1 + 2^-23) (scale is amax / 127 to within 2^-24): never past 127.
      d[b] = scale;
      for (std::size_t j = 0; j < kBlockWeights; ++j)
        qb[j] = static_cast<std::int8_t>(std::nearbyint(xb[j] / scale));
    }
  }
}

}  // namespace scalar

// quantize_int8_input, 32 elements a step on AVX-512 (scalar elsewhere): the same operations
// (an f32 maximum of |x|, one f32 division for d, one per element, rounding to nearest even), so
// the same bits; test_q8_0_dot compares the two.
inline void quantize_int8_input(std::int8_t* q, float* d, const float* x,
                                std::size_t elements) noexcept {
#if defined(__AVX512F__) && defined(__AVX512BW__)
  const __m512 inf = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  for (std::size_t b = 0; b * kBlockWeights < elements; ++b) {
    const float* xb = x + b * kBlockWeights;
    const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16);
    const __m512 a0 = _mm512_abs_ps(v0), a1 = _mm512_abs_ps(v1);
    // |x| < inf is false for infinities and NaNs alike.
    const bool finite = _mm512_cmp_ps_mask(a0, inf, _CMP_LT_OQ) == 0xFFFF &&
                        _mm512_cmp_ps_mask(a1, inf, _CMP_LT_OQ) == 0xFFFF;
    const float scale = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1)) / 127.0f;
    std::int8_t* qb = q + b * kBlockWeights;
    if (!finite || scale == 0.0f) {
      d[b] = finite ? 0.0f : std::numeric_limits<float>::quiet_NaN();
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb), _mm256_setzero_si256());
      continue;
    }
    d[b] = scale;
    const __m512 s = _mm512_set1_ps(scale);
    constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_div_ps(v0, s), kNearest));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_div_ps(v1, s), kNearest));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qb), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qb + 16), _mm512_cvtepi32_epi8(q1));
  }
#else
  scalar::quantize_int8_input(q, d, x, elements);
#endif
}

namespace detail {

// The 8 partial sums combined in the one fixed order.
inline float sum_int8_dot_lanes(const float* a) noexcept {
  return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

#if defined(__AVX2__)
// Eight vectors of 8 int32 lanes -> one vector whose lane k is the sum of vector k's lanes.
[[gnu::always_inline]] inline __m256i reduce8_epi32(const __m256i (&p)[8]) noexcept {
  const __m256i a01 = _mm256_hadd_epi32(p[0], p[1]), a23 = _mm256_hadd_epi32(p[2], p[3]);
  const __m256i a45 = _mm256_hadd_epi32(p[4], p[5]), a67 = _mm256_hadd_epi32(p[6], p[7]);
  // 128-bit lane 0 of b0123 holds the low halves' sums of p0..p3, lane 1 the high halves'.
  const __m256i b0123 = _mm256_hadd_epi32(a01, a23), b4567 = _mm256_hadd_epi32(a45, a67);
  return _mm256_add_epi32(_mm256_permute2x128_si256(b0123, b4567, 0x20),
                          _mm256_permute2x128_si256(b0123, b4567, 0x31));
}
#endif

// q8_0's AVX-512 order of a 16-block group (Int8Q8Blocks; 512 quants, as 8 registers of 64
// bytes: register m holds blocks 2m and 2m + 1): a 4x4 transpose of 32-bit groups within each
// 128-bit lane of registers 0-3 (blocks 0-7, set A) and of 4-7 (blocks 8-15, set B). Afterwards lane 4L + i of
// a set's register t holds 4-byte group t of 128-bit lane L of the set's register i: each lane
// of a set collects one half block, L = 2 (block % 2) + (group / 4), i = (block / 2) % 4.
// interleaved_offset gives it per byte, for x's copy; interleave_int8_group does it in registers.
inline std::size_t interleaved_offset(std::size_t block, std::size_t byte) noexcept {
  const std::size_t group = byte / 4, set = block / 8;
  const std::size_t lane = 2 * (block % 2) + group / 4, i = (block / 2) % 4;
  return set * 256 + (group % 4) * 64 + (4 * lane + i) * 4 + byte % 4;
}
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// One set: the 4x4 transpose of 4-byte groups within each 128-bit lane of z[0..3].
[[gnu::always_inline]] inline void interleave_int8_set(__m512i* z) noexcept {
  const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
  z[0] = _mm512_unpacklo_epi64(t0, t2);
  z[1] = _mm512_unpackhi_epi64(t0, t2);
  z[2] = _mm512_unpacklo_epi64(t1, t3);
  z[3] = _mm512_unpackhi_epi64(t1, t3);
}
[[gnu::always_inline]] inline void interleave_int8_group(__m512i (&z)[8]) noexcept {
  interleave_int8_set(z);
  interleave_int8_set(z + 4);
}
// A row's step on the AVX-512 path: u the unsigned operands of vpdpbusd (8 registers, in the
// blocks type's layout), neg the lanes whose x must change sign (blocks with signed weights).
struct Int8Step {
  __m512i u[8];
  __mmask64 neg[8];
};
// Bytes [0, have) of a 64-byte load (have may exceed 64).
[[gnu::always_inline]] inline __mmask64 first_bytes(std::size_t have) noexcept {
  return have >= 64 ? ~__mmask64{0} : (__mmask64{1} << have) - 1;
}
#endif

// How a call prefetches (as bf16_dot.hpp): not at all; its own rows' stream kInt8PrefetchBytes
// ahead (at most a row: running into `next` at a row's end); or the following rows at the block
// being read (a batch's later tiles, whose own rows are in L1).
//
// The distance: 256 bytes. A row of int8 codes is short (2 KiB for 2048 columns of q8_0, 1 KiB
// of q4_0), and prefetching a row's length ahead (the f32 kernels' 2 KiB) fetches the next row
// group's lines instead of this one's. Measured on TinyLlama's matrices alone (1.2 GB of q8_0,
// 0.62 GB of q4_0, huge pages; Xeon, L3 480 MB, 1 thread), one decode pass in ms for 128 / 256 /
// 512 / 1024 / 2048 bytes ahead: q8_0 77.2 / 74.6–75.1 / 77.8–78.1 / 77.3–77.8 / 86.2–86.6;
// q4_0 44.5 / 43.3 / 43.1 / 54.4 / 53.2; no prefetching, q8_0 90.3.
inline constexpr std::size_t kInt8PrefetchBytes = 256;
enum Int8Prefetch : int { kInt8NoPrefetch = 0, kInt8PrefetchOwn = 1, kInt8PrefetchNext = 2 };

// y[v * y_stride + r] = W(R rows: blocks q, scales d, nb blocks each) . x_v for V vectors
// x_v = x + v * x_stride; next_q: the blocks that follow the R rows (the prefetch stream only).
template <class C, Int8DotPath P, std::size_t R, std::size_t V, int Prefetch>
CALM_KERNEL inline void dot_int8_rows(float* y, std::size_t y_stride, const typename C::unit* q,
                                      const float* d, const typename C::unit* next_q, Int8Input x,
                                      std::size_t x_stride, std::size_t cols) noexcept {
  static_assert(int8_dot_path_built(P), "int8 dot: this build has no such path (see -march)");
  using Unit = typename C::unit;
  const std::size_t nb = cols / kBlockWeights, row = nb * C::units;  // units per row
  alignas(32) float acc[R][V][kInt8DotLanes] = {};
  std::size_t b0 = 0;  // blocks below b0 are in acc
  // The SIMD paths: 8 (AVX2) or 16 (AVX-512) blocks per step; a row's last blocks take one more
  // step with the missing blocks read as zeros and their lanes left as they were (masked).
  // prefetch_step(b): 8 blocks' lines of each row, and as many of the next rows' scales.
  const auto prefetch_step = [&](std::size_t b) {
    if constexpr (Prefetch != kInt8NoPrefetch) {
      constexpr std::size_t step_units = kInt8DotLanes * C::units, line = 64 / sizeof(Unit);
      constexpr std::size_t own = kInt8PrefetchBytes / sizeof(Unit);
      const std::size_t ahead = own < row ? own : row;
      const std::size_t c = b * C::units;
      for (std::size_t r = 0; r < R; ++r)
        for (std::size_t l = 0; l < step_units; l += line) {
          if constexpr (Prefetch == kInt8PrefetchNext)
            prefetch_line(next_q + r * row + c + l);
          else
            prefetch_line(c + ahead < row ? q + r * row + c + ahead + l
                                          : next_q + r * row + (c + ahead - row) + l);
        }
      // The next rows' R * nb scales, R * 8 of them per step, a line (16) at a time.
      for (std::size_t f = b * R; f < (b + kInt8DotLanes) * R; f += 16) prefetch_line(d + R * nb + f);
    }
  };
  (void)prefetch_step;
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  if constexpr (P == Int8DotPath::avx512vnni) {
    // 16 blocks per step, x's copy already in the blocks type's layout (C::interleave_x), so
    // that C::step_sums takes each block's s_b in one lane without a reduction per vector.
    __m256 a[R][V];
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) a[r][v] = _mm256_setzero_ps();
    const auto step = [&]<bool Partial>(std::size_t from, std::size_t blocks) {
      const std::size_t c = from * kBlockWeights;
      const __mmask16 lanes = static_cast<__mmask16>((1u << blocks) - 1);
      for (std::size_t r = 0; r < R; ++r) {
        Int8Step s;
        C::template load_step<Partial>(q + r * row + from * C::units, blocks, s);
        const __m512 dw = Partial ? _mm512_maskz_loadu_ps(lanes, d + r * nb + from)
                                  : _mm512_loadu_ps(d + r * nb + from);
        for (std::size_t v = 0; v < V; ++v) {
          const Int8Input xv = x + (v * x_stride + c);
          const __m512 sf = _mm512_cvtepi32_ps(C::template step_sums<Partial>(s, xv, blocks));
          const __m512 scale = _mm512_mul_ps(dw, _mm512_loadu_ps(xv.d));  // x's d is padded
          // Blocks from..from+7, then from+8..from+15, each into lane b mod 8.
          __m256 next = _mm256_fmadd_ps(_mm512_castps512_ps256(sf), _mm512_castps512_ps256(scale), a[r][v]);
          if constexpr (Partial) next = _mm256_mask_blend_ps(static_cast<__mmask8>(lanes), a[r][v], next);
          __m256 after = _mm256_fmadd_ps(_mm512_extractf32x8_ps(sf, 1), _mm512_extractf32x8_ps(scale, 1), next);
          if constexpr (Partial) after = _mm256_mask_blend_ps(static_cast<__mmask8>(lanes >> 8), next, after);
          a[r][v] = after;
        }
      }
    };
    for (; b0 + 2 * kInt8DotLanes <= nb; b0 += 2 * kInt8DotLanes) {
      prefetch_step(b0);
      prefetch_step(b0 + kInt8DotLanes);
      step.template operator()<false>(b0, 2 * kInt8DotLanes);
    }
    if (b0 < nb) step.template operator()<true>(b0, nb - b0);
    b0 = nb;
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) _mm256_store_ps(acc[r][v], a[r][v]);
  }
#endif
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (P == Int8DotPath::avx2) {
    __m256 a[R][V];
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) a[r][v] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    const auto step = [&]<bool Partial>(std::size_t from, std::size_t blocks) {
      const std::size_t c = from * kBlockWeights;
      // Lanes of the blocks that are there (sign bit set), for the masked loads and the blend.
      const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(blocks)),
                                               _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      const auto load_scales = [&](const float* p) {
        if constexpr (Partial) return _mm256_maskload_ps(p, lanes);
        return _mm256_loadu_ps(p);
      };
      for (std::size_t r = 0; r < R; ++r) {
        const __m256 dw = load_scales(d + r * nb + from);
        for (std::size_t v = 0; v < V; ++v) {
          const Int8Input xv = x + (v * x_stride + c);
          __m256i p[8];
          for (std::size_t k = 0; k < 8; ++k) {
            if (Partial && k >= blocks) {
              p[k] = _mm256_setzero_si256();
              continue;
            }
            const __m256i xk = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xv.q + 32 * k));
            // vpmaddwd sums the (never saturated: C::pairs) int16 pairs exactly into int32.
            p[k] = _mm256_madd_epi16(C::pairs(q + r * row + (from + k) * C::units, xk), ones);
          }
          __m256i sums = reduce8_epi32(p);
          if constexpr (C::offset != 0) {
            const auto* k = reinterpret_cast<const int*>(xv.k);
            sums = _mm256_add_epi32(sums, Partial ? _mm256_maskload_epi32(k, lanes)
                                                  : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(k)));
          }
          const __m256 next = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dw, load_scales(xv.d)), a[r][v]);
          if constexpr (Partial)
            a[r][v] = _mm256_blendv_ps(a[r][v], next, _mm256_castsi256_ps(lanes));
          else
            a[r][v] = next;
        }
      }
    };
    for (; b0 + kInt8DotLanes <= nb; b0 += kInt8DotLanes) {
      prefetch_step(b0);
      step.template operator()<false>(b0, kInt8DotLanes);
    }
    if (b0 < nb) step.template operator()<true>(b0, nb - b0);
    b0 = nb;
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) _mm256_store_ps(acc[r][v], a[r][v]);
  }
#endif
  // The scalar path: the same steps one block at a time.
  for (std::size_t b = b0; b < nb; ++b)
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) {
        const Int8Input xv = x + (v * x_stride + b * kBlockWeights);
        const Unit* block = q + r * row + b * C::units;
        // sum (code - offset) * q_x, exact, as sum code * q_x - offset * sum q_x: g++ 12.2 at -O2
        // with AVX-512 VNNI narrows q4_0's code - 8 to a byte and feeds it to vpdpbusd as
        // unsigned (-8 read as 248); the codes themselves are right as either operand.
        std::int32_t s = 0, sum_x = 0;
        for (std::size_t j = 0; j < kBlockWeights; ++j) {
          s += C::code(block, j) * std::int32_t{xv.q[j]};
          sum_x += xv.q[j];
        }
        s -= C::offset * sum_x;
        float& lane = acc[r][v][b % kInt8DotLanes];
        lane = __builtin_fmaf(static_cast<float>(s), d[r * nb + b] * *xv.d, lane);
      }
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) y[v * y_stride + r] = sum_int8_dot_lanes(acc[r][v]);
}

// Vectors per tile: two rows' accumulators and a tile's products stay in registers.
template <Int8DotPath P>
inline constexpr std::size_t kInt8DotTile = P == Int8DotPath::avx512vnni ? 4 : 2;

// Elements per vector of the quantized x a path reads: cols, or on the AVX-512 path cols padded
// to whole 16-block groups (zeros), each group in the blocks type's layout (C::interleave_x).
template <Int8DotPath P>
inline std::size_t int8_input_stride(std::size_t cols) noexcept {
  if constexpr (P == Int8DotPath::avx512vnni) {
    constexpr std::size_t group = 2 * kInt8DotLanes * kBlockWeights;
    return (cols + group - 1) / group * group;
  }
  return cols;
}

// k of one quantized block of x: -offset * the sum of its 32 q_x (exact in int32).
inline std::int32_t x_offset_term(int offset, const std::int8_t* block) noexcept {
  std::int32_t sum = 0;
  for (std::size_t j = 0; j < kBlockWeights; ++j) sum += block[j];
  return -offset * sum;
}

// The thread-local quantized copy of x(n, cols) a call works on for blocks C (stride
// int8_input_stride, on the AVX-512 path in C's layout), with k = -C::offset * each block's sum
// of q when the offset is not 0; tasks get the pointers.
template <class C, Int8DotPath P>
inline Int8Input quantized_int8_input(const float* x, std::size_t n, std::size_t cols) {
  constexpr int offset = C::offset;
  thread_local AlignedBuffer<std::int8_t> q, plain;
  thread_local AlignedBuffer<float> d;
  thread_local AlignedBuffer<std::int32_t> k;
  const std::size_t stride = int8_input_stride<P>(cols), nb = cols / kBlockWeights;
  const std::size_t stride_blocks = stride / kBlockWeights;
  q.reserve_discard(n * stride + 1);
  d.reserve_discard(n * stride_blocks + 1);
  k.reserve_discard(n * stride_blocks + 1);
  plain.reserve_discard(n * cols + 1);
  constexpr bool interleave = P == Int8DotPath::avx512vnni;
  for (std::size_t t = 0; t < n; ++t) {
    float* dt = d.data() + t * stride_blocks;
    // x_t's blocks in order: the kernels' copy itself, or (AVX-512) before the interleave.
    std::int8_t* pt = (interleave ? plain.data() : q.data()) + t * cols;
    quantize_int8_input(pt, dt, x + t * cols, cols);
    for (std::size_t b = nb; b < stride_blocks; ++b) dt[b] = 0.0f;
    if constexpr (offset != 0) {
      std::int32_t* kt = k.data() + t * stride_blocks;
      for (std::size_t b = 0; b < stride_blocks; ++b)
        kt[b] = b < nb ? x_offset_term(offset, pt + b * kBlockWeights) : 0;
    }
    if constexpr (interleave) C::interleave_x(pt, q.data() + t * stride, cols, stride);
  }
  return {q.data(), d.data(), k.data()};
}

#if CALM_AMX_INT8_BUILT
// The AMX-INT8 path of a batch. A tile product takes 16 weight rows' block b (tile A:
// 16 rows of 32 bytes, read where the row stores them) against 16 vectors' quantized block b
// (tile B: 8 rows of 16 x 4 bytes, x's copy laid out for it) and gives the 16 x 16 exact sums
// s_b in an int32 tile (tdpbssd: signed bytes both sides). The f32 steps then run on those
// sums, one vector lane per x vector, exactly as the other paths run them per row: acc[b mod 8]
// = fma(float(s_b), d_w,b * d_x,b, acc[b mod 8]), the 8 combined in the one fixed order. So
// every row is bitwise what the other paths give, for any number of vectors.
//
// Up to 8 vectors (and an even number of blocks a row) the tiles take two blocks at once: tile A
// is 16 rows of 64 bytes (blocks b and b + 1, side by side in each row) and tile B is
// block-diagonal, 16 rows of 8 vectors for block b then 8 zero columns (its first 8 rows, the
// bytes of block b) and 8 zero columns then 8 vectors for block b + 1 (its last 8 rows), so one
// tdpbssd gives both blocks' sums, 16 rows x (2 blocks x 8 vectors): half the tile loads and
// products per block, and one f32 vector per weight row takes both blocks' steps.
//
// x's copy for the tiles: vectors in groups of G = 8 or 16 (the last zero-padded), the G
// vectors' scales d[(g nb + b) G + t] and, for blocks with an offset, k[(g nb + b) G + t] =
// -offset * the block's sum of q_x. G = 16: per group g and block b, 8 rows
// q[(g nb + b) 32 G + 4 G i + 4 t + j] = q_x of vector G g + t at element 32 b + 4 i + j (tile B:
// 8 rows of 64 bytes). G = 8 (paired): per group g and pair p of blocks, tile B's 16 rows of 64
// bytes at q[(g nb / 2 + p) 1024]: row 8 h + i holds at bytes 32 h + 4 t + j q_x of vector
// 8 g + t at element 32 (2 p + h) + 4 i + j, zeros elsewhere.
struct AmxInput {
  const std::int8_t* q;
  const float* d;
  const std::int32_t* k;
  std::size_t groups;
};

// The vectors are quantized on the pool's threads (each a contiguous run of them).
template <int Offset, std::size_t G>
inline AmxInput amx_int8_input(const float* x, std::size_t n, std::size_t cols, ThreadPool* pool) {
  thread_local AlignedBuffer<std::int8_t> q_buffer;
  thread_local AlignedBuffer<float> d_buffer;
  thread_local AlignedBuffer<std::int32_t> k_buffer;
  const std::size_t nb = cols / kBlockWeights, groups = (n + G - 1) / G;
  constexpr bool paired = G == 8;
  const std::size_t group_bytes = nb * 32 * G * (paired ? 2 : 1);
  q_buffer.reserve_discard(groups * group_bytes);
  d_buffer.reserve_discard(groups * nb * G);
  k_buffer.reserve_discard(groups * nb * G);
  // Plain pointers for the tasks: inside a worker thread, the buffers name that thread's copies.
  std::int8_t* q = q_buffer.data();
  float* d = d_buffer.data();
  std::int32_t* k = k_buffer.data();
  if constexpr (paired) std::fill_n(q, groups * group_bytes, std::int8_t{0});  // the zero halves
  if (n % G != 0) {  // the last group's missing vectors read as zeros
    const std::size_t last = groups - 1;
    if constexpr (!paired) std::fill_n(q + last * group_bytes, group_bytes, std::int8_t{0});
    std::fill_n(d + last * nb * G, nb * G, 0.0f);
    if constexpr (Offset != 0) std::fill_n(k + last * nb * G, nb * G, 0);
  }
  const auto vectors = [&](std::size_t v0, std::size_t v1) {
    thread_local AlignedBuffer<std::int8_t> plain;
    thread_local AlignedBuffer<float> plain_d;
    plain.reserve_discard(cols);
    plain_d.reserve_discard(nb);
    for (std::size_t v = v0; v < v1; ++v) {
      quantize_int8_input(plain.data(), plain_d.data(), x + v * cols, cols);
      const std::size_t g = v / G, t = v % G;
      for (std::size_t b = 0; b < nb; ++b) {
        const std::int8_t* src = plain.data() + b * kBlockWeights;
        if constexpr (paired) {
          std::int8_t* tile = q + g * group_bytes + (b / 2) * 1024 + (b % 2) * (8 * 64 + 32) + 4 * t;
          for (std::size_t i = 0; i < 8; ++i) std::memcpy(tile + 64 * i, src + 4 * i, 4);
        } else {
          std::int8_t* tile = q + (g * nb + b) * 32 * G + 4 * t;
          for (std::size_t i = 0; i < 8; ++i) std::memcpy(tile + 4 * G * i, src + 4 * i, 4);
        }
        d[(g * nb + b) * G + t] = plain_d[b];
        if constexpr (Offset != 0) k[(g * nb + b) * G + t] = x_offset_term(Offset, src);
      }
    }
  };
  if (pool == nullptr || pool->size() == 1 || n < 2) {
    vectors(0, n);
  } else {
    const std::size_t tasks = pool->size() < n ? pool->size() : n;
    pool->parallel_for(tasks, [&](std::size_t i) { vectors(n * i / tasks, n * (i + 1) / tasks); });
  }
  return {q, d, k, groups};
}

// Tiles for m weight rows and groups of G vectors: 0-3 sums (m rows of 16 int32: one block of
// 16 vectors, or two blocks of 8), 4-5 weight blocks (A: m rows of 32 bytes, or 64 paired), 6-7
// x's blocks (B: 8 rows of 64 bytes, or 16 paired).
template <std::size_t G>
inline amx::TileConfig amx_int8_config(std::size_t rows) noexcept {
  constexpr bool paired = G == 8;
  amx::TileConfig c;
  for (int t = 0; t < 4; ++t) c.rows[t] = static_cast<std::uint8_t>(rows), c.colsb[t] = 64;
  for (int t = 4; t < 6; ++t) c.rows[t] = static_cast<std::uint8_t>(rows), c.colsb[t] = paired ? 64 : 32;
  for (int t = 6; t < 8; ++t) c.rows[t] = paired ? 16 : 8, c.colsb[t] = 64;
  return c;
}

// Tile product T (sums in tile T, A in tile 4 or 5, B in 6 or 7): the weight rows at
// a_at(first block), a_stride bytes between rows, against x's tile B at b_at; signed codes by
// tdpbssd, unsigned ones (blocks with an offset) by tdpbusd. GCC's tile intrinsics paste the
// tile number into the instruction, so each T is written out.
#define CALM_AMX_INT8_PRODUCT(T, A, B)                                         \
  do {                                                                         \
    _tile_zero(T);                                                             \
    _tile_loadd(A, a_at(from + T * per_tile), static_cast<long>(a_stride));    \
    _tile_loadd(B, b_at(from + T * per_tile), 64);                             \
    if constexpr (C::offset == 0)                                              \
      _tile_dpbssd(T, A, B);                                                   \
    else                                                                       \
      _tile_dpbusd(T, A, B);                                                   \
  } while (false)

// y[v * y_stride + o] for the m <= 16 rows at q (scales d, nb blocks each) and the vectors of
// x's group g (`count` <= G of them), the configuration of amx_int8_config<G>(m) loaded. Blocks
// whose codes are stored as bytes (C::kAmxReadsStored) go to tile A from where they are; others
// are written out as bytes first (C::amx_codes), 8 blocks of the m rows at a time. The f32 steps
// take one f32 vector per row and block (16 vectors' lanes) or, paired (G = 8), per row and two
// blocks (lanes 8 h + t: block b0 + 2 p + h of vector t, whose partial sum is lane t of
// accumulator 2 p + h). The tile products of the next 8 blocks are issued before the f32 steps
// of these (two buffers of sums), so that their loads are in flight meanwhile. First: the first
// vector group, which streams the rows from memory.
template <class C, std::size_t G>
inline void amx_int8_rows(float* y, std::size_t y_stride, const typename C::unit* q,
                          const float* d, std::size_t m, std::size_t nb, AmxInput x,
                          std::size_t g, std::size_t count, bool first) noexcept {
  static_assert(G == 8 || G == 16);
  using Unit = typename C::unit;
  constexpr bool paired = G == 8;
  constexpr std::size_t per_tile = paired ? 2 : 1;                 // blocks per tile product
  constexpr std::size_t slots = kInt8DotLanes / per_tile;         // accumulators per row
  const std::size_t row = nb * C::units;  // units per row
  // Sums of two chunks of 8 blocks: the tiles fill one while the f32 steps read the other.
  alignas(64) std::int32_t sums[2][slots][16][16];
  alignas(64) float acc[16][slots][16];
  alignas(64) std::int8_t codes[C::kAmxReadsStored ? 1 : 16][kInt8DotLanes * kBlockWeights];
  for (std::size_t o = 0; o < m; ++o)
    for (std::size_t l = 0; l < slots; ++l) _mm512_store_ps(acc[o][l], _mm512_setzero_ps());
  const std::int8_t* xg = x.q + g * nb * 32 * 16;  // a group's bytes: 32 G per block, twice paired
  const float* dg = x.d + g * nb * G;
  const std::int32_t* kg = x.k + g * nb * G;
  // The tile products of the chunk from block b0 into sums[buf].
  const auto products = [&](std::size_t b0, std::size_t buf) {
    const std::size_t blocks = nb - b0 < kInt8DotLanes ? nb - b0 : kInt8DotLanes;
    // Unpaired, the rows of the first group come from memory (prefetched kPrefetchBytes ahead,
    // into the rows after them at a row's end; later groups find them in the caches). Paired,
    // prefetching measured slower than the hardware's streams alone.
    if (!paired && first) {
      constexpr std::size_t step = kInt8DotLanes * C::units, line = 64 / sizeof(Unit);
      const std::size_t ahead = kPrefetchBytes / sizeof(Unit), c = b0 * C::units + ahead;
      for (std::size_t o = 0; o < m; ++o)
        for (std::size_t l = 0; l < step; l += line)
          prefetch_line(c + l < row ? q + o * row + c + l : q + (o + m) * row + (c + l - row));
      if (b0 % 16 == 0)
        for (std::size_t o = 0; o < m; ++o) prefetch_line(d + (o + m) * nb + b0);
    }
    if constexpr (!C::kAmxReadsStored)
      for (std::size_t o = 0; o < m; ++o) C::amx_codes(q + o * row + b0 * C::units, blocks, codes[o]);
    const auto a_at = [&](std::size_t block) -> const void* {
      if constexpr (C::kAmxReadsStored) return q + (b0 + block) * C::units;
      return codes[0] + block * kBlockWeights;
    };
    const auto b_at = [&](std::size_t block) -> const void* {
      return xg + (b0 + block) * 32 * 16;  // 8 rows of 16 vectors, or half a paired tile
    };
    const std::size_t a_stride = C::kAmxReadsStored ? row * sizeof(Unit) : sizeof(codes[0]);
    // GCC 12's tile loads are asm statements that declare no memory input: make every store
    // before them (x's copy, the codes) happen first.
    __asm__ volatile("" ::: "memory");
    for (std::size_t from = 0; from < blocks; from += 4 * per_tile) {
      const std::size_t left = (blocks - from) / per_tile;  // paired: nb is even
      CALM_AMX_INT8_PRODUCT(0, 4, 6);
      if (left > 1) CALM_AMX_INT8_PRODUCT(1, 5, 7);
      if (left > 2) CALM_AMX_INT8_PRODUCT(2, 4, 6);
      if (left > 3) CALM_AMX_INT8_PRODUCT(3, 5, 7);
      const std::size_t p = from / per_tile;
      _tile_stored(0, sums[buf][p], 64);
      if (left > 1) _tile_stored(1, sums[buf][p + 1], 64);
      if (left > 2) _tile_stored(2, sums[buf][p + 2], 64);
      if (left > 3) _tile_stored(3, sums[buf][p + 3], 64);
    }
    __asm__ volatile("" ::: "memory");  // and its tile stores no memory output
  };
  // The f32 steps of the chunk from b0 (a multiple of 8: block b0 + k goes to accumulator k),
  // NP products (0: not known at compile time).
  const auto f32_steps = [&]<std::size_t NP>(std::size_t b0, std::size_t buf) {
    const std::size_t blocks = nb - b0 < kInt8DotLanes ? nb - b0 : kInt8DotLanes;
    const std::size_t np = NP ? NP : blocks / per_tile;
    // G = 16: block b0 + p's 16 scales of x; paired: blocks b0 + 2p and + 1, 8 each.
    __m512 dx[slots];
    __m512i kx[slots];
#pragma GCC unroll 8
    for (std::size_t p = 0; p < np; ++p) {
      dx[p] = _mm512_load_ps(dg + (b0 + per_tile * p) * G);
      if constexpr (C::offset != 0) kx[p] = _mm512_load_si512(kg + (b0 + per_tile * p) * G);
    }
    for (std::size_t o = 0; o < m; ++o) {
      const float* dw = d + o * nb + b0;
      __m512 dw8 = _mm512_setzero_ps();  // paired: the row's scales of this chunk's blocks
      if constexpr (paired)
        dw8 = _mm512_castps256_ps512(_mm256_maskz_loadu_ps(static_cast<__mmask8>((1u << blocks) - 1), dw));
#pragma GCC unroll 8
      for (std::size_t p = 0; p < np; ++p) {
        __m512i si = _mm512_load_si512(sums[buf][p][o]);
        if constexpr (C::offset != 0) si = _mm512_add_epi32(si, kx[p]);
        __m512 dwv;
        if constexpr (paired) {
          const int lo = static_cast<int>(2 * p), hi = lo + 1;
          dwv = _mm512_permutexvar_ps(_mm512_set_epi32(hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo), dw8);
        } else {
          dwv = _mm512_set1_ps(dw[p]);
        }
        const __m512 sf = _mm512_cvtepi32_ps(si);
        _mm512_store_ps(acc[o][p], _mm512_fmadd_ps(sf, _mm512_mul_ps(dwv, dx[p]), _mm512_load_ps(acc[o][p])));
      }
    }
  };
  // Software-pipelined: the next chunk's tile loads are in flight while this chunk's f32 steps run.
  products(0, 0);
  for (std::size_t b0 = 0, buf = 0; b0 < nb; b0 += kInt8DotLanes, buf ^= 1) {
    if (b0 + kInt8DotLanes < nb) products(b0 + kInt8DotLanes, buf ^ 1);
    if (nb - b0 >= kInt8DotLanes)
      f32_steps.template operator()<slots>(b0, buf);
    else
      f32_steps.template operator()<0>(b0, buf);
  }
  // The tree ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)), per vector lane.
  alignas(64) float out[16][16];  // [row][vector]
  for (std::size_t o = 0; o < m; ++o) {
    const auto slot = [&](std::size_t l) { return _mm512_load_ps(acc[o][l]); };
    if constexpr (paired) {  // slot p: a_2p in lanes 0-7, a_2p+1 in lanes 8-15
      const __m512 w = _mm512_add_ps(_mm512_add_ps(slot(0), slot(2)), _mm512_add_ps(slot(1), slot(3)));
      _mm256_store_ps(out[o], _mm256_add_ps(_mm512_castps512_ps256(w), _mm512_extractf32x8_ps(w, 1)));
    } else {
      _mm512_store_ps(out[o], _mm512_add_ps(
          _mm512_add_ps(_mm512_add_ps(slot(0), slot(4)), _mm512_add_ps(slot(2), slot(6))),
          _mm512_add_ps(_mm512_add_ps(slot(1), slot(5)), _mm512_add_ps(slot(3), slot(7)))));
    }
  }
  for (std::size_t t = 0; t < count; ++t)
    for (std::size_t o = 0; o < m; ++o) y[t * y_stride + o] = out[o][t];
}

// Y(n, rows) = X(n, cols) W^T on AMX tiles, each row bitwise the other paths' (see above); the
// rows go to threads in groups of 16, the vectors in groups of 8 (n <= 8, blocks paired where a row has an even number) or 16.
template <class C>
void matvec_batch_int8_amx(float* y, const typename C::unit* q, const float* d, const float* x,
                           std::size_t n, std::size_t rows, std::size_t cols, ThreadPool* pool) {
  if (n == 0 || rows == 0) return;
  const auto run = [&]<std::size_t G>() {
    const AmxInput xq = amx_int8_input<C::offset, G>(x, n, cols, pool);
    const std::size_t nb = cols / kBlockWeights, row = nb * C::units;
    split_groups((rows + 15) / 16, pool, [&](std::size_t g0, std::size_t g1) {
      std::size_t configured = 0;
      for (std::size_t rg = g0; rg < g1; ++rg) {
        const std::size_t r = rg * 16, m = rows - r < 16 ? rows - r : 16;
        if (m != configured) {
          const amx::TileConfig config = amx_int8_config<G>(m);
          _tile_loadconfig(&config);
          configured = m;
        }
        for (std::size_t g = 0; g < xq.groups; ++g) {
          const std::size_t count = n - G * g < G ? n - G * g : G;
          amx_int8_rows<C, G>(y + G * g * rows + r, rows, q + r * row, d + r * nb, m, nb, xq, g,
                              count, g == 0);
        }
      }
      if (configured != 0) _tile_release();
    });
  };
  if (n <= 8 && (cols / kBlockWeights) % 2 == 0)
    run.template operator()<8>();
  else
    run.template operator()<16>();
}
#undef CALM_AMX_INT8_PRODUCT
#endif
}  // namespace detail

// For each segment, y(rows) = W(rows, cols) x(cols), W in C's blocks: one pass over every
// segment's rows, split statically over the pool's threads in whole row groups.
// Segment: a BlockSegment of a codec whose unit is C's (the format's segment type).
template <class C, Int8DotPath P = kHostInt8DotPath, class Segment>
void matvec_int8_dot(std::span<const Segment> segments, const float* x, std::size_t cols,
                     ThreadPool* pool = nullptr) {
  const Int8Input xq = detail::quantized_int8_input<C, P>(x, 1, cols);
  const std::size_t nb = cols / kBlockWeights;
  std::size_t groups = 0;
  for (const Segment& s : segments) groups += detail::row_groups(s.rows);
  detail::split_groups(groups, pool, [&](std::size_t g0, std::size_t g1) {
    detail::walk_segment_groups(
        segments, nb * C::units, g0, g1, [](const Segment& s) { return s.q; },
        [&]<std::size_t R>(const Segment& seg, std::size_t r, const typename C::unit* next) {
          detail::dot_int8_rows<C, P, R, 1, detail::kInt8PrefetchOwn>(
              seg.y + r, 0, seg.q + r * nb * C::units, seg.d + r * nb, next, xq, 0, cols);
        });
  });
}

// y(rows) = W(rows, cols) x(cols), W in C's blocks: q (rows, cols / 32 * C::units), d (rows,
// cols / 32).
template <class C, Int8DotPath P = kHostInt8DotPath>
void matvec_int8_dot(float* y, const typename C::unit* q, const float* d, const float* x,
                     std::size_t rows, std::size_t cols, ThreadPool* pool = nullptr) {
  const BlockSegment<C> segment{y, q, d, rows};
  matvec_int8_dot<C, P>(std::span<const BlockSegment<C>>(&segment, 1), x, cols, pool);
}

// Y(n, rows) = X(n, cols) W^T, row t bitwise matvec_int8_dot(x_t); every weight row is read
// from memory once for all n vectors. On the AVX-512 path, n >= C::kAmxMinVectors runs on AMX
// tiles where the process may (the same bits).
template <class C, Int8DotPath P = kHostInt8DotPath>
void matvec_batch_int8_dot(float* y, const typename C::unit* q, const float* d, const float* x,
                           std::size_t n, std::size_t rows, std::size_t cols,
                           ThreadPool* pool = nullptr) {
  if (n == 0 || rows == 0) return;
#if CALM_AMX_INT8_BUILT
  if constexpr (P == Int8DotPath::avx512vnni) {
    if (n >= C::kAmxMinVectors && amx::usable())
      return detail::matvec_batch_int8_amx<C>(y, q, d, x, n, rows, cols, pool);
  }
#endif
  const Int8Input xq = detail::quantized_int8_input<C, P>(x, n, cols);
  const std::size_t nb = cols / kBlockWeights, row = nb * C::units;
  const std::size_t stride = detail::int8_input_stride<P>(cols);
  detail::split_groups(detail::row_groups(rows), pool, [&](std::size_t g0, std::size_t g1) {
    detail::walk_row_pairs(rows, g0, g1, [&]<std::size_t R>(std::size_t r) {
      const typename C::unit* qr = q + r * row;
      detail::walk_tiles<detail::kInt8DotTile<P>>(n, [&]<std::size_t V, bool First>(std::size_t t) {
        constexpr int prefetch = First ? detail::kInt8PrefetchOwn : detail::kInt8PrefetchNext;
        detail::dot_int8_rows<C, P, R, V, prefetch>(y + t * rows + r, rows, qr, d + r * nb,
                                                    qr + R * row, xq + t * stride, stride, cols);
      });
    });
  });
}

// y(k) = row rows[k] of W x(cols), each bitwise matvec_int8_dot's; one thread.
template <class C, Int8DotPath P = kHostInt8DotPath>
void matvec_gather_int8_dot(float* y, const typename C::unit* q, const float* d, const float* x,
                            std::span<const std::uint32_t> rows, std::size_t cols) {
  const Int8Input xq = detail::quantized_int8_input<C, P>(x, 1, cols);
  const std::size_t nb = cols / kBlockWeights;
  for (std::size_t k = 0; k < rows.size(); ++k) {
    const std::size_t r = rows[k];
    detail::dot_int8_rows<C, P, 1, 1, detail::kInt8NoPrefetch>(
        y + k, 0, q + r * nb * C::units, d + r * nb, nullptr, xq, 0, cols);
  }
}

}  // namespace calm::kernels

#undef CALM_KERNEL
