// q4_0: blocks of 32 weights as 4-bit integers with one scale each, the numerics of GGUF's Q4_0
// (not its file layout), quantized at load from f32/f16/bf16. The codec, its quantizer and the
// layout are in kernels/q4_0.hpp; the kernels are the block formats' (formats/block_format.hpp).
// 0.625 bytes per weight (q8_0: 1.125, bf16: 2).
#pragma once

#include <string_view>

#include "calm/formats/block_format.hpp"
#include "calm/formats/format.hpp"
#include "calm/kernels/q4_0.hpp"

namespace calm::formats {

struct Q4_0 : BlockFormat<kernels::Q4Codec> {
  static constexpr Id id = Id::q4_0;
  static constexpr std::string_view name = "q4_0";
  // Why quantize_row refuses a row, for the error message.
  static constexpr std::string_view range = "|w| > 8 * 65504";
};

}  // namespace calm::formats
