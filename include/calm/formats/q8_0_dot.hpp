// q8_0-dot: q8_0's blocks (formats/q8_0.hpp: the same quantizer, layout and dequantization)
// multiplied on the int8 dot product (kernels/q8_0_dot.hpp): activations quantized to int8 blocks
// once per product, exact int32 block sums, one f32 order for every batch size and host, so each
// row of a batch is bitwise the row alone (docs/design.md §16). Quantized at load
// (LlamaOptions::weights = WeightFormat::q8_0_dot); cols % 32 == 0.
#pragma once

#include <string_view>

#include "calm/formats/format.hpp"
#include "calm/formats/int8_dot.hpp"
#include "calm/kernels/q8_0.hpp"
#include "calm/kernels/q8_0_dot.hpp"

namespace calm::formats {

struct Q8_0Dot : Int8DotFormat<kernels::Q8Codec, kernels::Int8Q8Blocks> {
  static constexpr Id id = Id::q8_0_dot;
  static constexpr std::string_view name = "q8_0_dot";
  static constexpr std::string_view range = "|w| > 127 * 65504";
};

}  // namespace calm::formats
