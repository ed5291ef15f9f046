// y = W x for one token (decode). W: (rows, cols) row-major in f32, bf16 or f16; x, y in f32.
//
// Memory-bound: every weight byte is read once, so the kernel's job is to keep loads in flight.
// Four rows are processed together (x loads are shared, four independent weight streams for
// the prefetchers) with two accumulators per row (eight FMA chains hide the FMA latency).
// bf16 on AVX-512 widens without shuffles (see dot_rows_bf16_split).
// Each row's sum is computed in the same order whatever the grouping or thread count, so y is
// bitwise identical for any ThreadPool size.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "calm/core/aligned.hpp"
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

// Software prefetch 2 KiB ahead in each row stream. Measured on Zen 4 (bf16 4096x4096, 1
// thread): 0.62 -> 0.75 of triad bandwidth; the hardware prefetchers alone ramp up too slowly
// on four short (8 KiB) row streams that restart every four rows. 1 KiB and 4-32 KiB were
// worse. Prefetching past the end of W is harmless (prefetches never fault).
inline constexpr std::size_t kPrefetchBytes = 2048;

inline void prefetch_ahead(const void* p) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_prefetch(static_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T0);
#else
  __builtin_prefetch(static_cast<const char*>(p) + kPrefetchBytes);
#endif
}

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
      prefetch_ahead(w + r * cols + i);
      if constexpr (2 * N * sizeof(T) > 64) prefetch_ahead(w + r * cols + i + N);  // 2nd line
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

#if defined(__AVX512F__)

// bf16 rows on AVX-512 without widening shuffles: a 32-bit load of two bf16s holds the even
// column in its low half and the odd column in its high half, so `<< 16` gives the even
// columns as f32 and `& 0xFFFF0000` the odd ones (exact, 2 cheap integer ops per 32 weights
// instead of 2 vpmovzxwd shuffles). x is de-interleaved once per call to match:
// x_split[32b + k] = x[32b + 2k], x_split[32b + 16 + k] = x[32b + 2k + 1], for whole blocks.
inline void split_even_odd(float* x_split, const float* x, std::size_t cols) noexcept {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (std::size_t c = 0; c + 32 <= cols; c += 32) {
    const __m512 a = _mm512_loadu_ps(x + c), b = _mm512_loadu_ps(x + c + 16);
    _mm512_storeu_ps(x_split + c, _mm512_permutex2var_ps(a, even, b));
    _mm512_storeu_ps(x_split + c + 16, _mm512_permutex2var_ps(a, odd, b));
  }
}

// y(R) = W(R rows of bf16, stride cols) x(cols), x_split from split_even_odd. The per-row
// arithmetic does not depend on R (two accumulators per row: even and odd columns).
template <std::size_t R>
inline void dot_rows_bf16_split(float* y, const bf16* w, const float* x_split, const float* x,
                                std::size_t cols) noexcept {
  const auto* wb = reinterpret_cast<const std::uint16_t*>(w);
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m512 acc_even[R], acc_odd[R];
  for (std::size_t r = 0; r < R; ++r) acc_even[r] = acc_odd[r] = _mm512_setzero_ps();
  std::size_t c = 0;
  for (; c + 32 <= cols; c += 32) {
    const __m512 xe = _mm512_loadu_ps(x_split + c), xo = _mm512_loadu_ps(x_split + c + 16);
    for (std::size_t r = 0; r < R; ++r) {
      prefetch_ahead(wb + r * cols + c);
      const __m512i pairs = _mm512_loadu_si512(wb + r * cols + c);
      acc_even[r] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16)), xe, acc_even[r]);
      acc_odd[r] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(pairs, high)), xo, acc_odd[r]);
    }
  }
  for (std::size_t r = 0; r < R; ++r) {
    float s = _mm512_reduce_add_ps(_mm512_add_ps(acc_even[r], acc_odd[r]));
    for (std::size_t k = c; k < cols; ++k) s = std::fma(to_float(w[r * cols + k]), x[k], s);
    y[r] = s;
  }
}

#endif  // __AVX512F__

// Whether matvec<Arch, T> uses dot_rows_bf16_split (and needs x de-interleaved).
template <class Arch, class T>
inline constexpr bool kSplitBf16 =
#if defined(__AVX512F__)
    std::is_same_v<T, bf16> && kIsAvx512<Arch>;
#else
    false;
#endif

// y[r0, r1) for one token; x_split only for kSplitBf16.
template <class Arch, class T>
inline void matvec_range(float* y, const T* w, const float* x, const float* x_split,
                         std::size_t r0, std::size_t r1, std::size_t cols) noexcept {
#if defined(__AVX512F__)
  if constexpr (kSplitBf16<Arch, T>) {
    std::size_t r = r0;
    for (; r + kMatvecRows <= r1; r += kMatvecRows) {
      dot_rows_bf16_split<kMatvecRows>(y + r, w + r * cols, x_split, x, cols);
    }
    for (; r < r1; ++r) dot_rows_bf16_split<1>(y + r, w + r * cols, x_split, x, cols);
    return;
  }
#endif
  (void)x_split;
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
  const float* x_split = nullptr;
#if defined(__AVX512F__)
  if constexpr (detail::kSplitBf16<Arch, T>) {
    // Reused across calls; tasks get the plain pointer (in a worker, the name would refer to
    // that thread's own, empty, buffer).
    thread_local AlignedBuffer<float> buffer;
    buffer.reserve_discard(cols);
    detail::split_even_odd(buffer.data(), x, cols);
    x_split = buffer.data();
  }
#endif
  if (pool == nullptr || pool->size() == 1) {
    detail::matvec_range<Arch>(y, w, x, x_split, 0, rows, cols);
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
    detail::matvec_range<Arch>(y, w, x, x_split, r0, r1, cols);
  });
}

}  // namespace calm::kernels
