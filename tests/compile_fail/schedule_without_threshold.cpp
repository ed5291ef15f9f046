// Must not compile: a threshold schedule without threshold().
#include <calm/confidence/softmax_response.hpp>
#include <calm/decoder.hpp>

#include "unit/test_decoder_toy_backend.hpp"

struct Schedule {
  static constexpr bool uses_confidence = true;
  float lambda = 0.5f;
};

int main() {
  toy::Backend b;
  calm::Decoder<toy::Backend, calm::SoftmaxResponse, Schedule> dec(b);
  return int(dec.generate(std::vector<int>{1}, 2).tokens.size());
}
