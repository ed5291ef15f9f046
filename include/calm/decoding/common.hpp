// What every decoding strategy of calm::Decoder<Backend, Confidence, Schedule> shares: options,
// results, the sequence bookkeeping (prompt, resume, one step, streaming generation) and the
// primary template, which only explains why no strategy fits.
//
// A strategy is a constrained partial specialisation of Decoder (as CUTLASS writes one collective
// per dispatch policy) deriving from detail::DecoderLoop and supplying `forward()`, which feeds
// one token through the model and leaves the output logits in logits_:
//   calm/decoding/early_exit.hpp  confidence measure + thresholded schedule (CALM)
//   calm/decoding/fixed_exit.hpp  schedules that use no confidence (Never, StaticExit)
//   calm/decoding/oracle.hpp      the local oracle (analysis: full model, first agreeing layer)
// calm/decoder.hpp includes them all.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "calm/concepts.hpp"
#include "calm/core/aligned.hpp"
#include "calm/core/error.hpp"
#include "calm/kernels/argmax.hpp"
#include "calm/kernels/elementwise.hpp"
#include "calm/report.hpp"

// Set to 0 to compile the steady_clock reads out of the decoder (a few per layer).
#ifndef CALM_DECODER_TIMING
#define CALM_DECODER_TIMING 1
#endif

namespace calm {

enum class Propagation : unsigned char {
  propagate,   // docs/design.md §5 default: skipped layers compute K/V from the exit state
  true_cache,  // oracle: skipped layers run fully on a copy of the exit state
};
// Its name in flags and in calm_calibration.json.
inline std::string propagation_name(Propagation p) {
  return p == Propagation::true_cache ? "true_cache" : "propagate";
}

struct DecoderOptions {
  std::size_t first_exit = 1;  // first exit point, 1-based layer (docs/design.md §4)
  std::size_t interval = 1;    // exit points every `interval` layers after first_exit
  Propagation propagation = Propagation::propagate;
  std::vector<int> stop_tokens;  // generation ends after emitting one of these (e.g. eos)

