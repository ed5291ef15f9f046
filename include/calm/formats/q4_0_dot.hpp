// q4_0-dot: q4_0's blocks (formats/q4_0.hpp: the same quantizer, layout and dequantization)
// multiplied on the int8 dot product (kernels/q4_0_dot.hpp): activations quantized to int8 blocks
// once per product, exact int32 block sums, one f32 order for every batch size and host, so each
// row of a batch is bitwise the row alone (docs/design.md §17). Quantized at load
// (LlamaOptions::weights = WeightFormat::q4_0_dot); cols % 32 == 0.
#pragma once

#include <string_view>

#include "calm/formats/format.hpp"
#include "calm/formats/int8_dot.hpp"
#include "calm/kernels/q4_0.hpp"
#include "calm/kernels/q4_0_dot.hpp"

namespace calm::formats {

struct Q4_0Dot : Int8DotFormat<kernels::Q4Codec, kernels::Int8Q4Blocks> {
  static constexpr Id id = Id::q4_0_dot;
  static constexpr std::string_view name = "q4_0_dot";
  static constexpr std::string_view range = "|w| > 8 * 65504";
};

}  // namespace calm::formats
