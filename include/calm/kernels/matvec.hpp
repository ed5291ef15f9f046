// y = W x for one token (decode). W: (rows, cols) row-major in f32, bf16 or f16; x, y in f32.
//
// Memory-bound: every weight byte is read once, so the kernel's job is to keep loads in flight.
// Four rows are processed together (x loads are shared, four independent weight streams for
// the prefetchers) with two accumulators per row (eight FMA chains hide the FMA latency).
// bf16 on AVX-512 widens without shuffles (see dot_rows_bf16_split).
// Each row's sum is computed in the same order whatever the grouping or thread count, so y is
// bitwise identical for any ThreadPool size.
//
// matvec_batch: Y(n, rows) = X(n, cols) W^T for a few tokens (speculative verification), each
// y_t bitwise equal to matvec(W, x_t): the same per-row arithmetic, with each weight chunk loaded
// (and widened) once for several vectors and the row pair reused from L1 for the rest, so the
// weights stream from memory once for all n.
//
// matvec_gather: y_k = W[rows_k] x for a few listed rows of a large matrix (the exit check over
// a candidate set), each bitwise what matvec gives for that row.
//
// Several matrices that multiply the same x (q/k/v, gate/up) can go through one call as
// segments: one pool wake-up, one x de-interleave, and the prefetch stream of each row group
// runs on into the next group's rows (the next segment's, at a segment's end), so the streams
// never restart cold between row groups or matrices.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "calm/core/aligned.hpp"
#include "calm/core/dtype.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/kernels/load.hpp"
#include "calm/kernels/row_groups.hpp"

// On a dot-product kernel whose per-chunk step is a lambda: the step always inlined. Called out
// of line (as GCC 12 may decide once the kernel is inlined into a driver's lambdas) it passes the
// accumulators through memory on every chunk: bf16 matvec_batch over 3 vectors ran at half speed.
// (Not always_inline on the lambda itself: GCC 12 then drops its `if constexpr (Prefetch)`
// branch -- every prefetch of the kernel -- in a template.)
#define CALM_KERNEL [[gnu::flatten]]

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

// One matrix of a segmented matvec: y(rows) = W(rows, cols) x; all segments of a call share
// x and cols.
template <class T>
struct MatvecSegment {
  float* y;
  const T* w;
  std::size_t rows;
};

namespace scalar {

template <class T>
void matvec(std::span<const MatvecSegment<T>> segments, const float* x, std::size_t cols,
            ThreadPool* /*pool*/ = nullptr) {
  for (const MatvecSegment<T>& s : segments) matvec(s.y, s.w, x, s.rows, cols);
}

}  // namespace scalar

namespace detail {

// Software prefetch 2 KiB ahead in each row stream. Measured on Zen 4 (bf16 4096x4096, 1
// thread): 0.62 -> 0.75 of triad bandwidth; the hardware prefetchers alone ramp up too slowly
// on four short (8 KiB) row streams that restart every four rows. 1 KiB and 4-32 KiB were
// worse. Prefetching past the end of W is harmless (prefetches never fault).
inline constexpr std::size_t kPrefetchBytes = 2048;

inline void prefetch_line(const void* p) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0);
#else
  __builtin_prefetch(p);
#endif
}

// Where each row's prefetch stream runs once it is within kPrefetchBytes of the row's end: the
// same row of the next group (rows of a group are cols apart in both). Column c of a row
// prefetches own + c + ahead while that is inside the row, then next + (c + ahead - cols).
template <class T>
struct PrefetchPlan {
  static constexpr std::size_t ahead = kPrefetchBytes / sizeof(T);  // in elements
  std::size_t own_end;  // columns below this prefetch in their own row

  explicit PrefetchPlan(std::size_t cols) noexcept : own_end(cols > ahead ? cols - ahead : 0) {}
};