  void validate() const {
    if (first_exit == 0)
      throw Error("DecoderOptions: first_exit is a 1-based layer and must be >= 1, got 0");
    if (interval == 0) throw Error("DecoderOptions: interval must be >= 1, got 0");
  }
};

struct GenerationResult {
  std::vector<int> tokens;  // generated tokens only
  SequenceReport report;
};

// Greedy decoding: the first index of the largest logit.
struct ArgmaxSampler {
  int sample(std::span<const float> logits) const noexcept {
    return static_cast<int>(kernels::argmax(logits.data(), logits.size()));
  }
};

// The primary template: chosen only when no strategy's constraints hold. Its static_asserts
// name the first missing member, one readable line each (the concepts say the same).
template <class Backend, class Confidence, class Schedule>
class Decoder {
  static_assert(traits::HasDimensions<Backend>,
                "calm::Decoder: the Backend needs num_layers(), hidden_size(), vocab_size() and "
                "max_context() (TransformerBackend, calm/concepts.hpp)");
  static_assert(traits::HasEmbed<Backend>,
                "calm::Decoder: the Backend needs `void embed(int token, std::span<float> x) "
                "const` (TransformerBackend, calm/concepts.hpp)");
  static_assert(traits::HasRunLayer<Backend>,
                "calm::Decoder: the Backend needs `void run_layer(std::size_t layer, "
                "std::span<float> x, std::size_t pos)` (TransformerBackend, calm/concepts.hpp)");
  static_assert(traits::HasFinalNorm<Backend>,
                "calm::Decoder: the Backend needs `void final_norm(std::span<const float> x, "
                "std::span<float> out) const` (TransformerBackend, calm/concepts.hpp)");
  static_assert(traits::HasLmHead<Backend>,
                "calm::Decoder: the Backend needs `void lm_head(std::span<const float> normed, "
                "std::span<float> logits)` (TransformerBackend, calm/concepts.hpp)");
  static_assert(traits::HasPropagateKv<Backend>,
                "calm::Decoder: the Backend needs `void propagate_kv(std::size_t layer, "
                "std::span<const float> x, std::size_t pos)` (TransformerBackend, "
                "calm/concepts.hpp)");
  static_assert(traits::HasPrefill<Backend>,
                "calm::Decoder: the Backend needs `void prefill(std::span<const int> tokens, "
                "std::size_t pos0, std::span<float> x_last)` (TransformerBackend, "
                "calm/concepts.hpp)");
  static_assert(traits::HasSequence<Backend>,
                "calm::Decoder: the Backend needs `std::size_t length() const` and `void "
                "truncate(std::size_t n)` (TransformerBackend, calm/concepts.hpp)");
  static_assert(traits::HasNeedsLogits<Confidence>,
                "calm::Decoder: the Confidence measure needs `static constexpr bool needs_logits` "
                "(true if score() reads ExitSignal::logits) (ConfidenceMeasure, "
                "calm/concepts.hpp)");
  static_assert(traits::HasScore<Confidence>,
                "calm::Decoder: the Confidence measure needs `float score(const calm::ExitSignal&) "
                "noexcept` (ConfidenceMeasure, calm/concepts.hpp)");
  static_assert(traits::HasUsesConfidence<Schedule>,
                "calm::Decoder: the Schedule needs `static constexpr bool uses_confidence` "
                "(ExitSchedule, calm/concepts.hpp)");
  static_assert(!traits::HasUsesConfidence<Schedule> || traits::HasScheduleBody<Schedule>,
                "calm::Decoder: a Schedule with uses_confidence = true needs `float "
                "threshold(std::size_t step, std::size_t max_steps) const noexcept`; one with "
                "uses_confidence = false needs `std::size_t fixed_exit_layer(std::size_t "
                "num_layers) const noexcept` (ExitSchedule, calm/concepts.hpp)");
  static_assert(!(TransformerBackend<Backend> && ConfidenceMeasure<Confidence> &&
                  ExitSchedule<Schedule>),
                "calm::Decoder: the policies fit, but no decoding strategy for them is declared "
                "here: include <calm/decoder.hpp> (or the calm/decoding/ header of the mode)");
};

namespace detail {

#if CALM_DECODER_TIMING
using Clock = std::chrono::steady_clock;
inline Clock::time_point now() noexcept { return Clock::now(); }
inline double seconds(Clock::time_point a, Clock::time_point b) noexcept {
  return std::chrono::duration<double>(b - a).count();
}
#else
struct NoTime {};
inline NoTime now() noexcept { return {}; }
inline double seconds(NoTime, NoTime) noexcept { return 0.0; }
#endif

// Seconds spent in each part of one generated token, each timed on its own.
struct StepTimes {
  double layers = 0.0, checks = 0.0, propagation = 0.0, head = 0.0;
};

// NaN or Inf logits (non-finite weights, or an activation that overflowed) leave no token to
// choose: argmax and sampling over them are meaningless, so decoding stops with an error that
// says where (docs/design.md §11). One O(vocab) pass next to the O(vocab · d) head.
// step: the generation step whose logits these are; 0: the prompt's last position's;
// kVerification: a row of speculative verification.
inline constexpr std::size_t kVerification = static_cast<std::size_t>(-1);
inline void require_finite_logits(std::span<const float> logits, std::size_t pos,
                                  std::size_t step, std::size_t exit_layer, std::size_t layers) {
  const std::size_t bad = kernels::first_non_finite(logits.data(), logits.size());
  if (bad == logits.size()) return;
  const float v = logits[bad];
  const std::string what = step == 0               ? std::string(" (the prompt's last)")
                           : step == kVerification ? std::string(" (speculative verification)")
                                                   : " (generation step " + std::to_string(step) + ")";
  throw Error("calm::Decoder: the logits at position " + std::to_string(pos) + what +
              ", from the state after layer " + std::to_string(exit_layer) + " of " +
              std::to_string(layers) + ", are not finite: token " + std::to_string(bad) +
              " has " + (std::isnan(v) ? "NaN" : v > 0 ? "+inf" : "-inf") +
              "; the weights or an activation overflowed, so no token can be chosen");
}

// The sequence bookkeeping of every strategy, and the layer loop. Derived supplies the stages of
// one token's trip through the layers:
//   void start_token(int token, std::size_t pos, TokenStats& ts);   embed into x_, set up the token
//   bool exit_after(std::size_t layer, TokenStats& ts, StepTimes& t); layer (1-based) ran on x_:
//                                                                      leave now? (true at L)
//   bool logits_from_check() const;   the exit check already left the output's logits in logits_
// forward() runs them for one sequence; calm::BatchDecoder runs the same stages for many
// sequences, their layers batched, so each row exits exactly as it would alone. The oracle's
// loop has another shape: it supplies forward_alone() instead. Derived may also supply
//   void on_first_token(TokenStats& ts);   (the token sampled from the prompt's forward)
// The decoder owns its backend (a LlamaSession holds the shared model), so the two cannot come
// apart. Decoder<LlamaSession&, ...> borrows one instead: the reference in the type says that the
// caller keeps the session alive (tests use it to inspect the cache).
template <class Derived, class Backend, class Confidence, class Schedule>
class DecoderLoop {
 public:
  using backend_type = std::remove_reference_t<Backend>;
  using confidence_type = Confidence;
  using schedule_type = Schedule;

