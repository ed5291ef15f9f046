// The local oracle (Schuster et al. 2022, §5; docs/design.md §7): an analysis mode, not a speed
// mode. Every token runs the full model (so the cache is the full model's), the exit head is
// applied at every exit point, and the token is reported as leaving at the first exit point
// whose argmax equals layer L's; the output is that layer's distribution.
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <utility>
#include <vector>

#include "calm/decoding/common.hpp"

namespace calm {

template <class Backend, class Confidence, class Schedule>
  requires TransformerBackend<Backend> && ConfidenceMeasure<Confidence> &&
           ExitSchedule<Schedule> && (traits::is_local_oracle<Schedule>())
class Decoder<Backend, Confidence, Schedule>
    : public detail::DecoderLoop<Decoder<Backend, Confidence, Schedule>, Backend, Confidence,
                                 Schedule> {
  using Loop = detail::DecoderLoop<Decoder, Backend, Confidence, Schedule>;
  friend Loop;

 public:
  using Loop::Loop;

 private:
  void forward_alone(int token, std::size_t pos, TokenStats& ts, detail::StepTimes& times) {
    auto& b = this->backend_;
    const std::size_t L = this->num_layers_, h = this->hidden_;
    const std::span<float> x = Loop::span(this->x_);
    const std::span<const float> logits = Loop::cspan(this->logits_);
    auto l0 = detail::now();
    b.embed(token, x);
    for (std::size_t layer = 1; layer <= L; ++layer) {
      b.run_layer(layer - 1, x, pos);
      if (layer < L && !this->is_exit_point_[layer]) continue;
      const auto c0 = detail::now();
      times.layers += detail::seconds(l0, c0);
      this->head(std::span<const float>(x));
      argmax_[layer] = kernels::argmax(logits.data(), logits.size());
      if (layer < L) {
        std::copy(x.begin(), x.end(), states_.data() + (layer - 1) * h);
        ++ts.checks;
      }
      l0 = detail::now();
      times.checks += detail::seconds(c0, l0);
    }
    std::size_t exit_at = L;
    for (std::size_t layer = 1; layer < L; ++layer) {
      if (this->is_exit_point_[layer] && argmax_[layer] == argmax_[L]) {
        exit_at = layer;
        break;
      }
    }
    ts.exit_layer = exit_at;
    if (exit_at < L) {  // logits of the exit layer; the cache is already the full model's
      const auto h0 = detail::now();
      const std::span<const float> state(states_.data() + (exit_at - 1) * h, h);
      this->head(state);
      std::copy(state.begin(), state.end(), x.begin());
      times.head += detail::seconds(h0, detail::now());
    }
  }

  AlignedBuffer<float> states_{this->num_layers_ * this->hidden_};  // (L, hidden) after each layer
  std::vector<std::size_t> argmax_ = std::vector<std::size_t>(this->num_layers_ + 1, 0);  // (L + 1)
};

}  // namespace calm
