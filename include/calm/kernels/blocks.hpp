// Matvec kernels for block formats: weights in blocks of 32 that share one f32 scale, with x in
// f32. A format supplies a codec C -- how one block's payload decodes to 32 small integers held
// as f32 -- and gets here the kernels every format needs: y = W x over one or several matrices
// (segments), Y = X W^T bitwise row by row, and a gather of a few rows. The layout of a
// (rows, cols) matrix, cols a multiple of 32:
//   q  (rows, cols / 32 * C::units)   the blocks' payload, row-major (C::unit elements)
//   d  (rows, cols / 32)              f32 scales: scale b of row r at d[r * cols/32 + b]
// A weight reads as d_b * w_j, w_j the decoded integer.
//
// Arithmetic (the same for every codec): per block the f32 products w_j * x_j are summed
// vector-wise (w[0] * x[0:N], then FMAs of the following N-chunks in order), scaled by d_b into
// one accumulator per row and vector, and reduced with one hadd at the end. Structure as in
// matvec.hpp: 4 rows at a time, software prefetch 2 KiB ahead in each row's payload (and in the
// scale stream), a static split of whole row groups over threads. Each row's sum is computed in
// the same order whatever the grouping, the thread count or the number of vectors, so the
// results are bitwise independent of all three.
//
// Codecs whose weights are small integers may take x quantized too (C::quantizes_x, q4_0): each
// call quantizes every x vector once to int8 blocks of 32 with one f32 scale (dx = max|x| / 127,
// round half to even), and a block's product is the exact integer dot product of the raw codes
// with the int8 x, less the codec's offset times the block's sum of x, scaled by d_w * dx
// (vpmaddubsw + vpmaddwd on AVX2, vpdpbusd where AVX-VNNI is there). The error of x's
// quantization (<= dx / 2 per element) is small next to a 4-bit weight's; a call whose x does
// not quantize (a NaN, an infinity) takes the f32 path, so non-finite values still propagate.
//
// A codec C provides:
//   using unit;                      element type of q (int8 for q8_0, uint8 for packed nibbles)
//   static constexpr units;          units per block of 32 weights
//   static constexpr quantizes_x;    whether the integer path is taken (then also: x_offset, the
//                                    value subtracted from a raw code; raw(block, j), the raw code
//                                    j in 0..255; raw_u8<Arch>(block), the 32 raw codes as bytes)
//   template <class Arch> static void decode(const unit* block, fbatch<Arch>* w);  32 / N vectors
//   static float weight(const unit* block, std::size_t j);   weight j, the scalar twin's
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "calm/core/aligned.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/kernels/load.hpp"
#include "calm/kernels/matmul.hpp"
#include "calm/kernels/matvec.hpp"
#include "calm/kernels/row_groups.hpp"

// The row and vector loops of the block kernels run over compile-time R and V: unrolled, their
// accumulators stay in registers (rolled, g++ 12 kept them in memory, a store-to-load round
// trip per block: measured 3x slower).
#define CALM_UNROLL _Pragma("GCC unroll 16")

