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
  void start_token(int token, std::size_t, TokenStats&) {
    this->backend_.embed(token, Loop::span(this->x_));
  }
  bool exit_after(std::size_t layer, TokenStats&, detail::StepTimes&) const noexcept {
    return layer == exit_layer();
  }
  // The schedule's layer; out of range means the full model. Asked again at each layer (a
  // comparison) so the strategy stores nothing.
  std::size_t exit_layer() const noexcept {
    const std::size_t L = this->num_layers_, at = this->schedule_.fixed_exit_layer(L);
    return at < 1 || at > L ? L : at;
  }
};

}  // namespace calm
