// BlockFormat<Codec>: a weight format of 32-weight blocks with one f32 scale each, whose kernels
// are kernels/blocks.hpp's drivers over the codec (the block's bytes and how they widen, its
// quantizer). q8_0 and q4_0 are this template with their codecs; a format may override a kernel
// by declaring its own (q8_0 keeps its AVX512-BF16 prefill panels: formats/q8_0.hpp).
//
// Layout of a (rows, cols) matrix, cols a multiple of 32: `data` (rows, cols / 32 * Codec::units)
// codec units, each row's blocks contiguous; `scales` (rows, cols / 32) f32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "calm/core/thread_pool.hpp"
#include "calm/formats/format.hpp"
#include "calm/kernels/blocks.hpp"

namespace calm::formats {

template <class Codec>
struct BlockFormat {
  using unit = typename Codec::unit;
  using Segment = kernels::BlockSegment<Codec>;
  static constexpr std::size_t block = kernels::kBlockWeights;
  static constexpr std::size_t alignment = 1;

  static constexpr std::size_t data_bytes(std::size_t cols) noexcept {
    return cols / block * Codec::units * sizeof(unit);
  }
  static constexpr std::size_t scale_bytes(std::size_t cols) noexcept {
    return cols / block * sizeof(float);
  }
  static const unit* units(const Matrix& w) noexcept {
    return reinterpret_cast<const unit*>(w.data);
  }

  // Quantizes one row src(cols) into its codes and scales; false if a weight is not finite or
  // beyond the format's `range`.
  template <class T>
  static bool quantize_row(std::byte* data, float* scales, const T* src, std::size_t cols) noexcept {
    return Codec::quantize_row(reinterpret_cast<unit*>(data), scales, src, cols);
  }

  static void matvec(float* y, const Matrix& w, const float* x, ThreadPool* pool) {
    const Segment segment{y, units(w), w.scales, w.rows};
    kernels::matvec_blocks<Codec>(std::span<const Segment>(&segment, 1), x, w.cols, pool);
  }
  static void matvec_batch(float* y, const Matrix& w, const float* x, std::size_t n,
                           ThreadPool* pool) {
    kernels::matvec_batch_blocks<Codec>(y, units(w), w.scales, x, n, w.rows, w.cols, pool);
  }
  static void matmul(float* y, const Matrix& w, const float* x, std::size_t n, ThreadPool* pool) {
    kernels::matmul_blocks<Codec>(y, units(w), w.scales, x, n, w.rows, w.cols, pool);
  }
  static void matvec_gather(float* y, const Matrix& w, const float* x,
                            std::span<const std::uint32_t> rows) {
    kernels::matvec_gather_blocks<Codec>(y, units(w), w.scales, x, rows, w.cols);
  }
  static void dequantize_row(const Matrix& w, std::size_t r, float* out) {
    kernels::dequantize_row_blocks<Codec>(out, units(w), w.scales, r, w.cols);
  }
  static Segment segment(const Matrix& w, float* y) noexcept {
    return {y, units(w), w.scales, w.rows};
  }
  static void matvec(std::span<const Segment> segments, const float* x, std::size_t cols,
                     ThreadPool* pool) {
    kernels::matvec_blocks<Codec>(segments, x, cols, pool);
  }
};

}  // namespace calm::formats
