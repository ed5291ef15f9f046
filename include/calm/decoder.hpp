// calm::Decoder<Backend, Confidence, Schedule>: early-exit generation (SPEC 3-5, 7).
//
// Per generated token t (after the prompt, which always runs all layers):
//   x := embed(previous token)
//   for layer i = 1..L:  x := layer_i(x)            (writes layer i's K/V at position pos)
//     at an exit point i < L:  c := measure(x, ...);  exit if c >= lambda_t
//   skipped layers k > i get K/V from x (propagate) or run fully on a copy (true_cache)
//   token := sampler(W_head . RMSNorm_final(x))
//
// Policies are template parameters, stored with [[no_unique_address]]: an empty policy adds no
// bytes, and what a policy does not need is compiled out (`if constexpr`): a measure with
// needs_logits = false never triggers the V x d projection at exit points; Never and StaticExit
// never check at all, so Decoder<B, C, Never> is the plain layer loop (bench_decoder measures it).
// Model dimensions stay runtime values.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "calm/concepts.hpp"
#include "calm/core/aligned.hpp"
#include "calm/core/error.hpp"
#include "calm/kernels/argmax.hpp"
#include "calm/report.hpp"

// Set to 0 to compile the steady_clock reads out of the decoder (a few per token).
#ifndef CALM_DECODER_TIMING
#define CALM_DECODER_TIMING 1
#endif

namespace calm {

enum class Propagation : unsigned char {
  propagate,   // SPEC 5 default: skipped layers compute K/V from the exit state
  true_cache,  // oracle: skipped layers run fully on a copy of the exit state
};

struct DecoderOptions {
  std::size_t first_exit = 1;  // first exit point, 1-based layer (SPEC 4)
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

namespace detail {

template <class T>
inline constexpr bool dependent_false = false;

// Everything of a Decoder except its policies: the state that a plain layer loop needs too.
template <class Backend>
struct DecoderCore {
  Backend* backend = nullptr;
  DecoderOptions options;
  std::size_t num_layers = 0;  // L
  std::size_t hidden = 0;
  std::size_t vocab = 0;
  std::vector<unsigned char> is_exit_point;  // (L + 1), by 1-based layer; layer L excluded

  AlignedBuffer<float> x;        // (hidden) residual stream of the token in flight
  AlignedBuffer<float> previous;  // (hidden) state at the previous exit point
  AlignedBuffer<float> normed;    // (hidden) RMSNorm_final(x)
  AlignedBuffer<float> scratch;   // (hidden) true_cache copy of the exit state
  AlignedBuffer<float> logits;    // (vocab)
  AlignedBuffer<float> oracle_states;             // (L, hidden), local oracle only
  std::vector<std::size_t> oracle_argmax;         // (L + 1), local oracle only

  SequenceReport report;
  std::size_t pos = 0;          // position of the next token to feed
  std::size_t step = 0;         // generated tokens so far
  std::size_t max_new = 0;      // N
  int last_token = -1;
  bool finished = true;
};

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

}  // namespace detail

template <class Backend, class Confidence, class Schedule>
class Decoder {
  // One readable line per missing member (the concepts in calm/concepts.hpp say the same).
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

  static constexpr bool kNeedsLogits = [] {
    if constexpr (traits::HasNeedsLogits<Confidence>) return bool(Confidence::needs_logits);
    else return false;
  }();
  static constexpr bool kNeedsNormed = kNeedsLogits || traits::needs_normed_state<Confidence>();
  static constexpr bool kNeedsPrevious = traits::needs_previous_state<Confidence>();
  static constexpr bool kUsesConfidence = [] {
    if constexpr (traits::HasUsesConfidence<Schedule>) return bool(Schedule::uses_confidence);
    else return false;
  }();
  static constexpr bool kOracle = traits::is_local_oracle<Schedule>();

 public:
  using backend_type = Backend;
  using confidence_type = Confidence;
  using schedule_type = Schedule;

