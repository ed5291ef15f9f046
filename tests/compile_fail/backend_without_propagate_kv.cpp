// Must not compile: a backend that cannot fill the K/V of skipped layers (docs/design.md §5).
#include <calm/confidence/softmax_response.hpp>
#include <calm/decoder.hpp>
#include <calm/schedule/constant.hpp>

#include "unit/test_decoder_toy_backend.hpp"

struct Backend {
  toy::Backend inner;
  std::size_t num_layers() const noexcept { return inner.num_layers(); }
  std::size_t hidden_size() const noexcept { return inner.hidden_size(); }
  std::size_t vocab_size() const noexcept { return inner.vocab_size(); }
  std::size_t max_context() const noexcept { return inner.max_context(); }
  void embed(int t, std::span<float> x) const { inner.embed(t, x); }
  void run_layer(std::size_t i, std::span<float> x, std::size_t p) { inner.run_layer(i, x, p); }
  void final_norm(std::span<const float> x, std::span<float> o) const { inner.final_norm(x, o); }
  void lm_head(std::span<const float> n, std::span<float> l) { inner.lm_head(n, l); }
  void prefill(std::span<const int> t, std::size_t p, std::span<float> x) {
    inner.prefill(t, p, x);
  }
  std::size_t length() const noexcept { return inner.length(); }
  void truncate(std::size_t n) { inner.truncate(n); }
};

int main() {
  Backend b;
  calm::Decoder<Backend, calm::SoftmaxResponse, calm::ConstantThreshold> dec(b);
  return int(dec.generate(std::vector<int>{1}, 2).tokens.size());
}
