// The bundled model's first test-split prompts, tokenized, for the tests that decode them
// (test_speculative, test_batch). The benchmarks' version (bench/model_fixture.hpp) also cuts
// prompts to fit the context; these are short enough as they are.
#pragma once

#include <calm/io/tokenizer.hpp>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace calm::test {

inline std::vector<std::vector<int>> bundled_test_prompts(std::size_t count) {
  const std::filesystem::path dir = std::filesystem::path(CALM_MODELS) / "shakespeare-8l";
  const calm::Tokenizer tok = calm::Tokenizer::load(dir / "tokenizer.model");
  std::ifstream in(dir / "data" / "test.jsonl");
  std::vector<std::vector<int>> prompts;
  for (std::string line; std::getline(in, line) && prompts.size() < count;)
    if (!line.empty())
      prompts.push_back(tok.encode(calm::test::parse_json(line).at("prompt").get<std::string>()));
  return prompts;
}

}  // namespace calm::test
