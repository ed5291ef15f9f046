// The unblocked formats: weights as a checkpoint stores them (f32, f16, bf16), one element per
// weight, widened to f32 inside the kernels (kernels/matvec.hpp, kernels/matmul.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "calm/core/dtype.hpp"
#include "calm/formats/format.hpp"
#include "calm/kernels/elementwise.hpp"
#include "calm/kernels/matmul.hpp"
#include "calm/kernels/matvec.hpp"

namespace calm::formats {

template <class T, Id I>
struct Dense {
  using element = T;
  using Segment = kernels::MatvecSegment<T>;
  static constexpr Id id = I;
  static constexpr std::string_view name = I == Id::f32 ? "f32" : I == Id::f16 ? "f16" : "bf16";
  static constexpr std::size_t block = 1;
  static constexpr std::size_t alignment = alignof(T);

  static constexpr std::size_t data_bytes(std::size_t cols) noexcept { return cols * sizeof(T); }
  static constexpr std::size_t scale_bytes(std::size_t) noexcept { return 0; }

  static const T* weights(const Matrix& w) noexcept { return reinterpret_cast<const T*>(w.data); }

  static void matvec(float* y, const Matrix& w, const float* x, ThreadPool* pool) {
    kernels::matvec(y, weights(w), x, w.rows, w.cols, pool);
  }
  static void matvec_batch(float* y, const Matrix& w, const float* x, std::size_t n,
                           ThreadPool* pool) {
    kernels::matvec_batch(y, weights(w), x, n, w.rows, w.cols, pool);
  }
  static void matmul(float* y, const Matrix& w, const float* x, std::size_t n, ThreadPool* pool) {
    kernels::matmul(y, weights(w), x, n, w.rows, w.cols, pool);
  }
  static void matvec_gather(float* y, const Matrix& w, const float* x,
                            std::span<const std::uint32_t> rows) {
    kernels::matvec_gather(y, weights(w), x, rows, w.cols);
  }
  static void dequantize_row(const Matrix& w, std::size_t r, float* out) {
    kernels::widen(out, weights(w) + r * w.cols, w.cols);
  }
  static Segment segment(const Matrix& w, float* y) noexcept { return {y, weights(w), w.rows}; }
  static void matvec(std::span<const Segment> segments, const float* x, std::size_t cols,
                     ThreadPool* pool) {
    kernels::matvec(segments, x, cols, pool);
  }
};

using F32 = Dense<float, Id::f32>;
using F16 = Dense<f16, Id::f16>;
using BF16 = Dense<bf16, Id::bf16>;

}  // namespace calm::formats
