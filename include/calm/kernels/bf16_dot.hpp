// bf16 dot products with one arithmetic for every batch size: y = W x with W in bf16 and x
// rounded to bf16 once per call. Two arithmetics (docs/design.md §15, §16):
//
// The chain, on every host: each output computed as AVX512-BF16's vdpbf16ps computes it:
//   - 16 f32 lanes; a step takes 32 columns [c, c + 32): lane i adds w[c+2i+1] * x[c+2i+1], then
//     w[c+2i] * x[c+2i], each a fused multiply-add (the product of two bf16 is exact in f32)
//     rounded to nearest even, with denormal inputs read as zero and denormal results flushed to
//     zero;
//   - the steps run in column order, one accumulator per (row, vector);
//   - the 16 lanes are summed in one fixed order (sum_lanes16).
// Its paths give the same bits: vdpbf16ps itself (AVX512-BF16), and emulations of it with f32
// FMAs under MXCSR's flush-to-zero and denormals-are-zero on AVX-512F, AVX2 + FMA and in scalar
// code (the twin the tests compare against).
//
// AMX-BF16 tiles, where the process may use them (kernels/bf16_amx.hpp): the same exact products,
// summed in the tile unit's own order; within f32 rounding of the chain, not its bits.
//
// Either way row r of an n-vector call is bitwise row r computed alone, for any n, row grouping
// or thread count: what keeps speculative verification exact. DotPath::host (the default) takes
// the tiles where amx::bf16_usable(), for every n: one vector costs about what it costs on
// vdpbf16ps and 8 cost little more, where the chain's cost grows with n. cols must be a multiple
// of 32.
//
// Against the f32-activation kernels (matvec.hpp) this rounds x to bf16 (a relative error
// <= 2^-9 per element) and runs twice the multiply-adds per instruction: where weights stream
// from memory a row's arithmetic hides under the stream for more vectors at once.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "calm/core/aligned.hpp"
#include "calm/core/dtype.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/kernels/amx.hpp"
#include "calm/kernels/bf16_amx.hpp"
#include "calm/kernels/load.hpp"
#include "calm/kernels/matvec.hpp"
#include "calm/kernels/row_groups.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#define CALM_KERNEL [[gnu::flatten]]

namespace calm::kernels {

// Columns per step of the bf16 dot product; cols must be a multiple of it.
inline constexpr std::size_t kDotStep = 32;

// f32 -> bf16, round to nearest even; a denormal becomes a zero of its sign (vdpbf16ps would read
// it as zero anyway), a NaN stays a (quiet) NaN, infinities stay.
inline std::uint16_t round_to_bf16(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0) return static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}
inline void round_to_bf16(std::uint16_t* out, const float* x, std::size_t n) noexcept {
  std::size_t i = 0;
#if defined(__AVX512BF16__) && defined(__AVX512F__)
  // vcvtne2ps2bf16 rounds as above: nearest even, denormal inputs to a zero of their sign, a NaN
  // to its quiet NaN (tests/unit/test_bf16_dot.cpp compares the two on special values).
  for (; i + 32 <= n; i += 32) {
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(out + i, (__m512i)b);
  }
#endif
  for (; i < n; ++i) out[i] = round_to_bf16(x[i]);
}

// The paths of the bf16 dot product. avx512bf16, avx512, avx2 and scalar run vdpbf16ps's chain
// (above) and give the same bits; amx runs AMX-BF16 tiles (kernels/bf16_amx.hpp), whose
// accumulation inside a tile is the hardware's own: its bits are its own, and like the chain's
// each row of a batch is bitwise the row alone. host, the default, is the process's arithmetic:
// amx where the build, the CPU and Linux allow it (amx::bf16_usable()), otherwise kHostDotPath.
// Decoding and verification must run in one arithmetic, so amx::enable() is not switched while
// a bf16_dot model generates.
enum class DotPath { host, amx, avx512bf16, avx512, avx2, scalar };
// The best chain path this build compiles.
inline constexpr DotPath kHostDotPath =
#if defined(__AVX512BF16__) && defined(__AVX512F__)
    DotPath::avx512bf16;
#elif defined(__AVX512F__)
    DotPath::avx512;
#elif defined(__AVX2__) && defined(__FMA__)
    DotPath::avx2;