  explicit Decoder(Backend& backend, Confidence measure = {}, Schedule schedule = {},
                   DecoderOptions options = {})
      : measure_(std::move(measure)), schedule_(std::move(schedule)) {
    options.validate();
    core_.backend = &backend;
    core_.options = std::move(options);
    core_.num_layers = backend.num_layers();
    core_.hidden = backend.hidden_size();
    core_.vocab = backend.vocab_size();
    if (core_.num_layers == 0 || core_.hidden == 0 || core_.vocab < 2)
      throw Error("calm::Decoder: the backend reports " + std::to_string(core_.num_layers) +
                  " layers, hidden size " + std::to_string(core_.hidden) + ", vocabulary " +
                  std::to_string(core_.vocab) + " (need >= 1, >= 1, >= 2)");
    const std::size_t L = core_.num_layers;
    core_.is_exit_point.assign(L + 1, 0);
    for (std::size_t i = core_.options.first_exit; i < L; i += core_.options.interval)
      core_.is_exit_point[i] = 1;
    core_.x = AlignedBuffer<float>(core_.hidden);
    core_.normed = AlignedBuffer<float>(core_.hidden);
    core_.logits = AlignedBuffer<float>(core_.vocab);
    if constexpr (kNeedsPrevious) core_.previous = AlignedBuffer<float>(core_.hidden);
    if (core_.options.propagation == Propagation::true_cache)
      core_.scratch = AlignedBuffer<float>(core_.hidden);
    if constexpr (kOracle) {
      core_.oracle_states = AlignedBuffer<float>(L * core_.hidden);
      core_.oracle_argmax.assign(L + 1, 0);
    }
  }

  Backend& backend() noexcept { return *core_.backend; }
  Confidence& measure() noexcept { return measure_; }
  const Confidence& measure() const noexcept { return measure_; }
  Schedule& schedule() noexcept { return schedule_; }
  const Schedule& schedule() const noexcept { return schedule_; }
  const DecoderOptions& options() const noexcept { return core_.options; }
  const SequenceReport& report() const noexcept { return core_.report; }
  // Logits the last token was sampled from (vocab).
  std::span<const float> last_logits() const noexcept {
    return {core_.logits.data(), core_.vocab};
  }

  // --- step-by-step -----------------------------------------------------------------------

  // Runs the prompt through all layers (positions 0..n-1) and prepares up to max_new_tokens.
  void start(std::span<const int> prompt, std::size_t max_new_tokens) {
    Backend& b = *core_.backend;
    if (prompt.empty()) throw Error("calm::Decoder::start: the prompt is empty");
    for (std::size_t i = 0; i < prompt.size(); ++i) {
      if (prompt[i] < 0 || static_cast<std::size_t>(prompt[i]) >= core_.vocab)
        throw Error("calm::Decoder::start: prompt token " + std::to_string(prompt[i]) +
                    " at index " + std::to_string(i) + " is outside the vocabulary (size " +
                    std::to_string(core_.vocab) + ")");
    }
    if (prompt.size() > b.max_context())
      throw Error("calm::Decoder::start: the prompt has " + std::to_string(prompt.size()) +
                  " tokens, more than the context of " + std::to_string(b.max_context()));
    core_.report = SequenceReport{};
    core_.report.num_layers = core_.num_layers;
    core_.report.prompt_tokens = prompt.size();
    core_.report.tokens.reserve(max_new_tokens);
    const auto t0 = detail::now();
    b.prefill(prompt, 0, span(core_.x));
    b.final_norm(cspan(core_.x), span(core_.normed));
    b.lm_head(cspan(core_.normed), span(core_.logits));
    core_.report.prefill_seconds = detail::seconds(t0, detail::now());
    core_.pos = prompt.size();
    core_.step = 0;
    core_.max_new = max_new_tokens;
    core_.last_token = -1;
    core_.finished = max_new_tokens == 0;
  }

  // True when max_new_tokens were generated, a stop token came out, or the context is full.
  bool done() const noexcept { return core_.finished; }

