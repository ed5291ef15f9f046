// calm::Decoder on a toy backend (test_decoder_toy_backend.hpp), against reference loops written
// here from docs/design.md §4-§5 directly. Exact comparisons: the decoder and the references call the same
// backend functions on the same inputs in the same order, so results agree bit for bit.
#include <calm/confidence/candidate_softmax.hpp>
#include <calm/confidence/exit_classifier.hpp>
#include <calm/confidence/hidden_saturation.hpp>
#include <calm/confidence/softmax_response.hpp>
#include <calm/decoder.hpp>
#include <calm/schedule/constant.hpp>
#include <calm/schedule/decaying.hpp>
#include <calm/schedule/local_oracle.hpp>
#include <calm/schedule/never.hpp>
#include <calm/schedule/static_exit.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <span>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "test_support.hpp"
#include "unit/test_decoder_toy_backend.hpp"

namespace {

using toy::Backend;

static_assert(calm::TransformerBackend<Backend>);
static_assert(calm::ConfidenceMeasure<calm::SoftmaxResponse>);
static_assert(calm::ConfidenceMeasure<calm::CandidateSoftmax>);
static_assert(calm::ConfidenceMeasure<calm::HiddenSaturation>);
static_assert(calm::ConfidenceMeasure<calm::ExitClassifier>);
static_assert(calm::ExitSchedule<calm::ConstantThreshold>);
static_assert(calm::ExitSchedule<calm::DecayingThreshold>);
static_assert(calm::ExitSchedule<calm::StaticExit>);
static_assert(calm::ExitSchedule<calm::Never>);
static_assert(calm::ExitSchedule<calm::LocalOracle>);
static_assert(calm::TokenSampler<calm::ArgmaxSampler>);
static_assert(calm::ConfidenceMeasure<calm::NoConfidence>);
// Empty policies add no bytes: a fixed-exit decoder is its sequence loop and nothing else.
using FullDecoder = calm::Decoder<Backend, calm::NoConfidence, calm::Never>;
static_assert(sizeof(FullDecoder) ==
              sizeof(calm::detail::DecoderLoop<FullDecoder, Backend, calm::NoConfidence, calm::Never>));
static_assert(sizeof(FullDecoder) == sizeof(calm::Decoder<Backend, calm::NoConfidence, calm::LocalOracle>) -
                                         sizeof(calm::AlignedBuffer<float>) - sizeof(std::vector<std::size_t>));
using StaticDecoder = calm::Decoder<Backend, calm::NoConfidence, calm::StaticExit>;
static_assert(sizeof(StaticDecoder) == sizeof(FullDecoder) + sizeof(std::size_t));
// Borrowing a backend stores a reference, owning one stores the backend.
static_assert(sizeof(calm::Decoder<Backend&, calm::NoConfidence, calm::Never>) <
              sizeof(FullDecoder));

const std::vector<int> kToyPrompt = {3, 7, 1, 5};

std::size_t argmax(const std::vector<float>& v) {
  return std::size_t(std::max_element(v.begin(), v.end()) - v.begin());
}

struct Reference {
  std::vector<int> tokens;
  std::vector<std::size_t> exit_layers;
  std::vector<std::vector<float>> exit_states;  // per fed token
};

// docs/design.md §5 by hand: greedy; each fed token exits after layer exit_layer (1-based, L = full),
// skipped layers get K/V from the exit state (propagate) or run fully on a copy (true_cache).
Reference reference_decode(Backend& b, std::size_t n_new, std::size_t exit_layer,
                           bool true_cache) {
  const std::size_t d = b.hidden_size(), L = b.num_layers();
  std::vector<float> x(d), normed(d), logits(b.vocab_size());
  Reference r;
  for (std::size_t p = 0; p < kToyPrompt.size(); ++p) {
    b.embed(kToyPrompt[p], x);
    for (std::size_t i = 0; i < L; ++i) b.run_layer(i, x, p);
  }
  b.final_norm(x, normed);
  b.lm_head(normed, logits);
  r.tokens.push_back(int(argmax(logits)));
  r.exit_layers.push_back(L);
  std::size_t pos = kToyPrompt.size();
  while (r.tokens.size() < n_new) {
    b.embed(r.tokens.back(), x);
    for (std::size_t i = 0; i < exit_layer; ++i) b.run_layer(i, x, pos);
    if (true_cache) {
      std::vector<float> copy = x;
      for (std::size_t k = exit_layer; k < L; ++k) b.run_layer(k, copy, pos);
    } else {
      for (std::size_t k = exit_layer; k < L; ++k) b.propagate_kv(k, x, pos);
    }
    r.exit_states.push_back(x);
    b.final_norm(x, normed);
    b.lm_head(normed, logits);
    r.tokens.push_back(int(argmax(logits)));
    r.exit_layers.push_back(exit_layer);
    ++pos;
  }
  return r;
}

void check_same_cache(const Backend& a, const Backend& b, std::size_t positions) {
  for (std::size_t layer = 0; layer < a.num_layers(); ++layer)
    for (std::size_t p = 0; p < positions; ++p)
      for (std::size_t j = 0; j < a.hidden_size(); ++j) {
        REQUIRE(a.k_at(layer, p)[j] == b.k_at(layer, p)[j]);
        REQUIRE(a.v_at(layer, p)[j] == b.v_at(layer, p)[j]);
      }
}

template <class C, class S>
calm::GenerationResult decode(Backend& b, C c, S s, std::size_t n, calm::DecoderOptions o = {}) {
  calm::Decoder<Backend&, C, S> dec(b, c, s, o);
  return dec.generate(kToyPrompt, n);
}

}  // namespace

