// CALM's decoding (Schuster et al. 2022, §3; docs/design.md §3-§5): a confidence measure scored
// at each exit point against a thresholded schedule.
//
// Per generated token t (after the prompt, which always runs all layers):
//   x := embed(previous token)
//   for layer i = 1..L:  x := layer_i(x)            (writes layer i's K/V at position pos)
//     at an exit point i < L:  c := measure(x, ...);  exit if c >= lambda_t
//   skipped layers k > i get K/V from x (propagate) or run fully on a copy (true_cache)
//   token := sampler(W_head . RMSNorm_final(x))
//
// Policies are stored with [[no_unique_address]]: an empty policy adds no bytes, and what a
// measure does not need is compiled out (`if constexpr`): a measure with needs_logits = false
// never triggers the V x d projection at exit points. A measure that narrows its checks
// (traits::narrows_logits, docs/design.md §3d) gets the full projection at a token's first check
// and only its candidates' rows at the later ones.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "calm/decoding/common.hpp"

namespace calm {

template <class Backend, class Confidence, class Schedule>
  requires TransformerBackend<Backend> && ConfidenceMeasure<Confidence> &&
           ExitSchedule<Schedule> && (Schedule::uses_confidence) &&
           (!traits::is_local_oracle<Schedule>())
class Decoder<Backend, Confidence, Schedule>
    : public detail::DecoderLoop<Decoder<Backend, Confidence, Schedule>, Backend, Confidence,
                                 Schedule> {
  using Loop = detail::DecoderLoop<Decoder, Backend, Confidence, Schedule>;
  friend Loop;

  static constexpr bool kNeedsLogits = Confidence::needs_logits;
  static constexpr bool kNeedsNormed = kNeedsLogits || traits::needs_normed_state<Confidence>();
  static constexpr bool kNeedsPrevious = traits::needs_previous_state<Confidence>();
  static constexpr bool kNarrows = kNeedsLogits && traits::narrows_logits<Confidence>();
  static_assert(!kNarrows || traits::HasLmHeadRows<std::remove_reference_t<Backend>>,
                "calm::Decoder: a measure that narrows its checks (candidates()) needs a Backend "
                "with `void lm_head_rows(std::span<const float> normed, std::span<const "
                "std::uint32_t> rows, std::span<float> logits)` (calm/concepts.hpp)");

 public:
  using Loop::Loop;

 private:
  void on_first_token(TokenStats& ts) noexcept {
    ts.threshold = this->schedule_.threshold(1, this->max_new_);
  }

  void start_token(int token, std::size_t, TokenStats& ts) {
    this->backend_.embed(token, Loop::span(this->x_));
    lambda_ = this->schedule_.threshold(ts.step, this->max_new_);
    ts.threshold = lambda_;
    // A threshold above every reachable score cannot be met: skip all checks (exact, §8).
    may_exit_ = !(lambda_ > traits::max_score<Confidence>());
    have_previous_ = false;
    logits_ready_ = false;
    if constexpr (kNarrows) {
      candidates_ready_ = false;
      if (candidates_.size() != candidate_count()) {  // the measure was replaced since
        candidates_.assign(candidate_count(), 0);
        candidate_logits_ = AlignedBuffer<float>(candidate_count());
      }
    }
  }

  bool exit_after(std::size_t layer, TokenStats& ts, detail::StepTimes& times) {
    if (layer == this->num_layers_) return true;
    if (!may_exit_ || !this->is_exit_point_[layer]) return false;
    const auto c0 = detail::now();
    times.layers += detail::seconds(this->layers_since_, c0);
    const float c = check(layer, ts.step, have_previous_);
    ++ts.checks;
    this->layers_since_ = detail::now();
    times.checks += detail::seconds(c0, this->layers_since_);
    if (c >= lambda_ && std::isfinite(c)) {  // a NaN or Inf score never exits
      ts.confidence = c;
      // The check's projection is the output's, unless it covered the candidates only.
      logits_ready_ = kNeedsLogits && !last_check_narrowed_;
      return true;
    }
    if constexpr (kNeedsPrevious) {
      if (traits::uses_previous_state(this->measure_)) {
        std::copy(this->x_.begin(), this->x_.end(), previous_.data());
        have_previous_ = true;
      }
    }
    return false;
  }
  bool logits_from_check() const noexcept { return logits_ready_; }

  float check(std::size_t layer, std::size_t step, bool have_previous) {
    auto& b = this->backend_;
    ExitSignal s;
    s.layer = layer;
    s.num_layers = this->num_layers_;
    s.step = step;
    s.state = Loop::cspan(this->x_);
    if constexpr (kNeedsPrevious) {
      if (have_previous) s.previous_state = Loop::cspan(previous_);
    }
    if constexpr (kNeedsNormed) {
      b.final_norm(s.state, Loop::span(this->normed_));
      s.normed_state = Loop::cspan(this->normed_);
    }
    if constexpr (kNarrows) {
      if (candidates_ready_) {
        const std::span<const std::uint32_t> rows(candidates_.data(), candidates_.size());
        b.lm_head_rows(Loop::cspan(this->normed_), rows, Loop::span(candidate_logits_));
        s.logits = Loop::cspan(candidate_logits_);
        s.candidates = rows;
        last_check_narrowed_ = true;
        return this->measure_.score(s);
      }
    }
    if constexpr (kNeedsLogits) {
      b.lm_head(Loop::cspan(this->normed_), Loop::span(this->logits_));
      s.logits = Loop::cspan(this->logits_);
    }
    if constexpr (kNarrows) {  // the token's first check: its k most likely tokens
      kernels::top_k(this->logits_.data(), this->vocab_, candidates_.size(), candidates_.data());
      candidates_ready_ = true;
      last_check_narrowed_ = false;
    }
    return this->measure_.score(s);
  }

  std::size_t candidate_count() const noexcept {
    if constexpr (kNarrows) {
      const std::size_t k = this->measure_.candidates();
      return k < this->vocab_ ? k : this->vocab_;
    } else {
      return 0;
    }
  }

  // (hidden) state at the previous exit point, for measures that read it.
  AlignedBuffer<float> previous_{kNeedsPrevious ? this->hidden_ : 0};
  // The candidate set of the token in flight (sorted token ids) and their logits at the last
  // narrowed check; sized once from the measure's k.
  std::vector<std::uint32_t> candidates_ = std::vector<std::uint32_t>(candidate_count());
  AlignedBuffer<float> candidate_logits_{candidate_count()};
  bool candidates_ready_ = false;     // the token in flight has had its full check
  bool last_check_narrowed_ = false;  // the last check read the candidates' logits only
  // The token in flight: its threshold, whether any check can pass, whether previous_ holds the
  // state at its last exit point, whether the exit check left the output's logits.
  float lambda_ = 0.0f;
  bool may_exit_ = false, have_previous_ = false, logits_ready_ = false;
};

}  // namespace calm
