// Bench-only glue on top of the benchmark kit (<calm/benchmark.hpp>): where the bundled model
// lives in this source tree, and its test prompts. Random checkpoints, shapes, bandwidth and the
// decode comparisons are the kit's.
#pragma once

#include <calm/benchmark.hpp>
#include <calm/io/tokenizer.hpp>

#include <cstddef>
#include <filesystem>
#include <vector>

namespace calm::bench {

// The bundled model (models/shakespeare-8l), trained to exit early.
inline const std::filesystem::path kBundled = std::filesystem::path(CALM_MODELS) / "shakespeare-8l";

// The first `count` prompts of its test split, tokenized, each with room for max_new_tokens.
inline std::vector<std::vector<int>> bundled_test_prompts(std::size_t count,
                                                          std::size_t max_new_tokens = 64) {
  const calm::Tokenizer tok = calm::Tokenizer::load(kBundled / "tokenizer.model");
  return encode_prompt_file(kBundled / "data" / "test.jsonl", tok, count, max_new_tokens, 256);
}

}  // namespace calm::bench