TEST_CASE("Never: the full model, token for token and cache entry for entry") {
  Backend b1, b2;
  const auto out = decode(b1, calm::SoftmaxResponse{}, calm::Never{}, 12);
  const Reference ref = reference_decode(b2, 12, b2.num_layers(), false);
  CHECK(out.tokens == ref.tokens);
  check_same_cache(b1, b2, kToyPrompt.size() + 11);
  CHECK(b1.propagate_calls == 0);
  CHECK(out.report.average_layers() == doctest::Approx(6.0));
  CHECK(out.report.layer_speedup() == doctest::Approx(1.0));
  for (const auto& t : out.report.tokens) CHECK(t.checks == 0);
}

TEST_CASE("a threshold above every reachable confidence gives the full model, with no checks") {
  Backend full;
  const Reference ref = reference_decode(full, 12, full.num_layers(), false);
  {
    Backend b;
    const auto out = decode(b, calm::SoftmaxResponse{}, calm::ConstantThreshold{1.01f}, 12);
    CHECK(out.tokens == ref.tokens);
    check_same_cache(b, full, kToyPrompt.size() + 11);
    for (const auto& t : out.report.tokens) CHECK(t.checks == 0);  // lambda > 1: skipped
  }
  {  // lambda = 1 is checked (a gap of exactly 1 is reachable only with p_(2) = 0)
    Backend b;
    const auto out = decode(b, calm::SoftmaxResponse{}, calm::ConstantThreshold{1.0f}, 12);
    CHECK(out.tokens == ref.tokens);
    for (std::size_t i = 1; i < out.report.tokens.size(); ++i)
      CHECK(out.report.tokens[i].checks == 5);  // exit points 1..5 of L = 6
  }
  {
    Backend b;
    const auto out = decode(b, calm::HiddenSaturation{}, calm::ConstantThreshold{2.0f}, 12);
    CHECK(out.tokens == ref.tokens);
    check_same_cache(b, full, kToyPrompt.size() + 11);
  }
}

TEST_CASE("static exit at layer L is the full model") {
  Backend b, full;
  const auto out = decode(b, calm::HiddenSaturation{}, calm::StaticExit{6}, 10);
  CHECK(out.tokens == reference_decode(full, 10, 6, false).tokens);
  check_same_cache(b, full, kToyPrompt.size() + 9);
}

