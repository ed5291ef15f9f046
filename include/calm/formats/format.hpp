// Weight formats: how a linear layer's matrix W (rows, cols) is held in memory, and the kernels
// that multiply by it. A format describes one row -- its bytes, in two arrays (`data`, and
// `scales` for block formats), and the block of weights that shares a scale -- and supplies
// the row kernels the model calls: y = W x (decode), Y = X W^T one row of X at a time (bitwise
// decode's, for speculative verification) and as a matmul (prefill), a few rows of W (the
// candidate exit check), one row widened to f32 (the embedding lookup), and one pass over
// several matrices that share x (q/k/v, gate/up). Adding a format is one header defining a
// struct that satisfies `Format` and one entry in formats/formats.hpp's list (docs/design.md
// §13).
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "calm/core/thread_pool.hpp"

namespace calm::formats {

// Every format calm holds weights in; the formats/*.hpp headers define one struct each.
enum class Id : std::uint8_t { f32, f16, bf16, q8_0, q4_0, bf16_dot, q8_0_dot, q4_0_dot };

// A matrix's memory, as its format lays it out: `data` the per-row payload (row r at
// data + r * F::data_bytes(cols)), `scales` the per-block f32 scales of a block format
// (row r at scales + r * F::scale_bytes(cols) / 4), null for an unblocked one.
struct Matrix {
  const std::byte* data = nullptr;
  const float* scales = nullptr;
  std::size_t rows = 0, cols = 0;
};

// The requirements on a format F. A format is stateless: its functions take the matrix.
template <class F>
concept Format = requires(const Matrix& w, float* y, const float* x, std::size_t n,
                          std::size_t r, ThreadPool* pool, std::span<const std::uint32_t> rows,
                          std::span<const typename F::Segment> segments) {
  { F::id } -> std::convertible_to<Id>;
  { F::name } -> std::convertible_to<std::string_view>;
  // Weights that share a scale (1: none); a matrix's cols must be a multiple of it.
  { F::block } -> std::convertible_to<std::size_t>;
  // Alignment the data array needs (that of an element the kernels load).
  { F::alignment } -> std::convertible_to<std::size_t>;
  { F::data_bytes(n) } -> std::same_as<std::size_t>;   // one row's payload, for n columns
  { F::scale_bytes(n) } -> std::same_as<std::size_t>;  // one row's scales
  F::matvec(y, w, x, pool);                             // y(rows) = W x
  F::matvec_batch(y, w, x, n, pool);  // Y(n, rows) = X W^T, row t bitwise matvec(x_t)
  F::matmul(y, w, x, n, pool);        // Y(n, rows) = X W^T, the prefill kernel
  F::matvec_gather(y, w, x, rows);    // y(k) = row rows[k] of W x, bitwise matvec's
  F::dequantize_row(w, r, y);         // y(cols) := row r of W in f32
  // One output of a pass over several matrices that share x and cols (bitwise each matvec).
  { F::segment(w, y) } -> std::same_as<typename F::Segment>;
  F::matvec(segments, x, n, pool);
};

// A block format that weights are quantized to at load: quantize_row(data, scales, src, cols)
// writes one row from f32/f16/bf16 and returns false (naming no element) when a weight is not
// finite or beyond `range`, the format's limit in words.
template <class F>
concept QuantizedFormat = Format<F> && F::block >= 2 &&
                          requires(std::byte* data, float* scales, const float* src, std::size_t n) {
  { F::quantize_row(data, scales, src, n) } -> std::same_as<bool>;
  { F::range } -> std::convertible_to<std::string_view>;
};

// Bytes one row of F takes in both arrays.
template <Format F>
constexpr std::size_t row_bytes(std::size_t cols) noexcept {
  return F::data_bytes(cols) + F::scale_bytes(cols);
}

}  // namespace calm::formats