namespace calm::kernels {

// Weights per block of every block format.
inline constexpr std::size_t kBlockWeights = 32;

// One matrix of a segmented block matvec: y(rows) = W(rows, cols) x; all segments of a call
// share x and cols.
template <class C>
struct BlockSegment {
  float* y;
  const typename C::unit* q;  // (rows, cols / 32 * C::units)
  const float* d;             // (rows, cols / 32)
  std::size_t rows;
};

// x quantized for an integer-dot codec: per vector, q (cols) int8, d (cols / 32) scales, and
// k (8 int32 per block): lane 0 the codec's offset times the block's sum of q, the rest 0 --
// the correction subtracted from the block's integer dot product. `x + elements` moves all
// three to that element (a whole number of blocks), as a float pointer would move.
struct QuantizedX {
  const std::int8_t* q;
  const float* d;
  const std::int32_t* k;
  QuantizedX operator+(std::size_t elements) const noexcept {
    return {q + elements, d + elements / kBlockWeights, k + elements / kBlockWeights * 8};
  }
};

// Quantizes n vectors x(n, cols) into q, d and k (QuantizedX's layout, k with offset); false if
// an element is not finite.
inline bool quantize_x_blocks(std::int8_t* q, float* d, std::int32_t* k, const float* x,
                              std::size_t n, std::size_t cols, int offset) noexcept {
  const std::size_t blocks = n * (cols / kBlockWeights);
  for (std::size_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * kBlockWeights;
    float amax = 0.0f;
    for (std::size_t j = 0; j < kBlockWeights; ++j) {
      if (!std::isfinite(xb[j])) return false;
      const float a = std::fabs(xb[j]);
      amax = a > amax ? a : amax;
    }
    const float scale = amax / 127.0f;
    const float inv = detail::reciprocal_or_zero(scale);
    std::int32_t sum = 0;
    for (std::size_t j = 0; j < kBlockWeights; ++j) {
      const auto v = static_cast<std::int8_t>(std::nearbyint(xb[j] * inv));
      q[b * kBlockWeights + j] = v;
      sum += v;
    }
    d[b] = scale;
    for (std::size_t l = 0; l < 8; ++l) k[b * 8 + l] = l == 0 ? offset * sum : 0;
  }
  return true;
}

namespace detail {

// The calling thread's buffers for x quantized (tasks get the pointers).
struct QuantizedXBuffers {
  AlignedBuffer<std::int8_t> q;
  AlignedBuffer<float> d;
  AlignedBuffer<std::int32_t> k;
};

template <class C>
inline bool quantize_x_for(QuantizedX& out, const float* x, std::size_t n, std::size_t cols) {
  thread_local QuantizedXBuffers buffers;
  const std::size_t blocks = n * (cols / kBlockWeights);
  buffers.q.reserve_discard(n * cols + 1);
  buffers.d.reserve_discard(blocks + 1);
  buffers.k.reserve_discard(8 * blocks + 8);
  if (!quantize_x_blocks(buffers.q.data(), buffers.d.data(), buffers.k.data(), x, n, cols,
                         C::x_offset))
    return false;
  out = {buffers.q.data(), buffers.d.data(), buffers.k.data()};
  return true;
}

}  // namespace detail

namespace scalar {

// y(rows) = W x(cols): per block the f32 sum of w_j * x_j in order, scaled by d and summed.
template <class C>
void matvec_blocks(float* y, const typename C::unit* q, const float* d, const float* x,
                   std::size_t rows, std::size_t cols) {
  const std::size_t nb = cols / kBlockWeights, row_units = nb * C::units;
  if constexpr (C::quantizes_x) {  // per block the integer dot product, scaled by d_w * dx
    std::vector<std::int8_t> xq(cols);
    std::vector<float> dx(nb);
    std::vector<std::int32_t> k(8 * nb);
    if (quantize_x_blocks(xq.data(), dx.data(), k.data(), x, 1, cols, C::x_offset)) {
      for (std::size_t r = 0; r < rows; ++r) {
        float s = 0.0f;
        for (std::size_t b = 0; b < nb; ++b) {
          const typename C::unit* block = q + r * row_units + b * C::units;
          std::int32_t dot = -k[b * 8];
          for (std::size_t j = 0; j < kBlockWeights; ++j)
            dot += C::raw(block, j) * xq[b * kBlockWeights + j];
          s += d[r * nb + b] * dx[b] * static_cast<float>(dot);
        }
        y[r] = s;
      }
      return;
    }
  }
  for (std::size_t r = 0; r < rows; ++r) {
    float s = 0.0f;
    for (std::size_t b = 0; b < nb; ++b) {
      const typename C::unit* block = q + r * row_units + b * C::units;
      float p = 0.0f;
      for (std::size_t j = 0; j < kBlockWeights; ++j) p += C::weight(block, j) * x[b * kBlockWeights + j];
      s += d[r * nb + b] * p;
    }
    y[r] = s;
  }
}

}  // namespace scalar

namespace detail {

// The f32 products of one decoded block with x(32) as a vector of partial sums.
template <class Arch, std::size_t K>
[[gnu::always_inline]] inline fbatch<Arch> block_products(const fbatch<Arch> (&w)[K],
                                                         const float* x) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t N = B::size;
  B p = w[0] * B::load_unaligned(x);
  for (std::size_t k = 1; k < K; ++k) p = xsimd::fma(w[k], B::load_unaligned(x + k * N), p);
  return p;
}

// One block's integer dot product with x's block: the raw codes (bytes) times the int8 x,
// summed in 8 int32 lanes, less the correction k (lane 0).
#if defined(__AVX2__)
[[gnu::always_inline]] inline __m256i block_dot_u8(__m256i raw, const std::int8_t* xq,
                                                  const std::int32_t* k) noexcept {
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
#if defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
  const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), raw, xv);