TEST_CASE("static exit at layer k: propagated K/V equal what each skipped layer computes") {
  for (std::size_t k = 1; k < 6; ++k) {
    CAPTURE(k);
    Backend b, ref_b;
    const auto out = decode(b, calm::SoftmaxResponse{}, calm::StaticExit{k}, 10);
    const Reference ref = reference_decode(ref_b, 10, k, false);
    CHECK(out.tokens == ref.tokens);
    for (std::size_t i = 1; i < out.report.tokens.size(); ++i)
      CHECK(out.report.tokens[i].exit_layer == k);
    // Direct: the cache at skipped layers holds K/V computed from the exit state.
    for (std::size_t t = 0; t < ref.exit_states.size(); ++t) {
      const std::size_t pos = kToyPrompt.size() + t;
      for (std::size_t layer = k; layer < 6; ++layer) {
        std::vector<float> ek, ev;
        b.expected_kv(layer, ref.exit_states[t], pos, ek, ev);
        for (std::size_t j = 0; j < b.hidden_size(); ++j) {
          REQUIRE(b.k_at(layer, pos)[j] == ek[j]);
          REQUIRE(b.v_at(layer, pos)[j] == ev[j]);
        }
      }
    }
    CHECK(b.propagate_calls == 9 * (6 - k));
  }
}

TEST_CASE("true_cache fills the same cache as the full model run over the same tokens") {
  Backend b;
  calm::DecoderOptions o;
  o.propagation = calm::Propagation::true_cache;
  const auto out = decode(b, calm::SoftmaxResponse{}, calm::StaticExit{2}, 10, o);
  CHECK(b.propagate_calls == 0);
  // Full model, teacher-forced over prompt + generated tokens.
  Backend full;
  std::vector<float> x(full.hidden_size());
  std::vector<int> seq = kToyPrompt;
  seq.insert(seq.end(), out.tokens.begin(), out.tokens.end() - 1);
  for (std::size_t p = 0; p < seq.size(); ++p) {
    full.embed(seq[p], x);
    for (std::size_t i = 0; i < full.num_layers(); ++i) full.run_layer(i, x, p);
  }
  check_same_cache(b, full, seq.size());
  // and the output still comes from layer 2
  Backend ref_b;
  CHECK(out.tokens == reference_decode(ref_b, 10, 2, true).tokens);
}

TEST_CASE("exit points: first_exit and interval, layer L always ends the token") {
  Backend b;
  calm::DecoderOptions o;
  o.first_exit = 3;
  o.interval = 2;  // exit points 3, 5 (L = 6)
  // Saturation is 0 at the first exit point, so lambda = 0 exits there at once.
  auto out = decode(b, calm::HiddenSaturation{}, calm::ConstantThreshold{0.0f}, 6, o);
  for (std::size_t i = 1; i < out.report.tokens.size(); ++i) {
    CHECK(out.report.tokens[i].exit_layer == 3);
    CHECK(out.report.tokens[i].confidence == 0.0f);
  }
  // lambda just above 0 never passes at layer 3 (c = 0): checks at 3 and 5 only.
  Backend b2;
  out = decode(b2, calm::HiddenSaturation{}, calm::ConstantThreshold{1e-30f}, 6, o);
  for (std::size_t i = 1; i < out.report.tokens.size(); ++i) {
    CHECK(out.report.tokens[i].exit_layer == 5);
    CHECK(out.report.tokens[i].checks == 2);
  }
  CHECK_THROWS_AS((calm::Decoder<Backend&, calm::HiddenSaturation, calm::Never>(
                      b, {}, {}, calm::DecoderOptions{0, 1, calm::Propagation::propagate, {}})),
                  calm::Error);
}

// A measure that records what it was shown.
struct Probe {
  static constexpr bool needs_logits = false;
  static constexpr bool needs_previous_state = true;
  std::vector<calm::ExitSignal>* seen;
  float score(const calm::ExitSignal& s) noexcept {
    seen->push_back(s);
    return -1.0f;
  }
};

TEST_CASE("a measure without needs_logits never triggers the vocabulary projection") {
  Backend b;
  std::vector<calm::ExitSignal> seen;
  calm::Decoder<Backend&, Probe, calm::ConstantThreshold> dec(b, Probe{&seen},
                                                             calm::ConstantThreshold{0.5f});
  dec.generate(kToyPrompt, 5);
  CHECK(b.head_calls == 5);  // one per output token (prefill's + 4 fed tokens), none per check
  REQUIRE(seen.size() == 4 * 5);
  for (std::size_t i = 0; i < seen.size(); ++i) {
    CHECK(seen[i].layer == i % 5 + 1);
    CHECK(seen[i].num_layers == 6);
    CHECK(seen[i].logits.empty());
    CHECK(seen[i].normed_state.empty());
    CHECK(seen[i].previous_state.empty() == (i % 5 == 0));
  }
  // SoftmaxResponse projects at every check instead, and reuses the exit check's logits.
  Backend b2;
  const auto out = decode(b2, calm::SoftmaxResponse{}, calm::ConstantThreshold{0.0f}, 5);
  CHECK(b2.head_calls == 1 + 4);  // prefill + one check (which exits) per fed token
  for (std::size_t i = 1; i < 5; ++i) CHECK(out.report.tokens[i].exit_layer == 1);
}

