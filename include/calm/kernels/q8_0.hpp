// q8_0 weights: blocks of 32 int8 quants with one scale per block, the numerics of GGUF's Q8_0
// (not its file layout). For a block w[0..32): d = max|w| / 127, q_j = round(w_j / d) (computed
// as w_j * (1/d), as GGUF does), and the scale kept is d rounded to f16 (below f16's normal
// range, to f16's precision with f32's exponent: detail::block_scale); a block of zeros has
// d = 0 and q = 0. A weight then reads as d * q_j.
//
// Layout of a (rows, cols) matrix, cols a multiple of 32 (kQ8Block):
//   quants  (rows, cols)        int8, row-major: each row's quants contiguous
//   scales  (rows, cols / 32)   f32, row-major: scale b of row r at scales[r * cols/32 + b]
// The scales are held as f32 (each with f16's 11 significant bits) so the kernels broadcast them with a
// plain load instead of converting f16 per block; that costs 4 instead of 2 bytes per 32
// weights (1.125 instead of 1.0625 bytes per weight). Quants and scales are two separate arrays
// so that quants stay 32-byte blocks that SIMD loads take whole.
//
// matvec, y = W x with x in f32: each block's products are summed in f32 and scaled once,
//   y_r = sum_b d_b * (sum_j q_bj * x_bj),
// which is exact per block up to f32 rounding (no quantization of x). The int8 quants are
// widened to f32 (vpmovsxbd + vcvtdq2ps) and multiplied with FMAs; docs/design.md §13 says
// why this is the path shipped rather than quantizing x to int8 for integer dot products.
// The drivers -- 4 rows at a time, software prefetch 2 KiB ahead in each row's quant stream (and
// in the scale stream), a static split of whole row groups over threads -- are those every
// block format shares (kernels/blocks.hpp, with Q8Codec). Each row's sum is computed in the
// same order whatever the grouping, the thread count or the number of vectors (matvec_batch),
// so the results are bitwise independent of all three.
//
// matmul_q8_0, Y = X W^T for a block of tokens (prefill), is compute-bound: where the process may
// use AMX-BF16, blocks.hpp's matmul_blocks_amx (W dequantized to bf16 32 rows at a time, on
// tiles); else with AVX-512 BF16 it dequantizes panels of W to bf16 (d * q rounded to nearest
// even, a relative error <= 2^-9 per weight on top of q8_0's) and runs matmul.hpp's vdpbf16ps
// tiles on them, which round X to bf16 as the bf16 prefill does; elsewhere blocks.hpp's f32
// panels (matmul_blocks), and for fewer than 8 tokens matvec_batch_q8_0.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include <xsimd/xsimd.hpp>

#include "calm/core/aligned.hpp"
#include "calm/core/dtype.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/kernels/blocks.hpp"
#include "calm/kernels/load.hpp"
#include "calm/kernels/matmul.hpp"
#include "calm/kernels/matvec.hpp"