#else
    DotPath::scalar;
#endif

namespace detail {

// The 16 lanes of an accumulator, summed in one fixed order (halves, then quarters, ...).
inline float sum_lanes16(const float* a) noexcept {
  float s8[8], s4[4];
  for (int i = 0; i < 8; ++i) s8[i] = a[i] + a[i + 8];
  for (int i = 0; i < 4; ++i) s4[i] = s8[i] + s8[i + 4];
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

// The emulations run their FMAs as vdpbf16ps does: denormal inputs read as zero, denormal
// results flushed to zero (MXCSR DAZ and FTZ, this thread, for the guard's lifetime).
struct FlushDenormals {
#if defined(__x86_64__) || defined(__i386__)
  unsigned saved = _mm_getcsr();
  FlushDenormals() noexcept { _mm_setcsr(saved | 0x8040u); }
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;
};

// bf16 element k of a row as f32 (exact).
inline float widen_bf16(const std::uint16_t* p, std::size_t k) noexcept {
  const std::uint32_t u = std::uint32_t{p[k]} << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// y[v * y_stride + r] = W(R rows at w, stride cols) . x_v (x_v = x + v * x_stride, bf16), the
// arithmetic above; next: the rows that follow (the prefetch stream only).
// How a call prefetches: not at all; its own rows' stream, kPrefetchBytes ahead (running into
// `next` at a row's end), as the first vector tile of a batch does; or the rows that follow at
// the column being read (`next + c`), as a batch's later tiles do: their own rows are in L1, so
// the time of their arithmetic brings in the next rows instead of leaving memory idle.
enum Prefetch : int { kNoPrefetch = 0, kPrefetchOwn = 1, kPrefetchNext = 2 };

template <DotPath P, std::size_t R, std::size_t V, int Prefetch>
CALM_KERNEL inline void dot_bf16_rows(float* y, std::size_t y_stride, const std::uint16_t* w,
                                      const std::uint16_t* next, const std::uint16_t* x,
                                      std::size_t x_stride, std::size_t cols) noexcept {
  const PrefetchPlan<bf16> plan(cols);
  const auto pf_at = [&](std::size_t c) {
    if constexpr (Prefetch == kPrefetchNext) return next + c;
    return c < plan.own_end ? w + c + plan.ahead : next + (c + plan.ahead - cols);
  };
  alignas(64) float lanes[16];
  if constexpr (P == DotPath::scalar) {
    float acc[R][V][16] = {};
    for (std::size_t c = 0; c < cols; c += kDotStep)
      for (std::size_t r = 0; r < R; ++r)
        for (std::size_t v = 0; v < V; ++v)
          for (std::size_t i = 0; i < 16; ++i) {
            const std::uint16_t* wr = w + r * cols + c;
            const std::uint16_t* xv = x + v * x_stride + c;
            float& a = acc[r][v][i];
            a = __builtin_fmaf(widen_bf16(wr, 2 * i + 1), widen_bf16(xv, 2 * i + 1), a);
            a = __builtin_fmaf(widen_bf16(wr, 2 * i), widen_bf16(xv, 2 * i), a);
          }
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) y[v * y_stride + r] = sum_lanes16(acc[r][v]);
    (void)pf_at;
    (void)lanes;
  }
#if defined(__AVX512F__)
  if constexpr (P == DotPath::avx512bf16 || P == DotPath::avx512) {
    const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
    __m512 acc[R][V];
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
    for (std::size_t c = 0; c < cols; c += kDotStep) {
      __m512i xv[V];
      for (std::size_t v = 0; v < V; ++v) xv[v] = _mm512_loadu_si512(x + v * x_stride + c);
      for (std::size_t r = 0; r < R; ++r) {
        if constexpr (Prefetch != kNoPrefetch) prefetch_line(pf_at(c) + r * cols);
        const __m512i wr = _mm512_loadu_si512(w + r * cols + c);
        if constexpr (P == DotPath::avx512bf16) {
#if defined(__AVX512BF16__)
          for (std::size_t v = 0; v < V; ++v)
            acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)wr, (__m512bh)xv[v]);
#endif
        } else {
          const __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(wr, high));
          const __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(wr, 16));
          for (std::size_t v = 0; v < V; ++v) {
            const __m512 xo = _mm512_castsi512_ps(_mm512_and_si512(xv[v], high));
            const __m512 xe = _mm512_castsi512_ps(_mm512_slli_epi32(xv[v], 16));
            acc[r][v] = _mm512_fmadd_ps(we, xe, _mm512_fmadd_ps(wo, xo, acc[r][v]));
          }
        }
      }
    }
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) {
        _mm512_store_ps(lanes, acc[r][v]);
        y[v * y_stride + r] = sum_lanes16(lanes);
      }
  }
