// q8_0: blocks of 32 int8 quants with one scale each (the numerics of GGUF's Q8_0, not its file
// layout), quantized at load from f32/f16/bf16; the kernels and the layout are in
// kernels/q8_0.hpp: `data` holds the quants (cols bytes per row), `scales` one f32 per block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "calm/formats/format.hpp"
#include "calm/kernels/q8_0.hpp"

namespace calm::formats {

struct Q8_0 {
  using Segment = kernels::Q8Segment;
  static constexpr Id id = Id::q8_0;
  static constexpr std::string_view name = "q8_0";
  static constexpr std::size_t block = kernels::kQ8Block;
  static constexpr std::size_t alignment = 1;

  static constexpr std::size_t data_bytes(std::size_t cols) noexcept { return cols; }
  static constexpr std::size_t scale_bytes(std::size_t cols) noexcept {
    return cols / block * sizeof(float);
  }

  static const std::int8_t* quants(const Matrix& w) noexcept {
    return reinterpret_cast<const std::int8_t*>(w.data);
  }

  // Quantizes one row src(cols) into its quants and scales; false if a weight is not finite or
  // beyond the format's range (kernels::quantize_row_q8_0).
  template <class T>
  static bool quantize_row(std::byte* data, float* scales, const T* src, std::size_t cols) noexcept {
    return kernels::quantize_row_q8_0(reinterpret_cast<std::int8_t*>(data), scales, src, cols);
  }
  // Why quantize_row refuses a row, for the error message.
  static constexpr std::string_view range = "|w| > 127 * 65504";

  static void matvec(float* y, const Matrix& w, const float* x, ThreadPool* pool) {
    kernels::matvec_q8_0(y, quants(w), w.scales, x, w.rows, w.cols, pool);
  }
  static void matvec_batch(float* y, const Matrix& w, const float* x, std::size_t n,
                           ThreadPool* pool) {
    kernels::matvec_batch_q8_0(y, quants(w), w.scales, x, n, w.rows, w.cols, pool);
  }
  static void matmul(float* y, const Matrix& w, const float* x, std::size_t n, ThreadPool* pool) {
    kernels::matmul_q8_0(y, quants(w), w.scales, x, n, w.rows, w.cols, pool);
  }
  static void matvec_gather(float* y, const Matrix& w, const float* x,
                            std::span<const std::uint32_t> rows) {
    kernels::matvec_gather_q8_0(y, quants(w), w.scales, x, rows, w.cols);
  }
  static void dequantize_row(const Matrix& w, std::size_t r, float* out) {
    kernels::dequantize_row_q8_0(out, quants(w) + r * w.cols, w.scales + r * (w.cols / block),
                                 w.cols);
  }
  static Segment segment(const Matrix& w, float* y) noexcept {
    return {y, quants(w), w.scales, w.rows};
  }
  static void matvec(std::span<const Segment> segments, const float* x, std::size_t cols,
                     ThreadPool* pool) {
    kernels::matvec_q8_0(segments, x, cols, pool);
  }
};

}  // namespace calm::formats