#else
  // raw <= 15 keeps each pair within int16: no saturation, the same sums as vpdpbusd.
  const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(raw, xv), _mm256_set1_epi16(1));
#endif
  return _mm256_sub_epi32(p, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(k)));
}

[[gnu::always_inline]] inline float hsum8(__m256 v) noexcept {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
#endif

// The software prefetch of block b of a row group (R rows, nb blocks each): one 64-byte line
// of each row's payload kPrefetchBytes ahead (running on into the next group), and the next
// group's scales spread over the blocks. Always inlined: a call per block would spill the
// accumulators (every ymm register is caller-saved).
template <class C, std::size_t R>
[[gnu::always_inline]] inline void prefetch_block(const typename C::unit* q, const float* d,
                           const typename C::unit* next_q, std::size_t b, std::size_t nb) noexcept {
  constexpr std::size_t block_bytes = C::units * sizeof(typename C::unit);
  constexpr std::size_t line_blocks = 64 / block_bytes ? 64 / block_bytes : 1;
  // At most a row ahead: a row shorter than kPrefetchBytes (q4_0 at 2048 columns is 1 KiB)
  // prefetches the same row of the next group, not the row after it.
  const std::size_t ahead = kPrefetchBytes / block_bytes < nb ? kPrefetchBytes / block_bytes : nb;
  const std::size_t row_units = nb * C::units, own_end = nb - ahead;
  if (b % line_blocks == 0) {
    for (std::size_t r = 0; r < R; ++r)
      prefetch_line(b < own_end ? q + r * row_units + (b + ahead) * C::units
                                : next_q + r * row_units + (b + ahead - nb) * C::units);
  }
  if ((b * R) % 16 < R) prefetch_line(d + R * nb + b * R);
}

// dot_rows_blocks for x quantized (QuantizedX): per (row, vector) acc += d_w * dx *
// (integer block dot), then one sum of the lanes. The same bits for any R, V, Prefetch.
template <class C, class Arch, std::size_t R, std::size_t V, bool Prefetch>
inline void dot_rows_blocks_int(float* y, std::size_t y_stride, const typename C::unit* q,
                                const float* d, const typename C::unit* next_q, QuantizedX x,
                                std::size_t x_stride, std::size_t cols) noexcept {
  const std::size_t nb = cols / kBlockWeights, row_units = nb * C::units;
#if defined(__AVX2__)
  if constexpr (kIsAvx2<Arch> || kIsAvx512<Arch>) {
    __m256 acc[R][V];
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
      if constexpr (Prefetch) prefetch_block<C, R>(q, d, next_q, b, nb);
      CALM_UNROLL
      for (std::size_t r = 0; r < R; ++r) {
        const __m256i raw = C::raw_u8(q + r * row_units + b * C::units);
        const __m256 dw = _mm256_broadcast_ss(d + r * nb + b);
        CALM_UNROLL
        for (std::size_t v = 0; v < V; ++v) {
          const QuantizedX xb = x + (v * x_stride + b * kBlockWeights);
          const __m256 p = _mm256_cvtepi32_ps(block_dot_u8(raw, xb.q, xb.k));
          acc[r][v] = _mm256_fmadd_ps(p, _mm256_mul_ps(dw, _mm256_broadcast_ss(xb.d)), acc[r][v]);
        }
      }
    }
    for (std::size_t r = 0; r < R; ++r)
      for (std::size_t v = 0; v < V; ++v) y[v * y_stride + r] = hsum8(acc[r][v]);
    return;
  }
#endif
  float acc[R][V] = {};
  for (std::size_t b = 0; b < nb; ++b) {
    if constexpr (Prefetch) prefetch_block<C, R>(q, d, next_q, b, nb);
    for (std::size_t r = 0; r < R; ++r) {
      const typename C::unit* block = q + r * row_units + b * C::units;
      for (std::size_t v = 0; v < V; ++v) {
        const QuantizedX xb = x + (v * x_stride + b * kBlockWeights);
        std::int32_t dot = -xb.k[0];
        for (std::size_t j = 0; j < kBlockWeights; ++j) dot += C::raw(block, j) * xb.q[j];
        acc[r][v] += d[r * nb + b] * *xb.d * static_cast<float>(dot);
      }
    }
  }
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) y[v * y_stride + r] = acc[r][v];
}