  // Strategies inherit this constructor (`using Loop::Loop`).
  explicit DecoderLoop(Backend backend, Confidence measure = {}, Schedule schedule = {},
                       DecoderOptions options = {})
      : backend_(std::forward<Backend>(backend)),
        options_(std::move(options)),
        measure_(std::move(measure)),
        schedule_(std::move(schedule)) {
    options_.validate();
    num_layers_ = backend_.num_layers();
    hidden_ = backend_.hidden_size();
    vocab_ = backend_.vocab_size();
    if (num_layers_ == 0 || hidden_ == 0 || vocab_ < 2)
      throw Error("calm::Decoder: the backend reports " + std::to_string(num_layers_) +
                  " layers, hidden size " + std::to_string(hidden_) + ", vocabulary " +
                  std::to_string(vocab_) + " (need >= 1, >= 1, >= 2)");
    is_exit_point_.assign(num_layers_ + 1, 0);
    for (std::size_t i = options_.first_exit; i < num_layers_; i += options_.interval)
      is_exit_point_[i] = 1;
    x_ = AlignedBuffer<float>(hidden_);
    normed_ = AlignedBuffer<float>(hidden_);
    logits_ = AlignedBuffer<float>(vocab_);
    if (options_.propagation == Propagation::true_cache) scratch_ = AlignedBuffer<float>(hidden_);
  }

  Confidence& measure() noexcept { return measure_; }
  const Confidence& measure() const noexcept { return measure_; }
  Schedule& schedule() noexcept { return schedule_; }
  const Schedule& schedule() const noexcept { return schedule_; }

  backend_type& backend() noexcept { return backend_; }
  const backend_type& backend() const noexcept { return backend_; }
  const DecoderOptions& options() const noexcept { return options_; }
  const SequenceReport& report() const noexcept { return report_; }
  // Logits the last token was sampled from (vocab).
  std::span<const float> last_logits() const noexcept { return {logits_.data(), vocab_}; }
  // Positions of the sequence so far that are in the cache (the last sampled token is not yet:
  // it is fed by the next step or resume()).
  std::size_t length() const noexcept { return backend_.length(); }

  // --- step-by-step -----------------------------------------------------------------------

  // A new sequence: rewinds the backend to position 0, runs the prompt through all layers and
  // prepares up to max_new_tokens.
  void start(std::span<const int> prompt, std::size_t max_new_tokens) {
    if (prompt.empty()) throw Error("calm::Decoder::start: the prompt is empty");
    check_tokens("start", prompt, 0);
    backend_.truncate(0);
    pending_ = -1;
    begin(prompt, -1, max_new_tokens);
  }

  // Continues the sequence (a chat's next turn): the last sampled token, then `tokens`, are
  // appended to what is cached (prefill continues, it does not restart), and up to
  // max_new_tokens more are generated. The report starts afresh.
  void resume(std::span<const int> tokens, std::size_t max_new_tokens) {
    if (tokens.empty() && pending_ < 0)
      throw Error("calm::Decoder::resume: no tokens to append and no generated token pending");
    if (backend_.length() == 0 && pending_ < 0)
      throw Error("calm::Decoder::resume: nothing to continue; call start()");
    check_tokens("resume", tokens, backend_.length() + (pending_ >= 0 ? 1 : 0));
    const int pending = std::exchange(pending_, -1);
    begin(tokens, pending, max_new_tokens);
  }

