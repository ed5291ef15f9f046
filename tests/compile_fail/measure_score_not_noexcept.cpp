// Must not compile: score() may throw (the decoder's hot loop assumes it cannot).
#include <calm/decoder.hpp>
#include <calm/schedule/constant.hpp>

#include "unit/test_decoder_toy_backend.hpp"

struct Measure {
  static constexpr bool needs_logits = true;
  float score(const calm::ExitSignal&) const { return 1.0f; }
};

int main() {
  toy::Backend b;
  calm::Decoder<toy::Backend, Measure, calm::ConstantThreshold> dec(b);
  return int(dec.generate(std::vector<int>{1}, 2).tokens.size());
}
