// Y = X W^T for a block of tokens (prefill). X: (n, cols) f32; W: (rows, cols) f32/bf16/f16;
// Y: (n, rows) f32.
//
// Prefill is compute-bound: each weight is used n times. For bf16 weights on CPUs with
// AVX512-BF16 (Zen 4, Sapphire Rapids) the products run on vdpbf16ps, which multiplies bf16
// pairs and accumulates in f32 -- twice the FLOPs per instruction of an f32 FMA.
// NUMERICS: that path rounds the activations X to bf16 (round to nearest even) once per call,
// a relative error <= 2^-9 per product that the f32 paths do not have; prefill results then
// differ slightly from decode's matvec, which widens the weights and keeps X in f32. Without
// __AVX512BF16__ (and for f32/f16 weights) matmul widens weights to f32 exactly and accumulates
// in f32 like matvec, but in another order (register-blocked tiles on AVX2 and wider, see
// matmul_rows_tiled): prefill then differs from decode by f32 rounding only. Where the process
// may use AMX-BF16 (kernels/amx.hpp), bf16 weights take its tiles instead (kernels/bf16_amx.hpp: the
// same bf16 activations, the tile unit's own f32 accumulation; docs/design.md §16).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "calm/core/aligned.hpp"

#include "calm/core/dtype.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/kernels/amx.hpp"
#include "calm/kernels/bf16_amx.hpp"
#include "calm/kernels/bf16_dot.hpp"
#include "calm/kernels/load.hpp"
#include "calm/kernels/matvec.hpp"
#include "calm/kernels/row_groups.hpp"