// y[v * y_stride + r] = W(R rows at q, d) . x_v for V vectors x_v = x + v * x_stride; next_q:
// the payload of the group that follows (prefetch only). Per (row, vector): acc += d_b *
// (block b . x_v), block after block, then one hadd: the same bits for any R, V, Prefetch.
template <class C, class Arch, std::size_t R, std::size_t V, bool Prefetch>
inline void dot_rows_blocks_f32(float* y, std::size_t y_stride, const typename C::unit* q,
                                const float* d, const typename C::unit* next_q, const float* x,
                                std::size_t x_stride, std::size_t cols) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t K = kBlockWeights / B::size;
  static_assert(kBlockWeights % B::size == 0, "a block must be a whole number of vectors");
  constexpr std::size_t unit_bytes = sizeof(typename C::unit), block_bytes = C::units * unit_bytes;
  constexpr std::size_t ahead = kPrefetchBytes / block_bytes;  // in blocks
  // One 64-byte line of payload per row every `line_blocks` blocks.
  constexpr std::size_t line_blocks = 64 / block_bytes ? 64 / block_bytes : 1;
  const std::size_t nb = cols / kBlockWeights, row_units = nb * C::units;
  const std::size_t own_end = nb > ahead ? nb - ahead : 0;  // in blocks
  B acc[R][V];
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) acc[r][v] = B(0.0f);
  for (std::size_t b = 0; b < nb; ++b) {
    const std::size_t c = b * kBlockWeights;
    if constexpr (Prefetch) {
      if (b % line_blocks == 0) {
        for (std::size_t r = 0; r < R; ++r)
          prefetch_line(b < own_end ? q + r * row_units + (b + ahead) * C::units
                                    : next_q + r * row_units + (b + ahead - nb) * C::units);
      }
      // The next group's scales (R * nb floats right after this group's), one line per 16
      // floats, spread over this group's blocks.
      if ((b * R) % 16 < R) prefetch_line(d + R * nb + b * R);
    }
    for (std::size_t r = 0; r < R; ++r) {
      B w[K];
      C::template decode<Arch>(q + r * row_units + b * C::units, w);
      const B scale(d[r * nb + b]);
      for (std::size_t v = 0; v < V; ++v)
        acc[r][v] = xsimd::fma(block_products<Arch>(w, x + v * x_stride + c), scale, acc[r][v]);
    }
  }
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) y[v * y_stride + r] = xsimd::hadd(acc[r][v]);
}

