// y = W x for one token (decode). W: (rows, cols) row-major in f32, bf16 or f16; x, y in f32.
//
// Memory-bound: every weight byte is read once, so the kernel's job is to keep loads in flight.
// Four rows are processed together (x loads are shared, four independent weight streams for
// the prefetchers) with two accumulators per row (eight FMA chains hide the FMA latency).
// Each row's sum is computed in the same order whatever the grouping or thread count, so y is
// bitwise identical for any ThreadPool size.
#pragma once

#include <cmath>
#include <cstddef>

#include <xsimd/xsimd.hpp>

#include "calm/core/dtype.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/kernels/load.hpp"

namespace calm::kernels {

namespace scalar {

// y(rows) = W(rows, cols) x(cols)
template <class T>
void matvec(float* y, const T* w, const float* x, std::size_t rows, std::size_t cols,
            ThreadPool* /*pool*/ = nullptr) {
  for (std::size_t r = 0; r < rows; ++r) {
    const T* row = w + r * cols;
    float s = 0.0f;
    for (std::size_t c = 0; c < cols; ++c) s += to_float(row[c]) * x[c];
    y[r] = s;
  }
}

}  // namespace scalar

namespace detail {

// Rows per group in matvec (and the unit of work handed to threads).
inline constexpr std::size_t kMatvecRows = 4;

// y(R) = W(R rows, stride cols) x(cols). The per-row arithmetic does not depend on R.
template <class Arch, std::size_t R, class T>
inline void dot_rows(float* y, const T* w, const float* x, std::size_t cols) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t N = B::size;
  B acc0[R], acc1[R];
  for (std::size_t r = 0; r < R; ++r) acc0[r] = acc1[r] = B(0.0f);
  std::size_t i = 0;
  for (; i + 2 * N <= cols; i += 2 * N) {
    const B x0 = B::load_unaligned(x + i), x1 = B::load_unaligned(x + i + N);
    for (std::size_t r = 0; r < R; ++r) {
      acc0[r] = xsimd::fma(load_widened<Arch>(w + r * cols + i), x0, acc0[r]);
      acc1[r] = xsimd::fma(load_widened<Arch>(w + r * cols + i + N), x1, acc1[r]);
    }
  }
  if (i + N <= cols) {
    const B x0 = B::load_unaligned(x + i);
    for (std::size_t r = 0; r < R; ++r) {
      acc0[r] = xsimd::fma(load_widened<Arch>(w + r * cols + i), x0, acc0[r]);
    }
    i += N;
  }
  for (std::size_t r = 0; r < R; ++r) {
    float s = xsimd::hadd(acc0[r] + acc1[r]);
    for (std::size_t c = i; c < cols; ++c) s = std::fma(to_float(w[r * cols + c]), x[c], s);
    y[r] = s;
  }
}

// y[r0, r1) for one token.
template <class Arch, class T>
inline void matvec_range(float* y, const T* w, const float* x, std::size_t r0, std::size_t r1,
                         std::size_t cols) noexcept {
  std::size_t r = r0;
  for (; r + kMatvecRows <= r1; r += kMatvecRows) {
    dot_rows<Arch, kMatvecRows>(y + r, w + r * cols, x, cols);
  }
  for (; r < r1; ++r) dot_rows<Arch, 1>(y + r, w + r * cols, x, cols);
}

}  // namespace detail

// y(rows) = W(rows, cols) x(cols). With a pool, row groups are split statically over threads.
template <class Arch = xsimd::default_arch, class T>
void matvec(float* y, const T* w, const float* x, std::size_t rows, std::size_t cols,
            ThreadPool* pool = nullptr) {
  if (pool == nullptr || pool->size() == 1) {
    detail::matvec_range<Arch>(y, w, x, 0, rows, cols);
    return;
  }
  // One task per thread, each a contiguous run of whole row groups: fewest calls, and
  // each thread streams one contiguous slab of W.
  const std::size_t groups = (rows + detail::kMatvecRows - 1) / detail::kMatvecRows;
  const std::size_t n_tasks = pool->size() < groups ? pool->size() : groups;
  pool->parallel_for(n_tasks, [&](std::size_t task) {
    const std::size_t g0 = groups * task / n_tasks, g1 = groups * (task + 1) / n_tasks;
    const std::size_t r0 = g0 * detail::kMatvecRows;
    const std::size_t r1 = g1 * detail::kMatvecRows < rows ? g1 * detail::kMatvecRows : rows;
    detail::matvec_range<Arch>(y, w, x, r0, r1, cols);
  });
}

}  // namespace calm::kernels
