// Y = X W^T for a block of tokens (prefill). X: (n, cols) f32; W: (rows, cols) f32/bf16/f16;
// Y: (n, rows) f32.
#pragma once

#include <cstddef>

#include <xsimd/xsimd.hpp>

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
// stream past it. Each element is computed as matvec computes it (same order).
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

}  // namespace detail

// y(n, rows) = x(n, cols) · w(rows, cols)^T. Rows are split over the pool's threads; every
// output element is computed by one thread, so results do not depend on the thread count.
template <class Arch = xsimd::default_arch, class T>
void matmul(float* y, const T* w, const float* x, std::size_t n, std::size_t rows,
            std::size_t cols, ThreadPool* pool = nullptr) {
  const std::size_t groups = (rows + detail::kMatvecRows - 1) / detail::kMatvecRows;
  const std::size_t threads = pool == nullptr ? 1 : pool->size();
  const std::size_t n_tasks = threads < groups ? threads : groups;
  auto task = [&](std::size_t i) {
    const std::size_t g0 = groups * i / n_tasks, g1 = groups * (i + 1) / n_tasks;
    const std::size_t r0 = g0 * detail::kMatvecRows;
    const std::size_t r1 = g1 * detail::kMatvecRows < rows ? g1 * detail::kMatvecRows : rows;
    detail::matmul_rows_f32<Arch>(y, w, x, n, r0, r1, rows, cols);
  };
  if (pool == nullptr || n_tasks <= 1) {
    if (n_tasks == 1) task(0);
  } else {
    pool->parallel_for(n_tasks, task);
  }
}

}  // namespace calm::kernels