TEST_CASE("softmax response exits exactly where the gap first reaches lambda") {
  // Reference by hand on a second backend, layer by layer.
  for (float lambda : {0.2f, 0.5f, 0.8f}) {
    CAPTURE(lambda);
    Backend b, r;
    const auto out = decode(b, calm::SoftmaxResponse{}, calm::ConstantThreshold{lambda}, 10);
    const std::size_t d = r.hidden_size(), L = r.num_layers();
    std::vector<float> x(d), normed(d), logits(r.vocab_size());
    r.prefill(kToyPrompt, 0, x);
    r.exit_head(x, logits);
    std::vector<int> tokens{int(argmax(logits))};
    for (std::size_t pos = kToyPrompt.size(); tokens.size() < 10; ++pos) {
      r.embed(tokens.back(), x);
      std::size_t exit = L;
      for (std::size_t i = 1; i <= L; ++i) {
        r.run_layer(i - 1, x, pos);
        if (i == L) break;
        r.exit_head(x, logits);
        double z = 0;
        const float m = *std::max_element(logits.begin(), logits.end());
        for (float l : logits) z += std::exp(double(l) - m);
        std::vector<float> sorted = logits;
        std::sort(sorted.rbegin(), sorted.rend());
        const double gap = (1.0 - std::exp(double(sorted[1]) - m)) / z;
        if (gap >= lambda + 1e-5) { exit = i; break; }
        REQUIRE(gap < lambda - 1e-5);  // not at the edge: float rounding cannot flip it
      }
      for (std::size_t k = exit; k < L; ++k) r.propagate_kv(k, x, pos);
      r.exit_head(x, logits);
      CHECK(out.report.tokens[tokens.size()].exit_layer == exit);
      tokens.push_back(int(argmax(logits)));
    }
    CHECK(out.tokens == tokens);
  }
}

TEST_CASE("candidate softmax: the first check scores the vocabulary, later ones its top k only") {
  // docs/design.md §3d by hand on a second backend: candidates = the first check's k largest
  // logits; later checks score the softmax gap restricted to them; the output logits come from
  // a full head at the exit state.
  constexpr std::size_t k = 4;
  for (float lambda : {0.3f, 0.6f, 0.9f}) {
    CAPTURE(lambda);
    Backend b(8, 12, 6, 64, 3), r(8, 12, 6, 64, 3);
    const auto out = decode(b, calm::CandidateSoftmax{k}, calm::ConstantThreshold{lambda}, 12);
    const std::size_t d = r.hidden_size(), L = r.num_layers(), V = r.vocab_size();
    std::vector<float> x(d), logits(V);
    r.prefill(kToyPrompt, 0, x);
    r.exit_head(x, logits);
    std::vector<int> tokens{int(argmax(logits))};
    std::size_t narrowed_checks = 0, full_heads = 1;
    for (std::size_t pos = kToyPrompt.size(); tokens.size() < 12; ++pos) {
      r.embed(tokens.back(), x);
      std::size_t exit = L;
      std::vector<std::size_t> candidates;
      for (std::size_t i = 1; i <= L; ++i) {
        r.run_layer(i - 1, x, pos);
        if (i == L) break;
        r.exit_head(x, logits);
        std::vector<float> scored;
        if (candidates.empty()) {
          ++full_heads;
          std::vector<std::size_t> order(V);
          for (std::size_t j = 0; j < V; ++j) order[j] = j;
          std::stable_sort(order.begin(), order.end(),
                           [&](std::size_t a, std::size_t c) { return logits[a] > logits[c]; });
          candidates.assign(order.begin(), order.begin() + k);
          scored = logits;
        } else {
          ++narrowed_checks;
          for (std::size_t c : candidates) scored.push_back(logits[c]);
        }
        std::vector<float> sorted = scored;
        std::sort(sorted.rbegin(), sorted.rend());
        double z = 0;
        for (float l : scored) z += std::exp(double(l) - sorted[0]);
        const double gap = (1.0 - std::exp(double(sorted[1]) - sorted[0])) / z;
        if (gap >= lambda + 1e-5) { exit = i; break; }
        REQUIRE(gap < lambda - 1e-5);  // not at the edge: float rounding cannot flip it
      }
      for (std::size_t j = exit; j < L; ++j) r.propagate_kv(j, x, pos);
      // Every check above computed the full logits at its state: an exit's are the output's.
      if (exit == L) r.exit_head(x, logits);
      CHECK(out.report.tokens[tokens.size()].exit_layer == exit);
      tokens.push_back(int(argmax(logits)));
    }
    CHECK(out.tokens == tokens);
    CHECK(b.head_row_calls == narrowed_checks);
    // Full heads: the prompt's, each token's first check, and each output that did not come
    // from a full check.
    std::size_t outputs_from_first_check = 0;
    for (std::size_t t = 1; t < out.report.tokens.size(); ++t)
      outputs_from_first_check += out.report.tokens[t].exit_layer == 1;
    CHECK(b.head_calls == full_heads + (tokens.size() - 1) - outputs_from_first_check);
  }
}