// y(R) = W(R rows, stride cols) x(cols); next: the first row of the group that follows (for
// the prefetch stream only). The per-row arithmetic does not depend on R or next.
template <class Arch, std::size_t R, class T>
CALM_KERNEL inline void dot_rows(float* y, const T* w, const T* next, const float* x,
                     std::size_t cols) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t N = B::size;
  constexpr bool kTwoLines = 2 * N * sizeof(T) > 64;
  const PrefetchPlan<T> plan(cols);
  B acc0[R], acc1[R];
  for (std::size_t r = 0; r < R; ++r) acc0[r] = acc1[r] = B(0.0f);
  const auto step = [&](std::size_t i, const B& x0, const B& x1, const T* pf) {
    for (std::size_t r = 0; r < R; ++r) {
      prefetch_line(pf + r * cols);
      if constexpr (kTwoLines) prefetch_line(pf + r * cols + N);
      acc0[r] = xsimd::fma(load_widened<Arch>(w + r * cols + i), x0, acc0[r]);
      acc1[r] = xsimd::fma(load_widened<Arch>(w + r * cols + i + N), x1, acc1[r]);
    }
  };
  std::size_t i = 0;
  for (; i + 2 * N <= cols && i < plan.own_end; i += 2 * N) {
    step(i, B::load_unaligned(x + i), B::load_unaligned(x + i + N), w + i + plan.ahead);
  }
  for (; i + 2 * N <= cols; i += 2 * N) {
    step(i, B::load_unaligned(x + i), B::load_unaligned(x + i + N), next + (i + plan.ahead - cols));
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

// The same without a following group (matmul): the stream runs on past the group's end.
template <class Arch, std::size_t R, class T>
inline void dot_rows(float* y, const T* w, const float* x, std::size_t cols) noexcept {
  dot_rows<Arch, R>(y, w, w + R * cols, x, cols);
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

// y(R) = W(R rows of bf16, stride cols) x(cols), x_split from split_even_odd; next as in
// dot_rows. The per-row arithmetic does not depend on R or next (two accumulators per row:
// even and odd columns).
template <std::size_t R>
CALM_KERNEL inline void dot_rows_bf16_split(float* y, const bf16* w, const bf16* next, const float* x_split,
                                const float* x, std::size_t cols) noexcept {
  const auto* wb = reinterpret_cast<const std::uint16_t*>(w);
  const auto* nb = reinterpret_cast<const std::uint16_t*>(next);
  const PrefetchPlan<bf16> plan(cols);
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m512 acc_even[R], acc_odd[R];
  for (std::size_t r = 0; r < R; ++r) acc_even[r] = acc_odd[r] = _mm512_setzero_ps();
  const auto step = [&](std::size_t c, const std::uint16_t* pf) {
    const __m512 xe = _mm512_loadu_ps(x_split + c), xo = _mm512_loadu_ps(x_split + c + 16);
    for (std::size_t r = 0; r < R; ++r) {
      prefetch_line(pf + r * cols);
      const __m512i pairs = _mm512_loadu_si512(wb + r * cols + c);
      acc_even[r] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16)), xe, acc_even[r]);
      acc_odd[r] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(pairs, high)), xo, acc_odd[r]);
    }
  };
  std::size_t c = 0;
  for (; c + 32 <= cols && c < plan.own_end; c += 32) step(c, wb + c + plan.ahead);
  for (; c + 32 <= cols; c += 32) step(c, nb + (c + plan.ahead - cols));
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

template <class Arch, std::size_t R, class T>
inline void dot_rows_any(float* y, const T* w, const T* next, const float* x,
                         const float* x_split, std::size_t cols) noexcept {
#if defined(__AVX512F__)
  if constexpr (kSplitBf16<Arch, T>) {
    dot_rows_bf16_split<R>(y, w, next, x_split, x, cols);
    return;
  }
#endif
  (void)x_split;
  dot_rows<Arch, R>(y, w, next, x, cols);
}

// x(cols) de-interleaved for dot_rows_bf16_split when matvec<Arch, T> uses it, else nullptr.
// The buffer is reused across calls; tasks get the plain pointer (in a worker, the name would
// refer to that thread's own, empty, buffer).
template <class Arch, class T>
inline const float* split_if_needed(const float* x, std::size_t cols) {
#if defined(__AVX512F__)
  if constexpr (kSplitBf16<Arch, T>) {
    thread_local AlignedBuffer<float> buffer;
    buffer.reserve_discard(cols);
    split_even_odd(buffer.data(), x, cols);
    return buffer.data();
  }
#endif
  (void)x;
  (void)cols;
  return nullptr;
}

