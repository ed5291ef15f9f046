// Decoding with a schedule that uses no confidence: every token leaves at the layer the schedule
// names (Never: the full model; StaticExit: a fixed layer, the static baseline of the paper's
// §6 and LayerSkip's draft). No check runs, so Decoder<B, NoConfidence, Never> is the plain
// layer loop (bench_decoder measures it against one).
#pragma once

#include <cstddef>
#include <span>
#include <utility>

#include "calm/decoding/common.hpp"

namespace calm {

template <class Backend, class Confidence, class Schedule>
  requires TransformerBackend<Backend> && ConfidenceMeasure<Confidence> &&
           ExitSchedule<Schedule> && (!Schedule::uses_confidence) &&
           (!traits::is_local_oracle<Schedule>())
class Decoder<Backend, Confidence, Schedule>
    : public detail::DecoderLoop<Decoder<Backend, Confidence, Schedule>, Backend, Confidence,
                                 Schedule> {
  using Loop = detail::DecoderLoop<Decoder, Backend, Confidence, Schedule>;
  friend Loop;

 public:
  // The measure is kept only so that every strategy has one signature; it is never scored.
  using Loop::Loop;

 private:
  void forward(int token, std::size_t pos, TokenStats& ts, detail::StepTimes& times) {
    auto& b = this->backend_;
    const std::size_t L = this->num_layers_;
    const std::span<float> x = Loop::span(this->x_);
    std::size_t exit_at = this->schedule_.fixed_exit_layer(L);
    if (exit_at < 1 || exit_at > L) exit_at = L;
    const auto l0 = detail::now();
    b.embed(token, x);
    for (std::size_t layer = 0; layer < exit_at; ++layer) b.run_layer(layer, x, pos);
    const auto p0 = detail::now();
    times.layers += detail::seconds(l0, p0);
    ts.exit_layer = exit_at;
    if (exit_at < L) {
      this->propagate(exit_at, pos);
      times.propagation += detail::seconds(p0, detail::now());
    }
    const auto h0 = detail::now();
    this->head(std::span<const float>(x));
    times.head += detail::seconds(h0, detail::now());
  }

};

}  // namespace calm
