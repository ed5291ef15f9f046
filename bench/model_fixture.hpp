// Bench-only glue on top of the benchmark kit (<calm/benchmark.hpp>): where the bundled model
// lives in this source tree, and its test prompts. Random checkpoints, shapes, bandwidth and the
// decode comparisons are the kit's.
#pragma once

#include <calm/benchmark.hpp>
#include <calm/io/tokenizer.hpp>

#include <cstddef>
#include <cstdlib>
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

// The bundled model's larger sibling (tools/train_sibling.sh: 24.6 M parameters, 49 MB of bf16
// weights, beyond the 32 MB L3 of many hosts), not committed: $CALM_SIBLING, default
// models/shakespeare-8l-wide; empty when it is not there.
inline std::filesystem::path sibling_model() {
  const char* env = std::getenv("CALM_SIBLING");
  const std::filesystem::path dir = env && *env ? std::filesystem::path(env)
                                                : std::filesystem::path(CALM_MODELS) /
                                                      "shakespeare-8l-wide";
  return std::filesystem::exists(dir / "config.json") ? dir : std::filesystem::path();
}

}  // namespace calm::bench