  // Generates one token (start() first). The first comes from the prompt's full forward; each
  // later one feeds the previous token through the early-exit loop.
  template <TokenSampler Sp>
  const TokenStats& step(Sp& sampler) {
    if (core_.finished) throw Error("calm::Decoder::step: generation is over; call start()");
    Backend& b = *core_.backend;
    const auto t0 = detail::now();
    TokenStats ts;
    ts.step = ++core_.step;
    double check_s = 0.0, prop_s = 0.0, head_s = 0.0;
    if (ts.step == 1) {
      ts.exit_layer = core_.num_layers;
      if constexpr (kUsesConfidence) ts.threshold = schedule_.threshold(1, core_.max_new);
    } else {
      forward(b, core_.last_token, core_.pos, ts, check_s, prop_s, head_s);
      ++core_.pos;
    }
    const auto ts0 = detail::now();
    const int token = sampler.sample(std::span<float>(core_.logits.data(), core_.vocab));
    const auto t1 = detail::now();
    head_s += detail::seconds(ts0, t1);
    if (token < 0 || static_cast<std::size_t>(token) >= core_.vocab)
      throw Error("calm::Decoder::step: the sampler returned token " + std::to_string(token) +
                  ", outside the vocabulary (size " + std::to_string(core_.vocab) + ")");
    ts.token = token;
    core_.last_token = token;

    SequenceReport& r = core_.report;
    const double total = detail::seconds(t0, t1);
    r.generation_seconds += total;
    r.check_seconds += check_s;
    r.propagation_seconds += prop_s;
    r.head_seconds += head_s;
    r.layer_seconds += total - check_s - prop_s - head_s;
    r.tokens.push_back(ts);

    const auto& stops = core_.options.stop_tokens;
    if (core_.step >= core_.max_new || core_.pos >= b.max_context() ||
        std::find(stops.begin(), stops.end(), token) != stops.end())
      core_.finished = true;
    return r.tokens.back();
  }

  // --- one call ---------------------------------------------------------------------------