TEST_CASE("candidate softmax with k >= V is softmax response, bit for bit") {
  for (std::size_t k : {std::size_t{12}, std::size_t{100}}) {
    for (float lambda : {0.2f, 0.5f, 0.8f}) {
      CAPTURE(k);
      CAPTURE(lambda);
      Backend a, c;
      const auto want = decode(a, calm::SoftmaxResponse{}, calm::ConstantThreshold{lambda}, 10);
      const auto got = decode(c, calm::CandidateSoftmax{k}, calm::ConstantThreshold{lambda}, 10);
      CHECK(got.tokens == want.tokens);
      for (std::size_t t = 0; t < want.report.tokens.size(); ++t) {
        CHECK(got.report.tokens[t].exit_layer == want.report.tokens[t].exit_layer);
        const float cg = got.report.tokens[t].confidence, cw = want.report.tokens[t].confidence;
        CHECK((cg == cw || (std::isnan(cg) && std::isnan(cw))));  // NaN: the token did not exit
      }
      check_same_cache(a, c, kToyPrompt.size() + 9);
    }
  }
}

TEST_CASE("candidate softmax refuses a set too small for a gap") {
  CHECK_THROWS_WITH_AS(calm::CandidateSoftmax(1), doctest::Contains("at least 2"), calm::Error);
}

TEST_CASE("local oracle: exit at the first layer agreeing with the top, full model output") {
  Backend b, full;
  const auto out = decode(b, calm::SoftmaxResponse{}, calm::LocalOracle{}, 10);
  const Reference ref = reference_decode(full, 10, 6, false);
  CHECK(out.tokens == ref.tokens);  // greedy: the oracle layer's argmax is the top's
  check_same_cache(b, full, kToyPrompt.size() + 9);
  // Exit layers by hand.
  Backend r;
  std::vector<float> x(r.hidden_size()), logits(r.vocab_size());
  r.prefill(kToyPrompt, 0, x);
  bool some_early = false;
  for (std::size_t t = 1; t < out.tokens.size(); ++t) {
    r.embed(out.tokens[t - 1], x);
    std::vector<std::size_t> am;
    for (std::size_t i = 0; i < 6; ++i) {
      r.run_layer(i, x, kToyPrompt.size() + t - 1);
      r.exit_head(x, logits);
      am.push_back(argmax(logits));
    }
    std::size_t expect = 6;
    for (std::size_t i = 0; i < 5; ++i)
      if (am[i] == am[5]) { expect = i + 1; break; }
    CHECK(out.report.tokens[t].exit_layer == expect);
    some_early |= expect < 6;
  }
  CHECK(some_early);  // the toy model does agree early sometimes, or this test proves little
}

