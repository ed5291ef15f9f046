// tokenizer.json (Hugging Face BPE): the file, then encoding and decoding of a short text
// with whatever it accepted.
#include <calm/io/hf_tokenizer.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = calm::fuzz::write_input(data, size, "tokenizer.json");
  return calm::fuzz::refused_or_accepted([&] {
    const calm::io::HfTokenizer tok = calm::io::HfTokenizer::load(path);
    const std::vector<int> ids = tok.encode("Hello, world! 123 \xE6\x97\xA5 \xFF");
    (void)tok.decode(ids);
  });
}