// Row groups [g0, g1) of the segments' concatenated groups (row_groups.hpp's walk); x_split only
// for kSplitBf16.
template <class Arch, class T>
inline void matvec_groups(std::span<const MatvecSegment<T>> segments, const float* x,
                          const float* x_split, std::size_t cols, std::size_t g0,
                          std::size_t g1) noexcept {
  walk_segment_groups(segments, cols, g0, g1, [](const MatvecSegment<T>& s) { return s.w; },
                      [&]<std::size_t R>(const MatvecSegment<T>& seg, std::size_t r, const T* next) {
                        dot_rows_any<Arch, R>(seg.y + r, seg.w + r * cols, next, x, x_split, cols);
                      });
}

}  // namespace detail

// For each segment, y(rows) = W(rows, cols) x(cols): one pass over all segments' rows. With a
// pool, the concatenated row groups are split statically into one contiguous run per thread.
template <class Arch = xsimd::default_arch, class T>
void matvec(std::span<const MatvecSegment<T>> segments, const float* x, std::size_t cols,
            ThreadPool* pool = nullptr) {
  const float* x_split = detail::split_if_needed<Arch, T>(x, cols);
  std::size_t groups = 0;
  for (const MatvecSegment<T>& s : segments) groups += detail::row_groups(s.rows);
  detail::split_groups(groups, pool, [&](std::size_t g0, std::size_t g1) {
    detail::matvec_groups<Arch>(segments, x, x_split, cols, g0, g1);
  });
}

// y(rows) = W(rows, cols) x(cols).
template <class Arch = xsimd::default_arch, class T>
void matvec(float* y, const T* w, const float* x, std::size_t rows, std::size_t cols,
            ThreadPool* pool = nullptr) {
  const MatvecSegment<T> segment{y, w, rows};
  matvec<Arch>(std::span<const MatvecSegment<T>>(&segment, 1), x, cols, pool);
}

namespace scalar {

// Y(n, rows) = X(n, cols) W^T, one matvec per token.
template <class T>
void matvec_batch(float* y, const T* w, const float* x, std::size_t n, std::size_t rows,
                  std::size_t cols, ThreadPool* /*pool*/ = nullptr) {
  for (std::size_t t = 0; t < n; ++t) matvec(y + t * rows, w, x + t * cols, rows, cols);
}

}  // namespace scalar

namespace detail {

// y[v * y_stride + r] = W(R rows) . x_v for V vectors x_v = x + v * x_stride: per (row, vector)
// exactly dot_rows' arithmetic (two accumulators over alternating chunks, the same tail and
// reduction), so the bits do not depend on R or V. Prefetch: only the first vector tile of a
// row group streams ahead; the other tiles find the rows in L1.
template <class Arch, std::size_t R, std::size_t V, bool Prefetch, class T>
CALM_KERNEL inline void dot_rows_multi(float* y, std::size_t y_stride, const T* w, const T* next,
                           const float* x, std::size_t x_stride, std::size_t cols) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t N = B::size;
  constexpr bool kTwoLines = 2 * N * sizeof(T) > 64;
  const PrefetchPlan<T> plan(cols);
  B acc0[R][V], acc1[R][V];
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) acc0[r][v] = acc1[r][v] = B(0.0f);
  const auto step = [&](std::size_t i, const T* pf) {
    B x0[V], x1[V];
    for (std::size_t v = 0; v < V; ++v) {
      x0[v] = B::load_unaligned(x + v * x_stride + i);
      x1[v] = B::load_unaligned(x + v * x_stride + i + N);
    }
    for (std::size_t r = 0; r < R; ++r) {
      if constexpr (Prefetch) {
        prefetch_line(pf + r * cols);
        if constexpr (kTwoLines) prefetch_line(pf + r * cols + N);
      }
      const B w0 = load_widened<Arch>(w + r * cols + i);
      const B w1 = load_widened<Arch>(w + r * cols + i + N);
      for (std::size_t v = 0; v < V; ++v) {
        acc0[r][v] = xsimd::fma(w0, x0[v], acc0[r][v]);
        acc1[r][v] = xsimd::fma(w1, x1[v], acc1[r][v]);
      }
    }
  };
  std::size_t i = 0;
  for (; i + 2 * N <= cols && i < plan.own_end; i += 2 * N) step(i, w + i + plan.ahead);
  for (; i + 2 * N <= cols; i += 2 * N) step(i, next + (i + plan.ahead - cols));
  if (i + N <= cols) {
    for (std::size_t r = 0; r < R; ++r) {
      const B w0 = load_widened<Arch>(w + r * cols + i);
      for (std::size_t v = 0; v < V; ++v)
        acc0[r][v] = xsimd::fma(w0, B::load_unaligned(x + v * x_stride + i), acc0[r][v]);
    }
    i += N;
  }
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) {
      const float* xv = x + v * x_stride;
      float s = xsimd::hadd(acc0[r][v] + acc1[r][v]);
      for (std::size_t c = i; c < cols; ++c) s = std::fma(to_float(w[r * cols + c]), xv[c], s);
      y[v * y_stride + r] = s;
    }
}