namespace calm::kernels {

namespace scalar {

// y(n, rows) = x(n, cols) · w(rows, cols)^T
template <class T>
void matmul(float* y, const T* w, const float* x, std::size_t n, std::size_t rows,
            std::size_t cols, ThreadPool* /*pool*/ = nullptr) {
  for (std::size_t t = 0; t < n; ++t) matvec(y + t * rows, w, x + t * cols, rows, cols);
}

}  // namespace scalar

namespace detail {

// Rows [r0, r1) of Y for all n tokens; a group of 4 weight rows stays in L1 while the tokens
// stream past it. f32 accumulation, in dot_rows' order. The path for archs below AVX2, and for
// n < kMatmulTileMinTokens (too few tokens to amortise matmul_rows_tiled's widened copy of W).
template <class Arch, class T>
inline void matmul_rows_f32(float* y, const T* w, const float* x, std::size_t n, std::size_t r0,
                            std::size_t r1, std::size_t rows, std::size_t cols) noexcept {
  alignas(64) float tmp[kMatvecRows];
  std::size_t r = r0;
  for (; r + kMatvecRows <= r1; r += kMatvecRows) {
    for (std::size_t t = 0; t < n; ++t) {
      dot_rows<Arch, kMatvecRows>(tmp, w + r * cols, x + t * cols, cols);
      for (std::size_t k = 0; k < kMatvecRows; ++k) y[t * rows + r + k] = tmp[k];
    }
  }
  for (; r < r1; ++r) {
    for (std::size_t t = 0; t < n; ++t) dot_rows<Arch, 1>(y + t * rows + r, w + r * cols, x + t * cols, cols);
  }
}

// Register-blocked f32 path (AVX2 and wider; bf16 weights take it only without AVX512-BF16).
//
// matmul_rows_f32 calls dot_rows once per token, so every bf16/f16 weight is re-widened n
// times and every FMA waits on about one load and one convert. Here W is widened once per call
// and laid out for outer products, as in BLIS' 6x16 AVX2 kernel: a micro-panel of NR = 2
// batches of rows (16 on AVX2, 32 on AVX-512) x kMatmulTileCols columns is widened to f32 and
// transposed into thread-local scratch (column c's NR weights are contiguous), then a tile of
// MT = 6 tokens x NR rows keeps 12 accumulator batches in registers: per column, 2 aligned W
// loads and 6 broadcast X loads feed 12 FMAs. 12 accumulators + 2 W + 1 broadcast fit AVX2's
// 16 ymm registers, 12 independent chains cover the FMA latency (4 cycles x 2 ports), and each
// accumulator lane is one output, so there are no horizontal sums and no column tails. The
// micro-panel (256 columns x 16 rows x 4 bytes = 16 KiB on AVX2, 32 KiB on AVX-512) stays in
// L1 while all token tiles pass over it; the X block (n x 256 x 4 bytes, 64 KiB at n = 64)
// stays in L2. Widening and transposing cost ~1 op per weight, against n/8 FMAs per weight.
//
// NUMERICS: every output is a plain chain of fma over the columns in order (the accumulators
// are reloaded from y between column blocks), s = fma(w[c], x[c], s) for c = 0..cols-1, on
// archs with FMA (xsimd::fma is mul + add below them). That is not dot_rows' order, so prefill
// differs from decode's matvec by f32 rounding (~cols * 2^-24 relative to sum |w x|); tests
// bound it like that. The order depends only on cols, never on the row or token grouping, so
// results do not depend on the thread count, the batch width or a row's place in a tile. A call
// with fewer than kMatmulTileMinTokens tokens takes matmul_rows_f32 (dot_rows' order), so a
// token's result may differ in the last bits between a short and a long call.
inline constexpr std::size_t kMatmulTileTokens = 6;    // MT
inline constexpr std::size_t kMatmulTileCols = 256;    // columns per micro-panel
// Below this many tokens the widened copy does not pay for itself: matmul_rows_f32. Measured
// (bf16 2048x2048, 1 thread, AVX2 build on an AMD EPYC): dot_rows ~65 GFLOP/s at any n, the
// tiles 35 / 63 / 71 / 84 at n = 2 / 4 / 6 / 12: the crossover is at 5-8 tokens.
inline constexpr std::size_t kMatmulTileMinTokens = 8;

template <class Arch>
inline constexpr bool kHasTiledMatmul = kIsAvx2<Arch> || kIsAvx512<Arch>;

// Rows per micro-panel: two batches.
template <class Arch>
inline constexpr std::size_t kMatmulTileRows = 2 * fbatch<Arch>::size;

// wp[c * NR + j] = w[j * cols + c] widened, for j < nr, c < len; rows nr..NR-1 are zero.
template <class Arch, class T>
inline void pack_panel(float* wp, const T* w, std::size_t cols, std::size_t nr,
                       std::size_t len) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t N = B::size, NR = kMatmulTileRows<Arch>;
  std::size_t j = 0;
#if defined(__AVX2__)
  if constexpr (kIsAvx2<Arch> && !kIsAvx512<Arch>) {
    // 8 rows x 8 columns at a time through an 8x8 transpose in registers (24 shuffles per 64
    // weights instead of 64 scalar stores).
    for (; j + 8 <= nr; j += 8) {
      std::size_t c = 0;
      for (; c + 8 <= len; c += 8) {
        __m256 r[8];
        for (std::size_t i = 0; i < 8; ++i) r[i] = load_widened<Arch>(w + (j + i) * cols + c);
        const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
        const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
        const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
        const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
        const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        float* d = wp + c * NR + j;
        _mm256_store_ps(d + 0 * NR, _mm256_permute2f128_ps(u0, u4, 0x20));
        _mm256_store_ps(d + 1 * NR, _mm256_permute2f128_ps(u1, u5, 0x20));
        _mm256_store_ps(d + 2 * NR, _mm256_permute2f128_ps(u2, u6, 0x20));
        _mm256_store_ps(d + 3 * NR, _mm256_permute2f128_ps(u3, u7, 0x20));
        _mm256_store_ps(d + 4 * NR, _mm256_permute2f128_ps(u0, u4, 0x31));
        _mm256_store_ps(d + 5 * NR, _mm256_permute2f128_ps(u1, u5, 0x31));
        _mm256_store_ps(d + 6 * NR, _mm256_permute2f128_ps(u2, u6, 0x31));
        _mm256_store_ps(d + 7 * NR, _mm256_permute2f128_ps(u3, u7, 0x31));
      }
      for (; c < len; ++c)
        for (std::size_t i = 0; i < 8; ++i) wp[c * NR + j + i] = to_float(w[(j + i) * cols + c]);
    }
  }
#endif
  for (; j < nr; ++j) {
    const T* src = w + j * cols;
    std::size_t c = 0;
    alignas(64) float tmp[N];
    for (; c + N <= len; c += N) {
      load_widened<Arch>(src + c).store_aligned(tmp);
      for (std::size_t i = 0; i < N; ++i) wp[(c + i) * NR + j] = tmp[i];
    }
    for (; c < len; ++c) wp[c * NR + j] = to_float(src[c]);
  }
  for (; j < NR; ++j)
    for (std::size_t c = 0; c < len; ++c) wp[c * NR + j] = 0.0f;
}

// y[MT tokens, nr rows] = (accumulate ? y : 0) + x[MT, 0:len] wp^T, wp from pack_panel.
template <class Arch, std::size_t MT>
inline void outer_tile(float* y, std::size_t y_stride, std::size_t nr, const float* wp,
                       const float* x, std::size_t x_stride, std::size_t len,
                       bool accumulate) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t N = B::size, NR = kMatmulTileRows<Arch>;
  B acc[MT][2];
  alignas(64) float part[NR];  // a row tail (nr < NR) goes through here
  for (std::size_t t = 0; t < MT; ++t) {
    if (!accumulate) {
      acc[t][0] = acc[t][1] = B(0.0f);
    } else if (nr == NR) {
      acc[t][0] = B::load_unaligned(y + t * y_stride);
      acc[t][1] = B::load_unaligned(y + t * y_stride + N);
    } else {
      for (std::size_t j = 0; j < NR; ++j) part[j] = j < nr ? y[t * y_stride + j] : 0.0f;
      acc[t][0] = B::load_aligned(part);
      acc[t][1] = B::load_aligned(part + N);
    }
  }
  for (std::size_t c = 0; c < len; ++c) {
    const B w0 = B::load_aligned(wp + c * NR), w1 = B::load_aligned(wp + c * NR + N);
    for (std::size_t t = 0; t < MT; ++t) {
      const B xb(x[t * x_stride + c]);
      acc[t][0] = fused_fma<Arch>(w0, xb, acc[t][0]);
      acc[t][1] = fused_fma<Arch>(w1, xb, acc[t][1]);
    }
  }
  for (std::size_t t = 0; t < MT; ++t) {
    if (nr == NR) {
      acc[t][0].store_unaligned(y + t * y_stride);
      acc[t][1].store_unaligned(y + t * y_stride + N);
    } else {
      acc[t][0].store_aligned(part);
      acc[t][1].store_aligned(part + N);
      for (std::size_t j = 0; j < nr; ++j) y[t * y_stride + j] = part[j];
    }
  }
}

