// q8_0-dot: q8_0's blocks (formats/q8_0.hpp: the same quantizer, layout and dequantization)
// multiplied on the int8 dot product (kernels/q8_0_dot.hpp): activations quantized to int8 blocks
// once per product, exact int32 block sums, one f32 order for every batch size and host, so each
// row of a batch is bitwise the row alone (docs/design.md §16). Quantized at load
// (LlamaOptions::weights = WeightFormat::q8_0_dot); cols % 32 == 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "calm/core/thread_pool.hpp"
#include "calm/formats/block_format.hpp"
#include "calm/formats/format.hpp"
#include "calm/kernels/q8_0.hpp"
#include "calm/kernels/q8_0_dot.hpp"

namespace calm::formats {

struct Q8_0Dot : BlockFormat<kernels::Q8Codec> {
  static constexpr Id id = Id::q8_0_dot;
  static constexpr std::string_view name = "q8_0_dot";
  static constexpr std::string_view range = "|w| > 127 * 65504";

  static void matvec(float* y, const Matrix& w, const float* x, ThreadPool* pool) {
    kernels::matvec_q8_0_dot(y, units(w), w.scales, x, w.rows, w.cols, pool);
  }
  static void matvec_batch(float* y, const Matrix& w, const float* x, std::size_t n,
                           ThreadPool* pool) {
    kernels::matvec_batch_q8_0_dot(y, units(w), w.scales, x, n, w.rows, w.cols, pool);
  }
  // The prefill runs the same per-row products (every weight row read once for all tokens).
  static void matmul(float* y, const Matrix& w, const float* x, std::size_t n, ThreadPool* pool) {
    kernels::matvec_batch_q8_0_dot(y, units(w), w.scales, x, n, w.rows, w.cols, pool);
  }
  static void matvec_gather(float* y, const Matrix& w, const float* x,
                            std::span<const std::uint32_t> rows) {
    kernels::matvec_gather_q8_0_dot(y, units(w), w.scales, x, rows, w.cols);
  }
  static void matvec(std::span<const Segment> segments, const float* x, std::size_t cols,
                     ThreadPool* pool) {
    kernels::matvec_q8_0_dot(segments, x, cols, pool);
  }
};

}  // namespace calm::formats