namespace calm::kernels {

// Weights per q8_0 block.
inline constexpr std::size_t kQ8Block = kBlockWeights;

namespace scalar {

// Quantizes one row w(cols), cols % kQ8Block == 0, into q(cols) and d(cols / kQ8Block).
// Returns false, leaving q and d unspecified, if a weight is not finite or a block's scale
// overflows f16 (max|w| > 127 * 65504); no trained model's weights come near.
template <class T>
bool quantize_row_q8_0(std::int8_t* q, float* d, const T* w, std::size_t cols) noexcept {
  for (std::size_t b = 0; b * kQ8Block < cols; ++b) {
    const T* wb = w + b * kQ8Block;
    float amax = 0.0f;
    for (std::size_t j = 0; j < kQ8Block; ++j) {
      const float v = to_float(wb[j]);
      if (!std::isfinite(v)) return false;
      amax = std::fmax(amax, std::fabs(v));
    }
    const float scale = amax / 127.0f;
    const float inv = detail::reciprocal_or_zero(scale);
    // NUMERICS: round half to even (std::nearbyint in the default rounding mode), the rounding
    // of the SIMD twin's vcvtps2dq; GGUF's reference uses roundf (half away from zero), which
    // differs only on exact ties.
    for (std::size_t j = 0; j < kQ8Block; ++j)
      q[b * kQ8Block + j] = static_cast<std::int8_t>(std::nearbyint(to_float(wb[j]) * inv));
    d[b] = detail::block_scale(scale);
    if (!std::isfinite(d[b])) return false;
  }
  return true;
}

// y(rows) = W x(cols) for q8_0 W: per block the f32 sum of q_j * x_j, scaled by d and summed.
inline void matvec_q8_0(float* y, const std::int8_t* q, const float* d, const float* x,
                        std::size_t rows, std::size_t cols, ThreadPool* /*pool*/ = nullptr);

// Y(n, rows) = X(n, cols) W^T, one matvec per vector.
inline void matvec_batch_q8_0(float* y, const std::int8_t* q, const float* d, const float* x,
                              std::size_t n, std::size_t rows, std::size_t cols,
                              ThreadPool* /*pool*/ = nullptr) {
  for (std::size_t t = 0; t < n; ++t) matvec_q8_0(y + t * rows, q, d, x + t * cols, rows, cols);
}

}  // namespace scalar

// out(cols) := d_b * q_j for one row (exact: the product of an int8 and an 11-bit scale fits
// f32's 24-bit mantissa).
inline void dequantize_row_q8_0(float* out, const std::int8_t* q, const float* d,
                                std::size_t cols) noexcept {
  for (std::size_t c = 0; c < cols; ++c) out[c] = d[c / kQ8Block] * static_cast<float>(q[c]);
}

namespace detail {

// N int8 quants at p, widened to f32.
template <class Arch>
[[gnu::always_inline]] inline fbatch<Arch> load_q8(const std::int8_t* p) noexcept {
  using B = fbatch<Arch>;
#if defined(__AVX512F__)
  if constexpr (kIsAvx512<Arch>) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return B(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v)));
  }
#endif
#if defined(__AVX2__)
  if constexpr (!kIsAvx512<Arch> && kIsAvx2<Arch>) {
    const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return B(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)));
  }
#endif
  alignas(64) float tmp[B::size];
  for (std::size_t i = 0; i < B::size; ++i) tmp[i] = static_cast<float>(p[i]);
  return B::load_aligned(tmp);
}

}  // namespace detail

// The q8_0 block codec (kernels/blocks.hpp): 32 int8 quants, widened to f32.
struct Q8Codec {
  using unit = std::int8_t;
  static constexpr std::size_t units = kQ8Block;
  static constexpr bool quantizes_x = false;  // x stays f32 (docs/design.md §13)
  template <class Arch>
  [[gnu::always_inline]] static void decode(const std::int8_t* q,
                                            detail::fbatch<Arch>* w) noexcept {
    constexpr std::size_t N = detail::fbatch<Arch>::size;
    for (std::size_t k = 0; k < kQ8Block / N; ++k) w[k] = detail::load_q8<Arch>(q + k * N);
  }
  [[gnu::always_inline]] static float weight(const std::int8_t* q, std::size_t j) noexcept {
    return static_cast<float>(q[j]);
  }

  // One row quantized (quantize_row_q8_0 below).
  template <class T>
  static bool quantize_row(std::int8_t* q, float* d, const T* w, std::size_t cols) noexcept;
};

// One matrix of a segmented q8_0 matvec: y(rows) = W(rows, cols) x; all segments of a call
// share x and cols.
using Q8Segment = BlockSegment<Q8Codec>;

inline void scalar::matvec_q8_0(float* y, const std::int8_t* q, const float* d, const float* x,
                                std::size_t rows, std::size_t cols, ThreadPool*) {
  scalar::matvec_blocks<Q8Codec>(y, q, d, x, rows, cols);
}