// Rows [r0, r1) of y(n, rows) through the outer-product tiles (see above); pack(wp, p0, c0, nr,
// len) fills a micro-panel as pack_panel does, for rows p0.. p0 + nr and columns c0.. c0 + len
// of W (the weights' format decides how: widened from f32/f16/bf16, or decoded from blocks).
template <class Arch, class Pack>
inline void matmul_rows_tiled_packed(float* y, Pack&& pack, const float* x, std::size_t n,
                                     std::size_t r0, std::size_t r1, std::size_t rows,
                                     std::size_t cols) {
  constexpr std::size_t NR = kMatmulTileRows<Arch>, MT = kMatmulTileTokens;
  static_assert(MT == 6, "the token-tail switch below covers 1..5");
  // The widened micro-panel, reused across calls; allocated on first use in each thread.
  thread_local AlignedBuffer<float> panel;
  panel.reserve_discard(NR * kMatmulTileCols);
  float* const wp = panel.data();
  for (std::size_t p0 = r0; p0 < r1; p0 += NR) {
    const std::size_t nr = r1 - p0 < NR ? r1 - p0 : NR;
    // One pass per column block, even when cols == 0 (it writes the zeros).
    for (std::size_t c0 = 0; c0 < cols || c0 == 0; c0 += kMatmulTileCols) {
      const std::size_t len = cols - c0 < kMatmulTileCols ? cols - c0 : kMatmulTileCols;
      pack(wp, p0, c0, nr, len);
      const bool accumulate = c0 > 0;
      const float* xc = x + c0;
      float* yp = y + p0;
      std::size_t t = 0;
      for (; t + MT <= n; t += MT)
        outer_tile<Arch, MT>(yp + t * rows, rows, nr, wp, xc + t * cols, cols, len, accumulate);
      switch (n - t) {
        case 5: outer_tile<Arch, 5>(yp + t * rows, rows, nr, wp, xc + t * cols, cols, len, accumulate); break;
        case 4: outer_tile<Arch, 4>(yp + t * rows, rows, nr, wp, xc + t * cols, cols, len, accumulate); break;
        case 3: outer_tile<Arch, 3>(yp + t * rows, rows, nr, wp, xc + t * cols, cols, len, accumulate); break;
        case 2: outer_tile<Arch, 2>(yp + t * rows, rows, nr, wp, xc + t * cols, cols, len, accumulate); break;
        case 1: outer_tile<Arch, 1>(yp + t * rows, rows, nr, wp, xc + t * cols, cols, len, accumulate); break;
        default: break;
      }
    }
  }
}