// y[v * y_stride + r] = W(R rows) . x_v, x in f32 or quantized (X = const float* or QuantizedX).
template <class C, class Arch, std::size_t R, std::size_t V, bool Prefetch, class X>
inline void dot_rows_blocks(float* y, std::size_t y_stride, const typename C::unit* q,
                            const float* d, const typename C::unit* next_q, X x,
                            std::size_t x_stride, std::size_t cols) noexcept {
  if constexpr (std::is_same_v<X, QuantizedX>)
    dot_rows_blocks_int<C, Arch, R, V, Prefetch>(y, y_stride, q, d, next_q, x, x_stride, cols);
  else
    dot_rows_blocks_f32<C, Arch, R, V, Prefetch>(y, y_stride, q, d, next_q, x, x_stride, cols);
}

// Row groups [g0, g1) of the segments' concatenated groups (row_groups.hpp's walk).
template <class C, class Arch, class X>
inline void matvec_blocks_groups(std::span<const BlockSegment<C>> segments, X x,
                                 std::size_t cols, std::size_t g0, std::size_t g1) noexcept {
  const std::size_t nb = cols / kBlockWeights, row_units = nb * C::units;
  using Unit = typename C::unit;
  walk_segment_groups(segments, row_units, g0, g1, [](const BlockSegment<C>& s) { return s.q; },
                      [&]<std::size_t R>(const BlockSegment<C>& seg, std::size_t r, const Unit* next) {
                        dot_rows_blocks<C, Arch, R, 1, true>(seg.y + r, 0, seg.q + r * row_units,
                                                             seg.d + r * nb, next, x, 0, cols);
                      });
}

// R rows for all n vectors, in tiles (row_groups.hpp).
template <class C, class Arch, std::size_t R, class X>
inline void block_rows_all_vectors(float* y, std::size_t rows, const typename C::unit* q,
                                   const float* d, const typename C::unit* next, X x,
                                   std::size_t n, std::size_t cols) noexcept {
  walk_vector_tiles<Arch>(n, [&]<std::size_t V, bool Prefetch>(std::size_t t) {
    dot_rows_blocks<C, Arch, R, V, Prefetch>(y + t * rows, rows, q, d, next, x + t * cols, cols,
                                             cols);
  });
}

// Row groups [g0, g1) for all n vectors, the rows of a group two at a time.
template <class C, class Arch, class X>
inline void matvec_batch_blocks_groups(float* y, const typename C::unit* q, const float* d,
                                       X x, std::size_t n, std::size_t rows,
                                       std::size_t cols, std::size_t g0, std::size_t g1) noexcept {
  const std::size_t nb = cols / kBlockWeights, row_units = nb * C::units;
  walk_row_pairs(rows, g0, g1, [&]<std::size_t R>(std::size_t r) {
    const auto* qr = q + r * row_units;
    block_rows_all_vectors<C, Arch, R>(y + r, rows, qr, d + r * nb, qr + R * row_units, x, n, cols);
  });
}

// out(m, stride) := blocks [b0, b1) of rows [0, m) of W (row stride row_units) dequantized to
// f32, d_b * w_j (exact: see the codecs).
template <class C, class Arch>
inline void dequantize_blocks_f32(float* out, std::size_t stride, const typename C::unit* q,
                                  const float* d, std::size_t m, std::size_t nb, std::size_t b0,
                                  std::size_t b1) noexcept {
  using B = fbatch<Arch>;
  constexpr std::size_t N = B::size, K = kBlockWeights / N;
  for (std::size_t r = 0; r < m; ++r)
    for (std::size_t b = b0; b < b1; ++b) {
      B w[K];
      C::template decode<Arch>(q + (r * nb + b) * C::units, w);
      const B scale(d[r * nb + b]);
      float* o = out + r * stride + (b - b0) * kBlockWeights;
      for (std::size_t k = 0; k < K; ++k) (w[k] * scale).store_aligned(o + k * N);
    }
}

