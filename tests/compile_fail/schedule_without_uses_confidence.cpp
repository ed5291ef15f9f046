// Must not compile: the schedule does not say whether it compares confidences.
#include <calm/confidence/softmax_response.hpp>
#include <calm/decoder.hpp>

#include "unit/test_decoder_toy_backend.hpp"

struct Schedule {
  float threshold(std::size_t, std::size_t) const noexcept { return 0.5f; }
};

int main() {
  toy::Backend b;
  calm::Decoder<toy::Backend, calm::SoftmaxResponse, Schedule> dec(b);
  return int(dec.generate(std::vector<int>{1}, 2).tokens.size());
}
