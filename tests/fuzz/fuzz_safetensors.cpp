// A safetensors file: header length, JSON header (dtypes, shapes, offsets, __metadata__), data.
#include <calm/io/safetensors.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = calm::fuzz::write_input(data, size, "model.safetensors");
  return calm::fuzz::refused_or_accepted([&] {
    const calm::io::SafeTensorsFile f = calm::io::SafeTensorsFile::open(path);
    for (const calm::io::TensorView& t : f.tensors()) {
      if (f.find(t.name) != &t) std::abort();  // the lookup finds each tensor it lists
      (void)t.first_non_finite();               // reads every element it claims to hold
    }
  });
}