namespace detail {

#if defined(__AVX512BF16__)

// Rows per dequantized panel: 256 KiB of bf16, in L2 while all tokens pass over it.
inline std::size_t q8_panel_rows(std::size_t cols) noexcept {
  const std::size_t p = (std::size_t{1} << 17) / (cols ? cols : 1) / kMatvecRows * kMatvecRows;
  return p > kMatvecRows ? p : kMatvecRows;
}

#endif  // __AVX512BF16__

}  // namespace detail

// Tokens from which matmul_q8_0 dequantizes panels for bf16 dot products; below, the per-row
// matvec_batch_q8_0 reads the weights once with no panel to write.
inline constexpr std::size_t kQ8MatmulMinTokens = 16;

// Quantizes one row (see scalar::quantize_row_q8_0; the same bits: max and the products by
// 1/d are exact lane by lane, and the rounding is the same half-to-even).
template <class Arch = xsimd::default_arch, class T>
bool quantize_row_q8_0(std::int8_t* q, float* d, const T* w, std::size_t cols) noexcept {
  using B = detail::fbatch<Arch>;
  constexpr std::size_t N = B::size;
  static_assert(kQ8Block % N == 0, "a q8_0 block must be a whole number of vectors");
  constexpr std::size_t K = kQ8Block / N;
  for (std::size_t b = 0; b * kQ8Block < cols; ++b) {
    const T* wb = w + b * kQ8Block;
    B v[K];
    B amax(0.0f);
    for (std::size_t k = 0; k < K; ++k) {
      v[k] = detail::load_widened<Arch>(wb + k * N);
      amax = xsimd::max(amax, xsimd::abs(v[k]));
    }
    // v - v is 0 for a finite v and NaN for an infinity or a NaN.
    B bad(0.0f);
    for (std::size_t k = 0; k < K; ++k) bad += v[k] - v[k];
    if (xsimd::hadd(bad) != 0.0f) return false;
    const float m = detail::reduce_max<Arch>(amax);
    const float scale = m / 127.0f;
    const float inv = detail::reciprocal_or_zero(scale);
    alignas(64) float r[kQ8Block];
    for (std::size_t k = 0; k < K; ++k) xsimd::nearbyint(v[k] * B(inv)).store_aligned(r + k * N);
    for (std::size_t j = 0; j < kQ8Block; ++j)
      q[b * kQ8Block + j] = static_cast<std::int8_t>(r[j]);
    d[b] = detail::block_scale(scale);
    if (!std::isfinite(d[b])) return false;
  }
  return true;
}

template <class T>
bool Q8Codec::quantize_row(std::int8_t* q, float* d, const T* w, std::size_t cols) noexcept {
  return quantize_row_q8_0(q, d, w, cols);
}

// For each segment, y(rows) = W(rows, cols) x(cols): one pass over all segments' rows, split
// statically over the pool's threads in whole row groups.
template <class Arch = xsimd::default_arch>
void matvec_q8_0(std::span<const Q8Segment> segments, const float* x, std::size_t cols,
                 ThreadPool* pool = nullptr) {
  matvec_blocks<Q8Codec, Arch>(segments, x, cols, pool);
}

// y(rows) = W(rows, cols) x(cols) for q8_0 W (quants q, scales d); cols % kQ8Block == 0.
template <class Arch = xsimd::default_arch>
void matvec_q8_0(float* y, const std::int8_t* q, const float* d, const float* x, std::size_t rows,
                 std::size_t cols, ThreadPool* pool = nullptr) {
  const Q8Segment segment{y, q, d, rows};
  matvec_q8_0<Arch>(std::span<const Q8Segment>(&segment, 1), x, cols, pool);
}