// matmul_rows_tiled_packed's packer for a block format: decodes a micro-panel's rows and
// columns (whole blocks: kMatmulTileCols is a multiple of 32) into L1 scratch, then transposes
// it as a dense panel is.
template <class C, class Arch>
struct BlockPanelPacker {
  static constexpr std::size_t NR = kMatmulTileRows<Arch>, TC = kMatmulTileCols;
  static_assert(TC % kBlockWeights == 0, "a micro-panel holds whole blocks");
  const typename C::unit* q;
  const float* d;
  std::size_t nb;  // blocks per row

  void operator()(float* wp, std::size_t p0, std::size_t c0, std::size_t nr,
                  std::size_t len) const noexcept {
    alignas(64) float decoded[NR * TC];  // 16 KiB on AVX2, 32 KiB on AVX-512
    dequantize_blocks_f32<C, Arch>(decoded, TC, q + p0 * nb * C::units, d + p0 * nb, nr, nb,
                                   c0 / kBlockWeights, (c0 + len) / kBlockWeights);
    pack_panel<Arch>(wp, static_cast<const float*>(decoded), TC, nr, len);
  }
};

}  // namespace detail

// For each segment, y(rows) = W(rows, cols) x(cols): one pass over all segments' rows, split
// statically over the pool's threads in whole row groups.
template <class C, class Arch = xsimd::default_arch>
void matvec_blocks(std::span<const BlockSegment<C>> segments, const float* x, std::size_t cols,
                   ThreadPool* pool = nullptr) {
  std::size_t groups = 0;
  for (const BlockSegment<C>& s : segments) groups += detail::row_groups(s.rows);
  const auto run = [&](auto xs) {
    detail::split_groups(groups, pool, [&](std::size_t g0, std::size_t g1) {
      detail::matvec_blocks_groups<C, Arch>(segments, xs, cols, g0, g1);
    });
  };
  if constexpr (C::quantizes_x) {
    QuantizedX xq;
    if (detail::quantize_x_for<C>(xq, x, 1, cols)) return run(xq);
  }
  run(x);
}

// Y(n, rows) = X(n, cols) W^T, row t bitwise equal to matvec_blocks(W, x_t) for any n and thread
// count; the weights stream from memory once for all n.
template <class C, class Arch = xsimd::default_arch>
void matvec_batch_blocks(float* y, const typename C::unit* q, const float* d, const float* x,
                         std::size_t n, std::size_t rows, std::size_t cols,
                         ThreadPool* pool = nullptr) {
  if (n == 0 || rows == 0) return;
  const auto run = [&](auto xs) {
    detail::split_groups(detail::row_groups(rows), pool, [&](std::size_t g0, std::size_t g1) {
      detail::matvec_batch_blocks_groups<C, Arch>(y, q, d, xs, n, rows, cols, g0, g1);
    });
  };
  if constexpr (C::quantizes_x) {
    QuantizedX xq;
    if (detail::quantize_x_for<C>(xq, x, n, cols)) return run(xq);
  }
  run(x);
}

namespace detail {

#if defined(__AVX512BF16__)
// Blocks [0, count) of a matrix's blocks, row after row, into bf16: out[32 i + j] :=
// bf16(d_i * w_j) of block i, round to nearest even (d_i * w_j itself is exact in f32): a
// relative error <= 2^-9 per weight on top of the format's. Prefetches the blocks 2 KiB of
// payload ahead (from memory the hardware prefetcher alone reached 8 GB/s on a Xeon core, 10.9
// with it).
template <class C>
inline void dequantize_blocks_bf16(std::uint16_t* out, const typename C::unit* q, const float* d,
                                   std::size_t count) noexcept {
  using Arch = xsimd::default_arch;
  static_assert(kIsAvx512<Arch> && fbatch<Arch>::size * 2 == kBlockWeights);
  constexpr std::size_t ahead = 2048, block_bytes = C::units * sizeof(typename C::unit);
  const auto at = [](const void* p, std::size_t bytes) {  // an address, perhaps past the matrix
    return reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(p) + bytes);
  };
  for (std::size_t i = 0; i < count; ++i) {
    prefetch_line(at(q + i * C::units, ahead));
    if (i % 16 == 0) prefetch_line(at(d + i, ahead / block_bytes * sizeof(float)));
    fbatch<Arch> w[2];
    C::template decode<Arch>(q + i * C::units, w);
    const __m512 scale = _mm512_set1_ps(d[i]);
    const __m512bh pairs =
        _mm512_cvtne2ps_pbh(_mm512_mul_ps(w[1], scale), _mm512_mul_ps(w[0], scale));
    _mm512_storeu_si512(out + i * kBlockWeights, reinterpret_cast<const __m512i&>(pairs));
  }
}
#endif