  // Rewinds the sequence to its first n cached positions (n <= length()) and drops the pending
  // token; resume(tokens, ...) then continues from position n.
  void rewind(std::size_t n) {
    backend_.truncate(n);
    pending_ = -1;
    finished_ = true;
  }

  // True when max_new_tokens were generated, a stop token came out, or the context is full.
  bool done() const noexcept { return finished_; }

  // Generates one token (start() or resume() first). The first comes from the prompt's full
  // forward; each later one feeds the previous token through the strategy's layers.
  template <TokenSampler Sp>
  const TokenStats& step(Sp& sampler) {
    StepInFlight s = open_step();
    if (s.needs_forward) forward(s.token, s.pos, s.stats, s.times);
    return close_step(sampler, s);
  }

  // --- for a driver that runs the layers of many sequences together (calm::BatchDecoder) ---
  // step() is open_step(); if needs_forward: begin_forward(), the layers run on state() with
  // leaves_after() asked after each, end_forward(); close_step(). The driver runs the layers of
  // many rows at once, and may compute the output logits itself (into logits()) when
  // end_forward() says they are missing.
  struct StepInFlight {
    TokenStats stats;
    StepTimes times;
    decltype(now()) started{};
    int token = -1;        // the token to feed (needs_forward)
    std::size_t pos = 0;   // its position
    bool needs_forward = false;  // false: the step samples from the prompt's logits
  };
  StepInFlight open_step() {
    if (finished_) throw Error("calm::Decoder::step: generation is over; call start()");
    StepInFlight s;
    s.started = now();
    s.stats.step = ++step_;
    if (s.stats.step == 1) {
      s.stats.exit_layer = num_layers_;
      self().on_first_token(s.stats);
    } else {
      s.needs_forward = true;
      s.token = std::exchange(pending_, -1);
      s.pos = backend_.length();
    }
    return s;
  }
  void begin_forward(StepInFlight& s) {
    layers_since_ = now();
    self().start_token(s.token, s.pos, s.stats);
  }
  bool leaves_after(std::size_t layer, StepInFlight& s) {
    return self().exit_after(layer, s.stats, s.times);
  }
  // The token left at `layer`: the skipped layers' K/V, then the output's logits unless
  // `with_head` is false; returns true when the logits are still to be computed (from state()).
  bool end_forward(std::size_t layer, StepInFlight& s, bool with_head) {
    return finish_layers(layer, s.pos, s.stats, s.times, with_head);
  }
  std::span<float> state() noexcept { return span(x_); }
  std::span<float> logits() noexcept { return span(logits_); }
  // Samples the step's token and records it.
  template <TokenSampler Sp>
  const TokenStats& close_step(Sp& sampler, StepInFlight& s) {
    TokenStats& ts = s.stats;
    if (s.needs_forward) require_finite_logits(s.pos, ts);
    const auto ts0 = now();
    const int token = sampler.sample(std::span<float>(logits_.data(), vocab_));
    const auto t1 = now();
    s.times.head += seconds(ts0, t1);
    if (token < 0 || static_cast<std::size_t>(token) >= vocab_)
      throw Error("calm::Decoder::step: the sampler returned token " + std::to_string(token) +
                  ", outside the vocabulary (size " + std::to_string(vocab_) + ")");
    ts.token = token;
    pending_ = token;

    SequenceReport& r = report_;
    r.generation_seconds += seconds(s.started, t1);
    r.layer_seconds += s.times.layers;
    r.check_seconds += s.times.checks;
    r.propagation_seconds += s.times.propagation;
    r.head_seconds += s.times.head;
    r.tokens.push_back(ts);

    const auto& stops = options_.stop_tokens;
    // The next step feeds `token` at length(): there must be room for it.
    if (step_ >= max_new_ || backend_.length() >= backend_.max_context() ||
        std::find(stops.begin(), stops.end(), token) != stops.end())
      finished_ = true;
    return r.tokens.back();
  }

  // --- for a caller that drives the sequence itself (speculative drafting) ------------------

