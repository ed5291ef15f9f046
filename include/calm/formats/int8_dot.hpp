// Int8DotFormat<Codec, Blocks>: a block format's blocks as stored (Codec's quantizer, layout and
// dequantization: formats/block_format.hpp) multiplied on the int8 dot product
// (kernels/int8_dot.hpp, Blocks the way the kernels read Codec's blocks): activations quantized
// to int8 blocks once per product, exact int32 block sums, one f32 order for every batch size
// and host, so each row of a batch is bitwise the row alone (docs/design.md §16). q8_0_dot and
// q4_0_dot are this template; cols % 32 == 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "calm/core/thread_pool.hpp"
#include "calm/formats/block_format.hpp"
#include "calm/formats/format.hpp"
#include "calm/kernels/int8_dot.hpp"

namespace calm::formats {

template <class Codec, class Blocks>
struct Int8DotFormat : BlockFormat<Codec> {
  using Base = BlockFormat<Codec>;
  using typename Base::Segment;
  static_assert(std::is_same_v<typename Codec::unit, typename Blocks::unit>,
                "Int8DotFormat: the kernels must read the codec's units");

  static void matvec(float* y, const Matrix& w, const float* x, ThreadPool* pool) {
    kernels::matvec_int8_dot<Blocks>(y, Base::units(w), w.scales, x, w.rows, w.cols, pool);
  }
  static void matvec_batch(float* y, const Matrix& w, const float* x, std::size_t n,
                           ThreadPool* pool) {
    kernels::matvec_batch_int8_dot<Blocks>(y, Base::units(w), w.scales, x, n, w.rows, w.cols, pool);
  }
  // Prompts from this many tokens take the blocks dequantized to bf16 on AMX-BF16 tiles where the
  // process may; shorter ones the exact batch. TinyLlama's 5632 x 2048 q8_0 matrix (in L3, Xeon,
  // 1 thread), the batch's time over the tiles': n = 8 0.71, 12 1.11, 16 1.07, 24 1.39, 64 1.67.
  static constexpr std::size_t kAmxPrefillMinTokens = 16;

  // The prefill runs the same per-row products (every weight row read once for all tokens), or
  // from kAmxPrefillMinTokens where the process may use AMX-BF16, the blocks dequantized to bf16
  // on its tiles (prefill need not be decode's arithmetic, and the tiles have no f32 step per
  // block, weight row and token).
  static void matmul(float* y, const Matrix& w, const float* x, std::size_t n, ThreadPool* pool) {
#if CALM_AMX_BF16_BUILT
    if (n >= kAmxPrefillMinTokens && kernels::detail::blocks_on_amx(n, w.rows))
      return kernels::detail::matmul_blocks_amx<Codec>(y, Base::units(w), w.scales, x, n, w.rows,
                                                       w.cols, pool);
#endif
    matvec_batch(y, w, x, n, pool);
  }
  static void matvec_gather(float* y, const Matrix& w, const float* x,
                            std::span<const std::uint32_t> rows) {
    kernels::matvec_gather_int8_dot<Blocks>(y, Base::units(w), w.scales, x, rows, w.cols);
  }
  static void matvec(std::span<const Segment> segments, const float* x, std::size_t cols,
                     ThreadPool* pool) {
    kernels::matvec_int8_dot<Blocks>(segments, x, cols, pool);
  }
};

}  // namespace calm::formats