#if defined(__AVX512F__)

// dot_rows_bf16_split for V vectors (x_split_v = x_split + v * x_stride): the same per-(row,
// vector) arithmetic (even and odd column accumulators).
template <std::size_t R, std::size_t V, bool Prefetch>
CALM_KERNEL inline void dot_rows_bf16_split_multi(float* y, std::size_t y_stride, const bf16* w,
                                      const bf16* next, const float* x_split, const float* x,
                                      std::size_t x_stride, std::size_t cols) noexcept {
  const auto* wb = reinterpret_cast<const std::uint16_t*>(w);
  const auto* nb = reinterpret_cast<const std::uint16_t*>(next);
  const PrefetchPlan<bf16> plan(cols);
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m512 acc_even[R][V], acc_odd[R][V];
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) acc_even[r][v] = acc_odd[r][v] = _mm512_setzero_ps();
  const auto step = [&](std::size_t c, const std::uint16_t* pf) {
    __m512 xe[V], xo[V];
    for (std::size_t v = 0; v < V; ++v) {
      xe[v] = _mm512_loadu_ps(x_split + v * x_stride + c);
      xo[v] = _mm512_loadu_ps(x_split + v * x_stride + c + 16);
    }
    for (std::size_t r = 0; r < R; ++r) {
      if constexpr (Prefetch) prefetch_line(pf + r * cols);
      const __m512i pairs = _mm512_loadu_si512(wb + r * cols + c);
      const __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
      const __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(pairs, high));
      for (std::size_t v = 0; v < V; ++v) {
        acc_even[r][v] = _mm512_fmadd_ps(we, xe[v], acc_even[r][v]);
        acc_odd[r][v] = _mm512_fmadd_ps(wo, xo[v], acc_odd[r][v]);
      }
    }
  };
  std::size_t c = 0;
  for (; c + 32 <= cols && c < plan.own_end; c += 32) step(c, wb + c + plan.ahead);
  for (; c + 32 <= cols; c += 32) step(c, nb + (c + plan.ahead - cols));
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) {
      const float* xv = x + v * x_stride;
      float s = _mm512_reduce_add_ps(_mm512_add_ps(acc_even[r][v], acc_odd[r][v]));
      for (std::size_t k = c; k < cols; ++k) s = std::fma(to_float(w[r * cols + k]), xv[k], s);
      y[v * y_stride + r] = s;
    }
}

#endif  // __AVX512F__

template <class Arch, std::size_t R, std::size_t V, bool Prefetch, class T>
inline void dot_rows_multi_any(float* y, std::size_t rows, const T* w, const T* next,
                               const float* x, const float* x_split, std::size_t cols) noexcept {
#if defined(__AVX512F__)
  if constexpr (kSplitBf16<Arch, T>) {
    dot_rows_bf16_split_multi<R, V, Prefetch>(y, rows, w, next, x_split, x, cols, cols);
    return;
  }
#endif
  (void)x_split;
  dot_rows_multi<Arch, R, V, Prefetch>(y, rows, w, next, x, cols, cols);
}