#endif
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (P == DotPath::avx2) {
    const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
    __m256 lo[R][V], hi[R][V];  // lanes 0-7 and 8-15
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) lo[r][v] = hi[r][v] = _mm256_setzero_ps();
    const auto fma_pairs = [&](__m256i wp, __m256i xp, __m256 a) {
      const __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(wp, high));
      const __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(wp, 16));
      const __m256 xo = _mm256_castsi256_ps(_mm256_and_si256(xp, high));
      const __m256 xe = _mm256_castsi256_ps(_mm256_slli_epi32(xp, 16));
      return _mm256_fmadd_ps(we, xe, _mm256_fmadd_ps(wo, xo, a));
    };
    for (std::size_t c = 0; c < cols; c += kDotStep) {
      for (std::size_t r = 0; r < R; ++r) {
        if constexpr (Prefetch != kNoPrefetch) prefetch_line(pf_at(c) + r * cols);
        const auto* wr = reinterpret_cast<const __m256i*>(w + r * cols + c);
        const __m256i w0 = _mm256_loadu_si256(wr), w1 = _mm256_loadu_si256(wr + 1);
        for (std::size_t v = 0; v < V; ++v) {
          const auto* xp = reinterpret_cast<const __m256i*>(x + v * x_stride + c);
          lo[r][v] = fma_pairs(w0, _mm256_loadu_si256(xp), lo[r][v]);
          hi[r][v] = fma_pairs(w1, _mm256_loadu_si256(xp + 1), hi[r][v]);
        }
      }
    }
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) {
        _mm256_store_ps(lanes, lo[r][v]);
        _mm256_store_ps(lanes + 8, hi[r][v]);
        y[v * y_stride + r] = sum_lanes16(lanes);
      }
  }
#endif
}

// Vectors per tile on path P: as many as the registers hold next to two rows' accumulators.
template <DotPath P>
inline constexpr std::size_t kDotTile = P == DotPath::avx512bf16 || P == DotPath::avx512 ? 4 : 2;

// The thread-local bf16 copy of x(n, cols) a call works on; tasks get the plain pointer.
inline const std::uint16_t* rounded_input(const float* x, std::size_t n, std::size_t cols) {
  thread_local AlignedBuffer<std::uint16_t> buffer;
  buffer.reserve_discard(n * cols);
  kernels::round_to_bf16(buffer.data(), x, n * cols);  // not detail:: (matmul.hpp's padded copy)
  return buffer.data();
}

// Whether path P runs on AMX tiles in this call: amx always (the caller made sure the process
// may), host where it may.
template <DotPath P>
inline bool on_tiles() noexcept {
  if constexpr (P == DotPath::amx) {
    static_assert(P == DotPath::amx && CALM_AMX_BF16_BUILT, "DotPath::amx: this build has no AMX-BF16 kernels");
    return true;
  } else if constexpr (P == DotPath::host) {
    return amx::bf16_usable();
  } else {
    return false;
  }
}
// The chain path P stands for when not on tiles.
template <DotPath P>
inline constexpr DotPath kChainPath = P == DotPath::host || P == DotPath::amx ? kHostDotPath : P;

}  // namespace detail