  // Feeds `token` at length() through this strategy's layers as generation step `step` of
  // `max_steps` (what the schedule's threshold depends on), without sampling: the output's
  // logits are then last_logits() and the state it left at its exit layer exit_state().
  // with_head = false leaves the head to the caller (a draft head over a sub-vocabulary) where
  // the exit check did not compute it anyway; logits_missing() then says whether it did.
  TokenStats advance(int token, std::size_t step, std::size_t max_steps, StepTimes& times,
                     bool with_head = true) {
    if (token < 0 || static_cast<std::size_t>(token) >= vocab_)
      throw Error("calm::Decoder::advance: token " + std::to_string(token) +
                  " is outside the vocabulary (size " + std::to_string(vocab_) + ")");
    TokenStats ts;
    ts.step = step;
    ts.token = token;
    max_new_ = max_steps;
    pending_ = -1;
    finished_ = true;
    const std::size_t pos = backend_.length();
    logits_missing_ = forward(token, pos, ts, times, with_head);
    if (!logits_missing_) require_finite_logits(pos, ts);
    return ts;
  }
  std::span<const float> exit_state() const noexcept { return cspan(x_); }
  // After advance(..., with_head = false): true when last_logits() are not this token's.
  bool logits_missing() const noexcept { return logits_missing_; }

  // --- one call ---------------------------------------------------------------------------

  // on_token(const TokenStats&) is called after each token; returning false stops generation
  // (a callback returning void never stops it).
  template <TokenSampler Sp, class OnToken>
  GenerationResult generate(std::span<const int> prompt, std::size_t max_new_tokens,
                            Sp& sampler, OnToken&& on_token) {
    start(prompt, max_new_tokens);
    return run(sampler, on_token);
  }
  template <TokenSampler Sp>
  GenerationResult generate(std::span<const int> prompt, std::size_t max_new_tokens,
                            Sp& sampler) {
    return generate(prompt, max_new_tokens, sampler, [](const TokenStats&) {});
  }
  // Greedy.
  GenerationResult generate(std::span<const int> prompt, std::size_t max_new_tokens) {
    ArgmaxSampler greedy;
    return generate(prompt, max_new_tokens, greedy);
  }

  // resume() and generate: the next turn of the same sequence.
  template <TokenSampler Sp, class OnToken>
  GenerationResult generate_more(std::span<const int> tokens, std::size_t max_new_tokens,
                                 Sp& sampler, OnToken&& on_token) {
    resume(tokens, max_new_tokens);
    return run(sampler, on_token);
  }
  GenerationResult generate_more(std::span<const int> tokens, std::size_t max_new_tokens) {
    ArgmaxSampler greedy;
    return generate_more(tokens, max_new_tokens, greedy, [](const TokenStats&) {});
  }

 protected:
  void on_first_token(TokenStats&) noexcept {}
  bool logits_from_check() const noexcept { return false; }

  // Feeds token at pos through the strategy's layers and leaves the output's logits in logits_
  // (unless with_head is false and the exit check left none: then it returns true).
  bool forward(int token, std::size_t pos, TokenStats& ts, StepTimes& times,
               bool with_head = true) {
    if constexpr (traits::is_local_oracle<Schedule>()) {
      self().forward_alone(token, pos, ts, times);  // a loop of another shape (all layers, then
      return false;                                 // the first agreeing exit point)
    } else {
      layers_since_ = now();
      self().start_token(token, pos, ts);
      const std::span<float> x = span(x_);
      std::size_t layer = 1;  // 1-based, as in the paper
      for (;; ++layer) {
        backend_.run_layer(layer - 1, x, pos);
        if (self().exit_after(layer, ts, times)) break;
      }
      return finish_layers(layer, pos, ts, times, with_head);
    }
  }

  // The token in flight left at `layer`: skipped layers' K/V, then the head unless the check
  // left the logits or with_head is false. Returns true when the logits are still missing.
  bool finish_layers(std::size_t layer, std::size_t pos, TokenStats& ts, StepTimes& times,
                     bool with_head) {
    const auto p0 = now();
    times.layers += seconds(layers_since_, p0);
    ts.exit_layer = layer;
    if (layer < num_layers_) {
      propagate(layer, pos);
      times.propagation += seconds(p0, now());
    }
    if (self().logits_from_check()) return false;
    if (!with_head) return true;
    const auto h0 = now();
    head(cspan(x_));
    times.head += seconds(h0, now());
    return false;
  }

  static std::span<float> span(AlignedBuffer<float>& a) noexcept { return {a.data(), a.size()}; }
  static std::span<const float> cspan(const AlignedBuffer<float>& a) noexcept {
    return {a.data(), a.size()};
  }