#if CALM_AMX_BF16_BUILT
// The prefill of a block format on AMX-BF16 tiles: W dequantized to bf16 32 rows at a time into
// one of this thread's two panels (in L2 while every token passes over it: bf16_amx.hpp's block,
// 32 rows by 32 tokens a pass); X rounded to bf16 once per call, as the bf16 prefill does. Each
// weight is decoded once per call, not once per token, and the products run on the tile unit
// instead of per-block integer sums and f32 steps. The next 32 rows are dequantized into the
// other panel in slices between the tile steps of these (the vector units work while the tile
// unit computes; one after the other, the dequantization took half the prefill). The numerics
// are the bf16 prefill's on the dequantized weights: not decode's (prefill never is), and every
// output is computed by one thread, so the results do not depend on the thread count.
template <class C>
inline void matmul_blocks_amx(float* y, const typename C::unit* q, const float* d, const float* x,
                              std::size_t n, std::size_t rows, std::size_t cols, ThreadPool* pool) {
  thread_local AlignedBuffer<std::uint16_t> x_bf16;  // the caller's; tasks get `packed`
  x_bf16.reserve_discard(n * cols);
  round_to_bf16(x_bf16.data(), x, n, cols, cols);
  const std::uint16_t* packed = amx_bf16::pack(x_bf16.data(), cols, n, cols);
  const std::size_t nb = cols / kBlockWeights, block_rows = amx_bf16::kBlockRows;
  const std::size_t steps = amx_bf16::block_steps(n, cols);
  split_groups((rows + block_rows - 1) / block_rows, pool, [&](std::size_t b0, std::size_t b1) {
    thread_local AlignedBuffer<std::uint16_t> panels;
    panels.reserve_discard(2 * block_rows * cols);
    std::uint16_t* panel[2] = {panels.data(), panels.data() + block_rows * cols};
    const auto rows_of = [&](std::size_t b) {
      return rows - block_rows * b < block_rows ? rows - block_rows * b : block_rows;
    };
    const auto blocks_of = [&](std::size_t b) { return block_rows * b * nb; };  // first block of W
    dequantize_blocks_bf16<C>(panel[0], q + blocks_of(b0) * C::units, d + blocks_of(b0),
                              rows_of(b0) * nb);
    amx_bf16::Tiles tiles;
    for (std::size_t b = b0; b < b1; ++b) {
      std::uint16_t* now = panel[(b - b0) % 2];
      std::uint16_t* next = panel[(b - b0 + 1) % 2];
      // The next rows' blocks, in `steps` slices (the last slices may be empty).
      const std::size_t total = b + 1 < b1 ? rows_of(b + 1) * nb : 0;
      const std::size_t slice = (total + steps - 1) / steps;
      const typename C::unit* next_q = total ? q + blocks_of(b + 1) * C::units : q;
      const float* next_d = total ? d + blocks_of(b + 1) : d;
      std::size_t done = 0;
      const auto dequantize_slice = [&] {
        const std::size_t k = total - done < slice ? total - done : slice;
        dequantize_blocks_bf16<C>(next + done * kBlockWeights, next_q + done * C::units,
                                  next_d + done, k);
        done += k;
      };
      amx_bf16::block(y + block_rows * b, rows, now, rows_of(b), cols, packed, n, tiles,
                      dequantize_slice);
      if (done < total)
        dequantize_blocks_bf16<C>(next + done * kBlockWeights, next_q + done * C::units,
                                  next_d + done, total - done);
    }
  });
}

