// bf16-dot: weights held as bf16 and multiplied on the bf16 dot product (kernels/bf16_dot.hpp):
// activations rounded to bf16 once per product, AMX-BF16 tiles where the process may use them
// and vdpbf16ps's arithmetic (on every other host the same bits), each row of a batch bitwise the
// row alone. Loaded from any checkpoint dtype (LlamaOptions::weights =
// WeightFormat::bf16_dot; a bf16 checkpoint's weights are taken as they are, f32 and f16 are
// rounded to nearest even). Needs cols % 32 == 0, as the quantized formats do (block = 32).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "calm/core/dtype.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/formats/format.hpp"
#include "calm/kernels/bf16_dot.hpp"
#include "calm/kernels/elementwise.hpp"

namespace calm::formats {

struct BF16Dot {
  using Segment = kernels::MatvecSegment<bf16>;
  static constexpr Id id = Id::bf16_dot;
  static constexpr std::string_view name = "bf16_dot";
  static constexpr std::string_view range = "finite";
  static constexpr std::size_t block = kernels::kDotStep;
  static constexpr std::size_t alignment = alignof(bf16);

  static constexpr std::size_t data_bytes(std::size_t cols) noexcept { return cols * 2; }
  static constexpr std::size_t scale_bytes(std::size_t) noexcept { return 0; }
  static const bf16* weights(const Matrix& w) noexcept {
    return reinterpret_cast<const bf16*>(w.data);
  }

  // One row src(cols) as bf16, round to nearest even; false if a weight is not finite.
  template <class T>
  static bool quantize_row(std::byte* data, float*, const T* src, std::size_t cols) noexcept {
    auto* out = reinterpret_cast<std::uint16_t*>(data);
    for (std::size_t c = 0; c < cols; ++c) {
      const float f = to_float(src[c]);
      if (!std::isfinite(f)) return false;
      out[c] = kernels::round_to_bf16(f);
    }
    return true;
  }

  static void matvec(float* y, const Matrix& w, const float* x, ThreadPool* pool) {
    kernels::matvec_bf16_dot(y, weights(w), x, w.rows, w.cols, pool);
  }
  static void matvec_batch(float* y, const Matrix& w, const float* x, std::size_t n,
                           ThreadPool* pool) {
    kernels::matvec_batch_bf16_dot(y, weights(w), x, n, w.rows, w.cols, pool);
  }
  // The prefill runs the same per-row products (every weight row read once for all tokens; on
  // AMX, 32 rows by 32 tokens a pass).
  static void matmul(float* y, const Matrix& w, const float* x, std::size_t n, ThreadPool* pool) {
    kernels::matvec_batch_bf16_dot(y, weights(w), x, n, w.rows, w.cols, pool);
  }
  static void matvec_gather(float* y, const Matrix& w, const float* x,
                            std::span<const std::uint32_t> rows) {
    kernels::matvec_gather_bf16_dot(y, weights(w), x, rows, w.cols);
  }
  static void dequantize_row(const Matrix& w, std::size_t r, float* out) {
    kernels::widen(out, weights(w) + r * w.cols, w.cols);
  }
  static Segment segment(const Matrix& w, float* y) noexcept { return {y, weights(w), w.rows}; }
  static void matvec(std::span<const Segment> segments, const float* x, std::size_t cols,
                     ThreadPool* pool) {
    kernels::matvec_bf16_dot(segments, x, cols, pool);
  }
};

}  // namespace calm::formats
