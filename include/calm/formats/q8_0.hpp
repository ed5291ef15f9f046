// q8_0: blocks of 32 int8 quants with one scale each (the numerics of GGUF's Q8_0, not its file
// layout), quantized at load from f32/f16/bf16. The codec, its quantizer and the layout are in
// kernels/q8_0.hpp; the kernels are the block formats' (formats/block_format.hpp) but for the
// prefill, which has its own AVX512-BF16 panels (kernels::matmul_q8_0).
#pragma once

#include <cstddef>
#include <string_view>

#include "calm/core/thread_pool.hpp"
#include "calm/formats/block_format.hpp"
#include "calm/formats/format.hpp"
#include "calm/kernels/q8_0.hpp"

namespace calm::formats {

struct Q8_0 : BlockFormat<kernels::Q8Codec> {
  static constexpr Id id = Id::q8_0;
  static constexpr std::string_view name = "q8_0";
  // Why quantize_row refuses a row, for the error message.
  static constexpr std::string_view range = "|w| > 127 * 65504";

  static void matmul(float* y, const Matrix& w, const float* x, std::size_t n, ThreadPool* pool) {
    kernels::matmul_q8_0(y, units(w), w.scales, x, n, w.rows, w.cols, pool);
  }
};

}  // namespace calm::formats