// Y(n, rows) = X(n, cols) W^T, row t bitwise equal to matvec_q8_0(W, x_t) for any n and thread
// count; the weights stream from memory once for all n.
template <class Arch = xsimd::default_arch>
void matvec_batch_q8_0(float* y, const std::int8_t* q, const float* d, const float* x,
                       std::size_t n, std::size_t rows, std::size_t cols,
                       ThreadPool* pool = nullptr) {
  matvec_batch_blocks<Q8Codec, Arch>(y, q, d, x, n, rows, cols, pool);
}

// Y(n, rows) = X(n, cols) W^T for q8_0 W (prefill). See the header comment for the numerics:
// with AVX-512 BF16 and n >= kQ8MatmulMinTokens through bf16 panels, else matvec_batch_q8_0.
// Every output is computed by one thread: the results do not depend on the thread count.
template <class Arch = xsimd::default_arch>
void matmul_q8_0(float* y, const std::int8_t* q, const float* d, const float* x, std::size_t n,
                 std::size_t rows, std::size_t cols, ThreadPool* pool = nullptr) {
#if CALM_AMX_BF16_BUILT
  if constexpr (detail::kIsAvx512<Arch>)
    if (detail::blocks_on_amx(n, rows))
      return detail::matmul_blocks_amx<Q8Codec>(y, q, d, x, n, rows, cols, pool);
#endif
#if defined(__AVX512BF16__)
  if constexpr (detail::kIsAvx512<Arch>) {
    if (n >= kQ8MatmulMinTokens && rows > 0) {
      thread_local AlignedBuffer<std::uint16_t> x_bf16;  // the caller's; tasks get the pointer
      const std::size_t x_stride = (cols + 31) / 32 * 32;
      x_bf16.reserve_discard(n * x_stride);
      detail::round_to_bf16(x_bf16.data(), x, n, cols, x_stride);
      const std::uint16_t* x_rounded = x_bf16.data();
      const std::size_t nb = cols / kQ8Block;
      const std::size_t panel = detail::q8_panel_rows(cols);
      detail::split_rows(rows, pool, [&](std::size_t r0, std::size_t r1) {
        thread_local AlignedBuffer<std::uint16_t> w_bf16;  // this thread's panel
        w_bf16.reserve_discard(panel * cols);
        for (std::size_t p = r0; p < r1; p += panel) {
          const std::size_t m = r1 - p < panel ? r1 - p : panel;
          detail::dequantize_blocks_bf16<Q8Codec>(w_bf16.data(), q + p * cols, d + p * nb, m * nb);
          detail::matmul_rows_bf16(y + p, reinterpret_cast<const bf16*>(w_bf16.data()), x_rounded,
                                   x_stride, n, 0, m, rows, cols);
        }
      });
      return;
    }
  }
#endif
  matmul_blocks<Q8Codec, Arch>(y, q, d, x, n, rows, cols, pool);
}

// y(k) = W[rows[k]] x(cols) for the listed rows of a q8_0 W, each bitwise equal to row rows[k]
// of matvec_q8_0(W, x) (the same per-row arithmetic, one row at a time). One thread.
template <class Arch = xsimd::default_arch>
void matvec_gather_q8_0(float* y, const std::int8_t* q, const float* d, const float* x,
                        std::span<const std::uint32_t> rows, std::size_t cols) {
  matvec_gather_blocks<Q8Codec, Arch>(y, q, d, x, rows, cols);
}

namespace scalar {

// y(k) = W[rows[k]] x(cols) for q8_0 W.
inline void matvec_gather_q8_0(float* y, const std::int8_t* q, const float* d, const float* x,
                               std::span<const std::uint32_t> rows, std::size_t cols) noexcept {
  const std::size_t nb = cols / kQ8Block;
  for (std::size_t k = 0; k < rows.size(); ++k)
    matvec_q8_0(y + k, q + std::size_t{rows[k]} * cols, d + std::size_t{rows[k]} * nb, x, 1, cols);
}

}  // namespace scalar

}  // namespace calm::kernels