// Rows [r0, r1) of y(n, rows) through the outer-product tiles, W widened from T.
template <class Arch, class T>
inline void matmul_rows_tiled(float* y, const T* w, const float* x, std::size_t n,
                              std::size_t r0, std::size_t r1, std::size_t rows,
                              std::size_t cols) {
  const auto pack = [&](float* wp, std::size_t p0, std::size_t c0, std::size_t nr, std::size_t len) {
    pack_panel<Arch>(wp, w + p0 * cols + c0, cols, nr, len);
  };
  matmul_rows_tiled_packed<Arch>(y, pack, x, n, r0, r1, rows, cols);
}

#if defined(__AVX512BF16__)

// Column block: a 4-row slice of W (4 * 2048 * 2 bytes = 16 KiB) stays in L1 while all token
// tiles pass over it, and the bf16 copy of X for one block (n * 2048 * 2 bytes) stays in L2.
inline constexpr std::size_t kMatmulColBlock = 2048;

// Y[MT tokens, NR rows] (+)= X[MT, c0:c1] W[NR, c0:c1]^T with vdpbf16ps; 32 columns per step.
// x_bf16 rows are zero-padded to a multiple of 32 columns, so only the W tail needs a mask.
template <int MT, int NR>
inline void bf16_tile(float* y, std::size_t y_stride, const std::uint16_t* w, std::size_t w_stride,
                      const std::uint16_t* x, std::size_t x_stride, std::size_t c0,
                      std::size_t c1, bool accumulate) noexcept {
  __m512 acc[MT][NR];
  for (int t = 0; t < MT; ++t)
    for (int r = 0; r < NR; ++r) acc[t][r] = _mm512_setzero_ps();
  std::size_t c = c0;
  for (; c + 32 <= c1; c += 32) {
    __m512bh wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = (__m512bh)_mm512_loadu_si512(w + r * w_stride + c);
    for (int t = 0; t < MT; ++t) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + t * x_stride + c);
      for (int r = 0; r < NR; ++r) acc[t][r] = _mm512_dpbf16_ps(acc[t][r], xv, wv[r]);
    }
  }
  if (c < c1) {
    const __mmask32 mask = static_cast<__mmask32>((std::uint64_t{1} << (c1 - c)) - 1);
    __m512bh wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = (__m512bh)_mm512_maskz_loadu_epi16(mask, w + r * w_stride + c);
    for (int t = 0; t < MT; ++t) {
      const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(mask, x + t * x_stride + c);
      for (int r = 0; r < NR; ++r) acc[t][r] = _mm512_dpbf16_ps(acc[t][r], xv, wv[r]);
    }
  }
  for (int t = 0; t < MT; ++t) {
    for (int r = 0; r < NR; ++r) {
      const float s = _mm512_reduce_add_ps(acc[t][r]);
      y[t * y_stride + r] = accumulate ? y[t * y_stride + r] + s : s;
    }
  }
}

template <int MT>
inline void bf16_tile_rows(int nr, float* y, std::size_t y_stride, const std::uint16_t* w,
                           std::size_t w_stride, const std::uint16_t* x, std::size_t x_stride,
                           std::size_t c0, std::size_t c1, bool accumulate) noexcept {
  switch (nr) {
    case 4: bf16_tile<MT, 4>(y, y_stride, w, w_stride, x, x_stride, c0, c1, accumulate); break;
    case 3: bf16_tile<MT, 3>(y, y_stride, w, w_stride, x, x_stride, c0, c1, accumulate); break;
    case 2: bf16_tile<MT, 2>(y, y_stride, w, w_stride, x, x_stride, c0, c1, accumulate); break;
    default: bf16_tile<MT, 1>(y, y_stride, w, w_stride, x, x_stride, c0, c1, accumulate); break;
  }
}

// x (n, cols) f32 -> out (n, x_stride) bf16, round to nearest even, zero padding past cols.
inline void round_to_bf16(std::uint16_t* out, const float* x, std::size_t n, std::size_t cols,
                          std::size_t x_stride) noexcept {
  for (std::size_t t = 0; t < n; ++t) {
    std::uint16_t* dst = out + t * x_stride;
    kernels::round_to_bf16(dst, x + t * cols, cols);  // bf16_dot.hpp's rounding, 32 at a time
    std::fill(dst + cols, dst + x_stride, std::uint16_t{0});
  }
}