  // logits_ := W_head · RMSNorm_final(state)
  void head(std::span<const float> state) {
    backend_.final_norm(state, span(normed_));
    backend_.lm_head(cspan(normed_), span(logits_));
  }

  // Skipped layers exit_layer+1..L (1-based) get their K/V at pos from the exit state x_.
  void propagate(std::size_t exit_layer, std::size_t pos) {
    if (options_.propagation == Propagation::propagate) {
      const std::span<const float> x = cspan(x_);
      for (std::size_t k = exit_layer; k < num_layers_; ++k) backend_.propagate_kv(k, x, pos);
    } else {
      std::copy(x_.begin(), x_.end(), scratch_.begin());
      const std::span<float> s = span(scratch_);
      for (std::size_t k = exit_layer; k < num_layers_; ++k) backend_.run_layer(k, s, pos);
    }
  }

  Backend backend_;
  DecoderOptions options_;
  std::size_t num_layers_ = 0;  // L
  std::size_t hidden_ = 0;
  std::size_t vocab_ = 0;
  std::vector<unsigned char> is_exit_point_;  // (L + 1), by 1-based layer; layer L excluded
  AlignedBuffer<float> x_;       // (hidden) residual stream of the token in flight
  AlignedBuffer<float> normed_;  // (hidden) RMSNorm_final(x)
  AlignedBuffer<float> logits_;  // (vocab)
  AlignedBuffer<float> scratch_; // (hidden) true_cache copy of the exit state
  [[no_unique_address]] Confidence measure_;
  [[no_unique_address]] Schedule schedule_;
  SequenceReport report_;
  std::size_t step_ = 0;     // generated tokens so far
  std::size_t max_new_ = 0;  // N
  int pending_ = -1;         // the last sampled token, not yet in the cache; -1: none
  bool finished_ = true;
  bool logits_missing_ = false;  // advance(..., with_head = false) left the head undone
  decltype(now()) layers_since_{};  // start of the layers' time not yet counted

 private:
  Derived& self() noexcept { return static_cast<Derived&>(*this); }

  template <class Sp, class OnToken>
  GenerationResult run(Sp& sampler, OnToken& on_token) {
    while (!done()) {
      const TokenStats& ts = step(sampler);
      if constexpr (std::is_void_v<decltype(on_token(ts))>) {
        on_token(ts);
      } else {
        if (!on_token(ts)) break;
      }
    }
    return {report_.token_ids(), report_};
  }

  void require_finite_logits(std::size_t pos, const TokenStats& ts) const {
    detail::require_finite_logits(cspan(logits_), pos, ts.step, ts.exit_layer, num_layers_);
  }

  void check_tokens(const char* what, std::span<const int> tokens, std::size_t at) const {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] < 0 || static_cast<std::size_t>(tokens[i]) >= vocab_)
        throw Error(std::string("calm::Decoder::") + what + ": token " +
                    std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                    " is outside the vocabulary (size " + std::to_string(vocab_) + ")");
    }
    if (at + tokens.size() > backend_.max_context())
      throw Error(std::string("calm::Decoder::") + what + ": " + std::to_string(tokens.size()) +
                  " tokens after " + std::to_string(at) + " cached positions exceed the context " +
                  "of " + std::to_string(backend_.max_context()));
  }

  // Prefills [pending] + tokens at length() (all layers) and samples nothing yet: the first
  // step() samples from these logits.
  void begin(std::span<const int> tokens, int pending, std::size_t max_new_tokens) {
    std::vector<int> feed;
    if (pending >= 0) {
      feed.reserve(tokens.size() + 1);
      feed.push_back(pending);
      feed.insert(feed.end(), tokens.begin(), tokens.end());
      tokens = feed;
    }
    report_ = SequenceReport{};
    report_.num_layers = num_layers_;
    report_.prompt_tokens = tokens.size();
    report_.tokens.reserve(max_new_tokens);
    const auto t0 = now();
    backend_.prefill(tokens, backend_.length(), span(x_));
    head(cspan(x_));
    TokenStats prompt_end;
    prompt_end.exit_layer = num_layers_;
    require_finite_logits(backend_.length() - 1, prompt_end);
    report_.prefill_seconds = seconds(t0, now());
    step_ = 0;
    max_new_ = max_new_tokens;
    finished_ = max_new_tokens == 0;
  }
};

}  // namespace detail
}  // namespace calm
