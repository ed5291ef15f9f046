// Must not compile: the measure does not say whether it reads the logits.
#include <calm/decoder.hpp>
#include <calm/schedule/constant.hpp>

#include "unit/test_decoder_toy_backend.hpp"

struct Measure {
  float score(const calm::ExitSignal&) const noexcept { return 1.0f; }
};

int main() {
  toy::Backend b;
  calm::Decoder<toy::Backend, Measure, calm::ConstantThreshold> dec(b);
  return int(dec.generate(std::vector<int>{1}, 2).tokens.size());
}
