// config.json: every key's type and range, rope_scaling, token ids, sizes that overflow.
#include <calm/io/hf_config.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = calm::fuzz::write_input(data, size, "config.json");
  return calm::fuzz::refused_or_accepted([&] { (void)calm::load_llama_config(path); });
}