  // on_token(const TokenStats&) is called after each token; returning false stops generation
  // (a callback returning void never stops it).
  template <TokenSampler Sp, class OnToken>
  GenerationResult generate(std::span<const int> prompt, std::size_t max_new_tokens,
                            Sp& sampler, OnToken&& on_token) {
    start(prompt, max_new_tokens);
    while (!done()) {
      const TokenStats& ts = step(sampler);
      if constexpr (std::is_void_v<decltype(on_token(ts))>) {
        on_token(ts);
      } else {
        if (!on_token(ts)) break;
      }
    }
    return {core_.report.token_ids(), core_.report};
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

 private:
  static std::span<float> span(AlignedBuffer<float>& a) noexcept { return {a.data(), a.size()}; }
  static std::span<const float> cspan(const AlignedBuffer<float>& a) noexcept {
    return {a.data(), a.size()};
  }

  // Feeds `token` at `pos`; leaves the output logits in core_.logits.
  void forward(Backend& b, int token, std::size_t pos, TokenStats& ts, double& check_s,
               double& prop_s, double& head_s) {
    const std::size_t L = core_.num_layers;
    const std::span<float> x = span(core_.x);
    b.embed(token, x);

    std::size_t layer = 1;  // 1-based, as in SPEC
    bool logits_ready = false;
    if constexpr (kOracle) {
      layer = oracle_forward(b, pos, ts, check_s);
      logits_ready = true;
    } else if constexpr (!kUsesConfidence) {
      std::size_t exit_at = schedule_.fixed_exit_layer(L);
      if (exit_at < 1 || exit_at > L) exit_at = L;
      for (; layer < exit_at; ++layer) b.run_layer(layer - 1, x, pos);
      b.run_layer(layer - 1, x, pos);
    } else {
      const float lambda = schedule_.threshold(ts.step, core_.max_new);
      ts.threshold = lambda;
      // A threshold above every reachable score cannot be met: skip all checks (exact).
      const bool may_exit = !(lambda > traits::max_score<Confidence>());
      bool have_previous = false;
      for (;; ++layer) {
        b.run_layer(layer - 1, x, pos);
        if (layer == L) break;
        if (!may_exit || !core_.is_exit_point[layer]) continue;
        const auto c0 = detail::now();
        const float c = check(b, layer, ts.step, have_previous);
        check_s += detail::seconds(c0, detail::now());
        ++ts.checks;
        if (c >= lambda) {
          ts.confidence = c;
          logits_ready = kNeedsLogits;  // the check's projection is the output's
          break;
        }
        if constexpr (kNeedsPrevious) {
          std::copy(x.begin(), x.end(), core_.previous.data());
          have_previous = true;
        }
      }
    }
    ts.exit_layer = layer;

    if (!kOracle && layer < L) {  // the oracle already ran every layer
      const auto p0 = detail::now();
      propagate(b, layer, pos);
      prop_s += detail::seconds(p0, detail::now());
    }
    if (!logits_ready) {
      const auto h0 = detail::now();
      b.final_norm(std::span<const float>(x), span(core_.normed));
      b.lm_head(cspan(core_.normed), span(core_.logits));
      head_s += detail::seconds(h0, detail::now());
    }
  }

  float check(Backend& b, std::size_t layer, std::size_t step, bool have_previous) {
    ExitSignal s;
    s.layer = layer;
    s.num_layers = core_.num_layers;
    s.step = step;
    s.state = cspan(core_.x);
    if constexpr (kNeedsPrevious) {
      if (have_previous) s.previous_state = cspan(core_.previous);
    }
    if constexpr (kNeedsNormed) {
      b.final_norm(s.state, span(core_.normed));
      s.normed_state = cspan(core_.normed);
    }
    if constexpr (kNeedsLogits) {
      b.lm_head(cspan(core_.normed), span(core_.logits));
      s.logits = cspan(core_.logits);
    }
    return measure_.score(s);
  }

  // Skipped layers exit_layer+1..L (1-based) get their K/V at pos from the exit state x.
  void propagate(Backend& b, std::size_t exit_layer, std::size_t pos) {
    const std::size_t L = core_.num_layers;
    if (core_.options.propagation == Propagation::propagate) {
      const std::span<const float> x = cspan(core_.x);
      for (std::size_t k = exit_layer; k < L; ++k) b.propagate_kv(k, x, pos);
    } else {
      std::copy(core_.x.begin(), core_.x.end(), core_.scratch.begin());
      const std::span<float> s = span(core_.scratch);
      for (std::size_t k = exit_layer; k < L; ++k) b.run_layer(k, s, pos);
    }
  }

  // Full forward; returns the first exit point whose argmax equals layer L's, else L, and
  // leaves that layer's logits in core_.logits.
  std::size_t oracle_forward(Backend& b, std::size_t pos, TokenStats& ts, double& check_s) {
    const std::size_t L = core_.num_layers, h = core_.hidden;
    const std::span<float> x = span(core_.x);
    const std::span<float> logits = span(core_.logits);
    for (std::size_t layer = 1; layer <= L; ++layer) {
      b.run_layer(layer - 1, x, pos);
      if (layer < L && !core_.is_exit_point[layer]) continue;
      const auto c0 = detail::now();
      b.final_norm(std::span<const float>(x), span(core_.normed));
      b.lm_head(cspan(core_.normed), logits);
      core_.oracle_argmax[layer] = kernels::argmax(logits.data(), logits.size());
      if (layer < L) {
        std::copy(x.begin(), x.end(), core_.oracle_states.data() + (layer - 1) * h);
        ++ts.checks;
      }
      check_s += detail::seconds(c0, detail::now());
    }
    std::size_t exit_at = L;
    for (std::size_t layer = 1; layer < L; ++layer) {
      if (core_.is_exit_point[layer] && core_.oracle_argmax[layer] == core_.oracle_argmax[L]) {
        exit_at = layer;
        break;
      }
    }
    if (exit_at < L) {  // logits of the exit layer; the cache is already the full model's
      const std::span<const float> state(core_.oracle_states.data() + (exit_at - 1) * h, h);
      b.final_norm(state, span(core_.normed));
      b.lm_head(cspan(core_.normed), logits);
      std::copy(state.begin(), state.end(), x.begin());
    }
    return exit_at;
  }

  detail::DecoderCore<Backend> core_;
  [[no_unique_address]] Confidence measure_;
  [[no_unique_address]] Schedule schedule_;
};

}  // namespace calm