TEST_CASE("streaming: the callback sees each token and can stop, stop tokens, context") {
  Backend b;
  calm::Decoder<Backend&, calm::SoftmaxResponse, calm::Never> dec(b);
  std::vector<int> streamed;
  calm::ArgmaxSampler greedy;
  const auto out = dec.generate(kToyPrompt, 20, greedy, [&](const calm::TokenStats& t) {
    streamed.push_back(t.token);
    return streamed.size() < 3;
  });
  CHECK(streamed.size() == 3);
  CHECK(out.tokens == streamed);

  // step-by-step
  dec.start(kToyPrompt, 2);
  CHECK(!dec.done());
  const int first = dec.step(greedy).token;
  CHECK(first == streamed[0]);
  dec.step(greedy);
  CHECK(dec.done());
  CHECK_THROWS_AS(dec.step(greedy), calm::Error);

  calm::DecoderOptions o;
  o.stop_tokens = {streamed[1]};
  Backend b2;
  CHECK(decode(b2, calm::SoftmaxResponse{}, calm::Never{}, 20, o).tokens.size() == 2);

  Backend small(8, 12, 6, /*max_context=*/6);
  CHECK(decode(small, calm::SoftmaxResponse{}, calm::Never{}, 20).tokens.size() == 3);
  calm::Decoder<Backend&, calm::SoftmaxResponse, calm::Never> d2(small);
  CHECK_THROWS_AS(d2.start(std::vector<int>{1, 2, 3, 4, 5, 6, 7}, 1), calm::Error);
  CHECK_THROWS_AS(d2.start(std::vector<int>{}, 1), calm::Error);
  CHECK_THROWS_AS(d2.start(std::vector<int>{1, 12}, 1), calm::Error);
}

TEST_CASE("report: thresholds follow the schedule, parts timed on their own") {
  Backend b;
  calm::DecayingThreshold s{0.5f, 2.0f, calm::DecayingThreshold::Form::paper};
  const auto out = decode(b, calm::HiddenSaturation{}, s, 8);
  REQUIRE(out.report.tokens.size() == 8);
  for (std::size_t t = 0; t < 8; ++t) {
    CHECK(out.report.tokens[t].step == t + 1);
    CHECK(out.report.tokens[t].threshold == s.threshold(t + 1, 8));
  }
  const auto& r = out.report;
  CHECK(r.num_layers == 6);
  CHECK(r.prompt_tokens == kToyPrompt.size());
  CHECK(r.generation_seconds > 0.0);
  // Each part is timed on its own: together they cannot exceed the whole.
  CHECK(r.layer_seconds > 0.0);
  CHECK(r.check_seconds > 0.0);
  CHECK(r.head_seconds > 0.0);
  CHECK(r.layer_seconds + r.check_seconds + r.propagation_seconds + r.head_seconds <=
        r.generation_seconds);
  double sum = 0;
  for (const auto& t : r.tokens) sum += double(t.exit_layer);
  CHECK(r.average_layers() == doctest::Approx(sum / 8));
  CHECK(r.layer_speedup() == doctest::Approx(6.0 / (sum / 8)));
}

// A backend whose layers sleep and a measure whose checks sleep, each in turn while the other
// part costs microseconds: the report must give the sleep to the part that slept. The bounds
// leave half the sleeper's minimum to the other part, so a loaded machine's late wake-ups
// cannot fail it (the first version compared both parts against their sum and failed once on
// a shared CI host: 47.2 ms of checks against a 47 ms bound).
template <int Ms>
struct SleepyLayers : Backend {
  void run_layer(std::size_t layer, std::span<float> x, std::size_t pos) {
    std::this_thread::sleep_for(std::chrono::milliseconds(Ms));
    Backend::run_layer(layer, x, pos);
  }
};
template <int Ms>
struct SleepyCheck {
  static constexpr bool needs_logits = false;
  float score(const calm::ExitSignal&) const noexcept {
    std::this_thread::sleep_for(std::chrono::milliseconds(Ms));
    return 0.0f;
  }
};

// 3 fed tokens: 6 layers each (18 layer runs), 5 checks each (15 checks).
template <class Layers, class Check>
calm::SequenceReport sleepy_report() {
  Layers b;
  calm::Decoder<Layers&, Check, calm::ConstantThreshold> dec(b, {}, {0.5f});
  const auto out = dec.generate(kToyPrompt, 4);
  std::size_t checks = 0;
  for (const auto& t : out.report.tokens) checks += t.checks;
  REQUIRE(checks == 15);
  const auto& r = out.report;
  CHECK(r.layer_seconds + r.check_seconds + r.head_seconds + r.propagation_seconds <=
        r.generation_seconds);
  return r;
}