// x_split + offset, where there is an x_split (null when the path needs none).
inline const float* split_at(const float* x_split, std::size_t offset) noexcept {
  return x_split ? x_split + offset : nullptr;
}

// R rows (at w; their outputs at y, stride rows per vector) for all n vectors, in tiles.
template <class Arch, std::size_t R, class T>
inline void rows_all_vectors(float* y, std::size_t rows, const T* w, const T* next,
                             const float* x, const float* x_split, std::size_t n,
                             std::size_t cols) noexcept {
  walk_vector_tiles<Arch>(n, [&]<std::size_t V, bool Prefetch>(std::size_t t) {
    dot_rows_multi_any<Arch, R, V, Prefetch>(y + t * rows, rows, w, next, x + t * cols,
                                             split_at(x_split, t * cols), cols);
  });
}

// Row groups [g0, g1) for all n vectors, the rows of a group two at a time.
template <class Arch, class T>
inline void matvec_batch_groups(float* y, const T* w, const float* x, const float* x_split,
                                std::size_t n, std::size_t rows, std::size_t cols,
                                std::size_t g0, std::size_t g1) noexcept {
  walk_row_pairs(rows, g0, g1, [&]<std::size_t R>(std::size_t r) {
    const T* wr = w + r * cols;
    rows_all_vectors<Arch, R>(y + r, rows, wr, wr + R * cols, x, x_split, n, cols);
  });
}

}  // namespace detail

// Y(n, rows) = X(n, cols) W^T, row t of Y bitwise equal to matvec(W, x_t) for any n, grouping
// and thread count. With a pool, row groups are split statically as in matvec.
template <class Arch = xsimd::default_arch, class T>
void matvec_batch(float* y, const T* w, const float* x, std::size_t n, std::size_t rows,
                  std::size_t cols, ThreadPool* pool = nullptr) {
  if (n == 0 || rows == 0) return;
  const float* x_split = nullptr;
#if defined(__AVX512F__)
  if constexpr (detail::kSplitBf16<Arch, T>) {
    thread_local AlignedBuffer<float> buffer;  // as in matvec: tasks get the plain pointer
    buffer.reserve_discard(n * cols);
    for (std::size_t t = 0; t < n; ++t)
      detail::split_even_odd(buffer.data() + t * cols, x + t * cols, cols);
    x_split = buffer.data();
  }
#endif
  detail::split_groups(detail::row_groups(rows), pool, [&](std::size_t g0, std::size_t g1) {
    detail::matvec_batch_groups<Arch>(y, w, x, x_split, n, rows, cols, g0, g1);
  });
}

// y(k) = W[rows[k]] x(cols) for the k listed rows (any order, repeats allowed), each bitwise
// equal to row rows[k] of matvec(W, x): the same per-row arithmetic, one row at a time, the
// prefetch stream running into the next listed row. One thread: a few rows of a large matrix.
template <class Arch = xsimd::default_arch, class T>
void matvec_gather(float* y, const T* w, const float* x, std::span<const std::uint32_t> rows,
                   std::size_t cols) {
  const float* x_split = detail::split_if_needed<Arch, T>(x, cols);
  for (std::size_t k = 0; k < rows.size(); ++k) {
    const T* row = w + std::size_t{rows[k]} * cols;
    const T* next = k + 1 < rows.size() ? w + std::size_t{rows[k + 1]} * cols : row + cols;
    detail::dot_rows_any<Arch, 1>(y + k, row, next, x, x_split, cols);
  }
}

namespace scalar {

// y(k) = W[rows[k]] x(cols).
template <class T>
void matvec_gather(float* y, const T* w, const float* x, std::span<const std::uint32_t> rows,
                   std::size_t cols) {
  for (std::size_t k = 0; k < rows.size(); ++k)
    matvec(y + k, w + std::size_t{rows[k]} * cols, x, 1, cols);
}

}  // namespace scalar

}  // namespace calm::kernels

#undef CALM_KERNEL