// For each segment, y(rows) = W(rows, cols) x(cols): one pass over every segment's rows, split
// statically over the pool's threads as matvec.hpp does.
template <DotPath P = DotPath::host>
void matvec_bf16_dot(std::span<const MatvecSegment<bf16>> segments, const float* x,
                     std::size_t cols, ThreadPool* pool = nullptr) {
  const std::uint16_t* xb = detail::rounded_input(x, 1, cols);  // one vector: already packed
  const auto bits = [](const MatvecSegment<bf16>& s) {
    return reinterpret_cast<const std::uint16_t*>(s.w);
  };
#if CALM_AMX_BF16_BUILT
  if (detail::on_tiles<P>()) return detail::amx_bf16::matvec(segments, bits, xb, cols, pool);
#endif
  constexpr DotPath C = detail::kChainPath<P>;
  std::size_t groups = 0;
  for (const MatvecSegment<bf16>& s : segments) groups += detail::row_groups(s.rows);
  detail::split_groups(groups, pool, [&](std::size_t g0, std::size_t g1) {
    const detail::FlushDenormals guard;
    detail::walk_segment_groups(
        segments, cols, g0, g1, bits,
        [&]<std::size_t R>(const MatvecSegment<bf16>& seg, std::size_t r, const std::uint16_t* next) {
          detail::dot_bf16_rows<C, R, 1, detail::kPrefetchOwn>(seg.y + r, 0, bits(seg) + r * cols, next, xb, 0,
                                               cols);
        });
  });
}
template <DotPath P = DotPath::host>
void matvec_bf16_dot(float* y, const bf16* w, const float* x, std::size_t rows, std::size_t cols,
                     ThreadPool* pool = nullptr) {
  const MatvecSegment<bf16> segment{y, w, rows};
  matvec_bf16_dot<P>(std::span<const MatvecSegment<bf16>>(&segment, 1), x, cols, pool);
}

// Y(n, rows) = X(n, cols) W^T, row t bitwise matvec_bf16_dot(x_t); every weight row is read from
// memory once for all n vectors (the later tiles find it in L1 and prefetch the next rows).
template <DotPath P = DotPath::host>
void matvec_batch_bf16_dot(float* y, const bf16* w, const float* x, std::size_t n,
                           std::size_t rows, std::size_t cols, ThreadPool* pool = nullptr) {
  if (n == 0 || rows == 0) return;
  const std::uint16_t* xb = detail::rounded_input(x, n, cols);
  const auto* wb = reinterpret_cast<const std::uint16_t*>(w);
#if CALM_AMX_BF16_BUILT
  if (detail::on_tiles<P>()) {
    const std::uint16_t* packed = n == 1 ? xb : detail::amx_bf16::pack(xb, cols, n, cols);
    return detail::amx_bf16::matmul(y, wb, packed, n, rows, cols, pool);
  }
#endif
  constexpr DotPath C = detail::kChainPath<P>;
  detail::split_groups(detail::row_groups(rows), pool, [&](std::size_t g0, std::size_t g1) {
    const detail::FlushDenormals guard;
    detail::walk_row_pairs(rows, g0, g1, [&]<std::size_t R>(std::size_t r) {
      const std::uint16_t* wr = wb + r * cols;
      detail::walk_tiles<detail::kDotTile<C>>(n, [&]<std::size_t V, bool First>(std::size_t t) {
        constexpr int prefetch = First ? detail::kPrefetchOwn : detail::kPrefetchNext;
        detail::dot_bf16_rows<C, R, V, prefetch>(y + t * rows + r, rows, wr, wr + R * cols,
                                                 xb + t * cols, cols, cols);
      });
    });
  });
}

// y(k) = row rows[k] of W x(cols), each bitwise matvec_bf16_dot's; one thread.
template <DotPath P = DotPath::host>
void matvec_gather_bf16_dot(float* y, const bf16* w, const float* x,
                            std::span<const std::uint32_t> rows, std::size_t cols) {
  const std::uint16_t* xb = detail::rounded_input(x, 1, cols);
  const auto* wb = reinterpret_cast<const std::uint16_t*>(w);
#if CALM_AMX_BF16_BUILT
  if (detail::on_tiles<P>()) return detail::amx_bf16::gather(y, wb, xb, rows, cols);
#endif
  constexpr DotPath C = detail::kChainPath<P>;
  const detail::FlushDenormals guard;
  for (std::size_t k = 0; k < rows.size(); ++k) {
    const std::uint16_t* row = wb + std::size_t{rows[k]} * cols;
    const std::uint16_t* next = k + 1 < rows.size() ? wb + std::size_t{rows[k + 1]} * cols : row + cols;
    detail::dot_bf16_rows<C, 1, 1, detail::kPrefetchOwn>(y + k, 0, row, next, xb, 0, cols);
  }
}

}  // namespace calm::kernels

#undef CALM_KERNEL