TEST_CASE("report: time goes to the part that spent it") {
  const auto slow_layers = sleepy_report<SleepyLayers<3>, SleepyCheck<0>>();
  CHECK(slow_layers.layer_seconds >= 18 * 3e-3);
  CHECK(slow_layers.check_seconds < 18 * 3e-3 / 2);  // the checks hold none of the layers' time
  CHECK(slow_layers.head_seconds < 18 * 3e-3 / 2);
  const auto slow_checks = sleepy_report<SleepyLayers<0>, SleepyCheck<3>>();
  CHECK(slow_checks.check_seconds >= 15 * 3e-3);
  CHECK(slow_checks.layer_seconds < 15 * 3e-3 / 2);  // the layers hold none of the checks' time
  CHECK(slow_checks.head_seconds < 15 * 3e-3 / 2);
}

// A NaN that appears mid-sequence stops decoding with an error naming the position, the step
// and the layer the logits came from; a NaN confidence never exits (the softmax measure used to
// score a NaN state 1.0 and leave at layer 1).
TEST_CASE("a non-finite state mid-decode is an error naming where, it never exits early") {
  const std::size_t at = kToyPrompt.size() + 2;  // the position generation step 4 feeds
  SUBCASE("the full model") {
    Backend b;
    b.nan_at_position = at;
    b.nan_at_layer = 2;
    calm::Decoder<Backend&, calm::NoConfidence, calm::Never> dec(b);
    std::size_t tokens = 0;
    calm::ArgmaxSampler greedy;
    const std::string what = calm::test::error_of(
        [&] { dec.generate(kToyPrompt, 10, greedy, [&](const calm::TokenStats&) { ++tokens; }); });
    CHECK(tokens == 3);
    CHECK(calm::test::contains(what, "position " + std::to_string(at) + " (generation step 4)"));
    CHECK(calm::test::contains(what, "after layer 6 of 6"));
    CHECK(calm::test::contains(what, "NaN"));
  }
  SUBCASE("softmax response: the NaN state after layer 1 scores 0 and does not exit") {
    Backend b;
    b.nan_at_position = at;
    b.nan_at_layer = 0;
    // Any finite gap passes this threshold, so every other fed token leaves at layer 1.
    calm::Decoder<Backend&, calm::SoftmaxResponse, calm::ConstantThreshold> dec(b, {}, {1e-30f});
    std::vector<std::size_t> exits;
    calm::ArgmaxSampler greedy;
    const std::string what = calm::test::error_of([&] {
      dec.generate(kToyPrompt, 10, greedy,
                   [&](const calm::TokenStats& ts) { exits.push_back(ts.exit_layer); });
    });
    CHECK(exits == std::vector<std::size_t>{6, 1, 1});
    CHECK(calm::test::contains(what, "generation step 4"));
    CHECK(calm::test::contains(what, "after layer 6 of 6"));
  }
  SUBCASE("in the prompt, the first token cannot be chosen") {
    Backend b;
    b.nan_at_position = 1;
    calm::Decoder<Backend&, calm::NoConfidence, calm::Never> dec(b);
    const std::string what = calm::test::error_of([&] { dec.generate(kToyPrompt, 4); });
    CHECK(calm::test::contains(what, "position 3 (the prompt's last)"));
    CHECK(calm::test::contains(what, "not finite"));
  }
}

// A measure of the user's that returns NaN or infinity never makes a token exit.
struct NonFinite {
  static constexpr bool needs_logits = false;
  float value;
  float score(const calm::ExitSignal&) const noexcept { return value; }
};

TEST_CASE("a NaN or infinite confidence never allows an exit, whatever the measure") {
  for (float v : {std::nanf(""), INFINITY, -INFINITY}) {
    CAPTURE(v);
    Backend b;
    calm::Decoder<Backend&, NonFinite, calm::ConstantThreshold> dec(b, NonFinite{v}, {0.5f});
    const auto out = dec.generate(kToyPrompt, 5);
    for (const calm::TokenStats& ts : out.report.tokens) CHECK(ts.exit_layer == 6);
  }
}
