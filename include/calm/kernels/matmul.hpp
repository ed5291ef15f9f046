// Y = X W^T for a block of tokens (prefill). X: (n, cols) f32; W: (rows, cols) f32/bf16/f16;
// Y: (n, rows) f32.
//
// Prefill is compute-bound: each weight is used n times. For bf16 weights on CPUs with
// AVX512-BF16 (Zen 4, Sapphire Rapids) the products run on vdpbf16ps, which multiplies bf16
// pairs and accumulates in f32 -- twice the FLOPs per instruction of an f32 FMA.
// NUMERICS: that path rounds the activations X to bf16 (round to nearest even) once per call,
// a relative error <= 2^-9 per product that the f32 paths do not have; prefill results then
// differ slightly from decode's matvec, which widens the weights and keeps X in f32. Without
// __AVX512BF16__ (and for f32/f16 weights) matmul widens weights to f32 and accumulates in f32
// like matvec (for f32/f16 weights in exactly matvec's order).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "calm/core/aligned.hpp"

#include "calm/core/dtype.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/kernels/load.hpp"
#include "calm/kernels/matvec.hpp"

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
// stream past it. f32 accumulation, in dot_rows' order.
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
    const float* src = x + t * cols;
    std::uint16_t* dst = out + t * x_stride;
    std::size_t c = 0;
    for (; c + 32 <= cols; c += 32) {
      const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + c + 16), _mm512_loadu_ps(src + c));
      _mm512_storeu_si512(dst + c, (__m512i)b);
    }
    for (; c < cols; ++c) dst[c] = to_bf16(src[c]).bits;
    for (; c < x_stride; ++c) dst[c] = 0;
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

#endif  // __AVX512BF16__

}  // namespace detail

// y(n, rows) = x(n, cols) · w(rows, cols)^T. Rows are split over the pool's threads; every
// output element is computed by one thread, so results do not depend on the thread count.
template <class Arch = xsimd::default_arch, class T>
void matmul(float* y, const T* w, const float* x, std::size_t n, std::size_t rows,
            std::size_t cols, ThreadPool* pool = nullptr) {
  const std::size_t groups = (rows + detail::kMatvecRows - 1) / detail::kMatvecRows;
  const std::size_t threads = pool == nullptr ? 1 : pool->size();
  const std::size_t n_tasks = threads < groups ? threads : groups;
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
  auto task = [&](std::size_t i) {
    const std::size_t g0 = groups * i / n_tasks, g1 = groups * (i + 1) / n_tasks;
    const std::size_t r0 = g0 * detail::kMatvecRows;
    const std::size_t r1 = g1 * detail::kMatvecRows < rows ? g1 * detail::kMatvecRows : rows;
#if defined(__AVX512BF16__)
    if constexpr (use_bf16_dot) {
      detail::matmul_rows_bf16(y, w, x_rounded, x_stride, n, r0, r1, rows, cols);
      return;
    }
#endif
    detail::matmul_rows_f32<Arch>(y, w, x, n, r0, r1, rows, cols);
  };
  if (pool == nullptr || n_tasks <= 1) {
    if (n_tasks == 1) task(0);
  } else {
    pool->parallel_for(n_tasks, task);
  }
}

}  // namespace calm::kernels