// Whether a block format's prefill of n tokens takes matmul_blocks_amx.
inline bool blocks_on_amx(std::size_t n, std::size_t rows) noexcept {
  return n >= kAmxBf16MinTokens && rows > 0 && amx::bf16_usable();
}
#endif

}  // namespace detail

// Y(n, rows) = X(n, cols) W^T, the prefill product. Where the process may use AMX-BF16 and at
// least kAmxBf16MinTokens tokens, on its tiles (detail::matmul_blocks_amx). Else, with AVX2 or
// AVX-512 and at least kMatmulTileMinTokens tokens it runs matmul.hpp's register-blocked f32
// tiles, each micro-panel (16 rows x 256 columns on AVX2) decoded from the blocks straight into
// L1 scratch and then transposed as a dense panel is: every weight is decoded once per call
// instead of once per token, and the arithmetic is that of f32 weights (d_b * w_j is exact in
// f32), one fma chain per output over the columns in order -- so, like the f32 prefill, it
// differs from decode's order by f32 rounding only. Otherwise matvec_batch_blocks. Every output
// is computed by one thread: the results do not depend on the thread count.
template <class C, class Arch = xsimd::default_arch>
void matmul_blocks(float* y, const typename C::unit* q, const float* d, const float* x,
                   std::size_t n, std::size_t rows, std::size_t cols, ThreadPool* pool = nullptr) {
#if CALM_AMX_BF16_BUILT
  if constexpr (detail::kIsAvx512<Arch>)
    if (detail::blocks_on_amx(n, rows))
      return detail::matmul_blocks_amx<C>(y, q, d, x, n, rows, cols, pool);
#endif
  if constexpr (detail::kHasTiledMatmul<Arch>) {
    if (n >= detail::kMatmulTileMinTokens && rows > 0) {
      detail::split_rows(rows, pool, [&](std::size_t r0, std::size_t r1) {
        const detail::BlockPanelPacker<C, Arch> pack{q, d, cols / kBlockWeights};
        detail::matmul_rows_tiled_packed<Arch>(y, pack, x, n, r0, r1, rows, cols);
      });
      return;
    }
  }
  matvec_batch_blocks<C, Arch>(y, q, d, x, n, rows, cols, pool);
}

// y(k) = W[rows[k]] x(cols) for the listed rows, each bitwise equal to row rows[k] of
// matvec_blocks(W, x) (the same per-row arithmetic, one row at a time). One thread.
template <class C, class Arch = xsimd::default_arch>
void matvec_gather_blocks(float* y, const typename C::unit* q, const float* d, const float* x,
                          std::span<const std::uint32_t> rows, std::size_t cols) {
  const std::size_t nb = cols / kBlockWeights, row_units = nb * C::units;
  const auto run = [&](auto xs) {
    for (std::size_t k = 0; k < rows.size(); ++k) {
      const std::size_t r = rows[k];
      detail::dot_rows_blocks<C, Arch, 1, 1, false>(y + k, 0, q + r * row_units, d + r * nb,
                                                    nullptr, xs, 0, cols);
    }
  };
  if constexpr (C::quantizes_x) {
    QuantizedX xq;
    if (detail::quantize_x_for<C>(xq, x, 1, cols)) return run(xq);
  }
  run(x);
}

// out(cols) := d_b * w_j for row r.
template <class C>
void dequantize_row_blocks(float* out, const typename C::unit* q, const float* d, std::size_t r,
                           std::size_t cols) noexcept {
  const std::size_t nb = cols / kBlockWeights;
  for (std::size_t b = 0; b < nb; ++b)
    for (std::size_t j = 0; j < kBlockWeights; ++j)
      out[b * kBlockWeights + j] =
          d[r * nb + b] * C::weight(q + (r * nb + b) * C::units, j);
}

}  // namespace calm::kernels

#undef CALM_UNROLL
