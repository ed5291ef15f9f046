// calm.safetensors, the exit classifier: a safetensors file with two tensors of fixed shapes and
// finite values, read for the bundled model's hidden size.
#include <calm/confidence/exit_classifier.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = calm::fuzz::write_input(data, size, "calm.safetensors");
  return calm::fuzz::refused_or_accepted(
      [&] { (void)calm::ExitClassifier::load(path, 256); });
}
