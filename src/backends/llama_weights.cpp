// The Llama weights' loader and its quantizing copies, compiled once for calm's own programs,
// tests and benchmarks (CALM_COMPILED; include/calm/core/compiled.hpp).
#define CALM_COMPILE_LLAMA_WEIGHTS
#include "calm/backends/llama/weights.hpp"

namespace calm {
template WeightArena LlamaWeights::quantize_to_arena<formats::Q8_0>(const io::Checkpoint&, bool);
template WeightArena LlamaWeights::quantize_to_arena<formats::Q4_0>(const io::Checkpoint&, bool);
template WeightArena LlamaWeights::quantize_to_arena<formats::BF16Dot>(const io::Checkpoint&, bool);
template WeightArena LlamaWeights::quantize_to_arena<formats::Q8_0Dot>(const io::Checkpoint&, bool);
template WeightArena LlamaWeights::quantize_to_arena<formats::Q4_0Dot>(const io::Checkpoint&, bool);
}  // namespace calm