// Rows [r0, r1) of y(n, rows) from the bf16 copy of X.
inline void matmul_rows_bf16(float* y, const bf16* w, const std::uint16_t* x, std::size_t x_stride,
                             std::size_t n, std::size_t r0, std::size_t r1, std::size_t rows,
                             std::size_t cols) noexcept {
  const auto* wb = reinterpret_cast<const std::uint16_t*>(w);
  for (std::size_t c0 = 0; c0 < cols || c0 == 0; c0 += kMatmulColBlock) {
    const std::size_t c1 = c0 + kMatmulColBlock < cols ? c0 + kMatmulColBlock : cols;
    const bool accumulate = c0 > 0;
    for (std::size_t r = r0; r < r1; r += 4) {
      const int nr = static_cast<int>(r1 - r < 4 ? r1 - r : 4);
      std::size_t t = 0;
      for (; t + 4 <= n; t += 4) {
        bf16_tile_rows<4>(nr, y + t * rows + r, rows, wb + r * cols, cols, x + t * x_stride, x_stride, c0, c1, accumulate);
      }
      switch (n - t) {
        case 3: bf16_tile_rows<3>(nr, y + t * rows + r, rows, wb + r * cols, cols, x + t * x_stride, x_stride, c0, c1, accumulate); break;
        case 2: bf16_tile_rows<2>(nr, y + t * rows + r, rows, wb + r * cols, cols, x + t * x_stride, x_stride, c0, c1, accumulate); break;
        case 1: bf16_tile_rows<1>(nr, y + t * rows + r, rows, wb + r * cols, cols, x + t * x_stride, x_stride, c0, c1, accumulate); break;
        default: break;
      }
    }
    if (cols == 0) break;
  }
}

#if CALM_AMX_BF16_BUILT
// Prompts from this many tokens take the AMX-BF16 tiles (where the process may, cols % 32 == 0).
inline constexpr std::size_t kAmxBf16MinTokens = 8;
#endif

#endif  // __AVX512BF16__

}  // namespace detail

// y(n, rows) = x(n, cols) · w(rows, cols)^T. Rows are split over the pool's threads; every
// output element is computed by one thread, so results do not depend on the thread count.
template <class Arch = xsimd::default_arch, class T>
void matmul(float* y, const T* w, const float* x, std::size_t n, std::size_t rows,
            std::size_t cols, ThreadPool* pool = nullptr) {
#if defined(__AVX512BF16__)
  constexpr bool use_bf16_dot = std::is_same_v<T, bf16> && detail::kIsAvx512<Arch>;
  // Scratch for X in bf16, reused across calls (prefill calls matmul ~7 times per layer).
  thread_local AlignedBuffer<std::uint16_t> x_bf16;
  const std::size_t x_stride = (cols + 31) / 32 * 32;
  // A plain pointer for the tasks: inside a worker thread, x_bf16 names that thread's copy.
  const std::uint16_t* x_rounded = nullptr;
  if constexpr (use_bf16_dot) {
    x_bf16.reserve_discard(n * x_stride);
    detail::round_to_bf16(x_bf16.data(), x, n, cols, x_stride);
    x_rounded = x_bf16.data();
  }
#endif
#if CALM_AMX_BF16_BUILT
  if constexpr (use_bf16_dot) {
    if (n >= detail::kAmxBf16MinTokens && cols % 32 == 0 && rows > 0 && amx::bf16_usable())
      return detail::amx_bf16::matmul(y, reinterpret_cast<const std::uint16_t*>(w),
                                      detail::amx_bf16::pack(x_rounded, x_stride, n, cols), n, rows,
                                      cols, pool);
  }
#endif
  detail::split_rows(rows, pool, [&](std::size_t r0, std::size_t r1) {
#if defined(__AVX512BF16__)
    if constexpr (use_bf16_dot) {
      detail::matmul_rows_bf16(y, w, x_rounded, x_stride, n, r0, r1, rows, cols);
      return;
    }
#endif
    if constexpr (detail::kHasTiledMatmul<Arch>) {
      if (n >= detail::kMatmulTileMinTokens) {
        detail::matmul_rows_tiled<Arch>(y, w, x, n, r0, r1, rows, cols);
        return;
      }
    }
    detail::matmul_rows_f32<Arch>(y, w, x, n, r0, r1, rows, cols);
  });
}

}  // namespace calm::kernels
