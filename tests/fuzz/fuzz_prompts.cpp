// A JSON-lines prompt file ({"prompt": ..., "reference": ...} per line).
#include <calm/io/prompts.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = calm::fuzz::write_input(data, size, "prompts.jsonl");
  return calm::fuzz::refused_or_accepted([&] { (void)calm::io::read_prompt_file(path); });
}
