// Builds: a user-defined measure and schedule that satisfy the concepts.
#include <calm/decoder.hpp>

#include "unit/test_decoder_toy_backend.hpp"

struct Measure {
  static constexpr bool needs_logits = false;
  float score(const calm::ExitSignal& s) const noexcept { return float(s.layer); }
};
struct Schedule {
  static constexpr bool uses_confidence = true;
  float threshold(std::size_t, std::size_t) const noexcept { return 3.0f; }
};

int main() {
  toy::Backend b;
  calm::Decoder<toy::Backend, Measure, Schedule> dec(b);
  return dec.generate(std::vector<int>{1, 2}, 3).tokens.size() == 3 ? 0 : 1;
}
