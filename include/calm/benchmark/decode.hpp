// What early exit buys in time next to what it saves in layers (docs/design.md §8), for any
// decoder you compose: each iteration decodes the same prompts with your decoder and with the
// full model, alternately (which one goes first alternates too), so noise on the machine hits
// both alike; the counters are ratios of the two measured in the same run.
//
//   calm::bench::register_early_vs_full("entropy/0.8", [model] {
//     return calm::Decoder<calm::LlamaSession, Entropy, calm::DecayingThreshold>(
//         calm::LlamaSession(model), {}, {.lambda = 0.8f, .tau = 4.0f});
//   }, prompts);
//
// Counters (docs/design.md §7, §8; SequenceReport's fields, calm/report.hpp):
//   avg_layers       mean exit layer of the generated tokens (the first token runs all L)
//   layer_x          L / avg_layers: the speedup counted in layers
//   wall_x           full decode time / early decode time (generation only, prefill excluded)
//   wall_over_layer  wall_x / layer_x: the share of the layers saved that became time saved
//   layers% checks% propagation% head%
//                    the early decode's time split: layers run (with the embedding), confidence
//                    checks (with their vocabulary projections), K/V of skipped layers, and the
//                    output head with sampling
//   agreement        1 - mean token mismatch against the full model's tokens (1: identical)
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "calm/calibrate/distances.hpp"
#include "calm/decoder.hpp"
#include "calm/report.hpp"

namespace calm::bench {

// A decoder the benchmark can drive: generate(prompt, n) -> {tokens, report} (calm::Decoder,
// calm::SpeculativeDecoder, or one of your own with the same result shape).
template <class D>
concept BenchmarkableDecoder = requires(D& d, std::span<const int> prompt, std::size_t n) {
  { d.generate(prompt, n).tokens } -> std::convertible_to<std::vector<int>>;
  { d.generate(prompt, n).report } -> std::convertible_to<SequenceReport>;
};

struct DecodeOptions {
  std::size_t new_tokens = 32;  // greedy tokens per prompt, both decoders
  bool alternate = true;        // alternate which decoder runs first, prompt by prompt
};

// Sums over all the pairs of decodes of a benchmark.
struct DecodeTotals {
  std::size_t num_layers = 0;  // L
  std::size_t sequences = 0;
  double tokens = 0.0;       // tokens the early decoder generated
  double exit_layers = 0.0;  // the sum of their exit layers
  double early_seconds = 0.0, full_seconds = 0.0;  // generation, prefill excluded
  // The early decoder's split of early_seconds (zero where the decoder does not report one).
  double layer_seconds = 0.0, check_seconds = 0.0, propagation_seconds = 0.0, head_seconds = 0.0;
  double mismatch = 0.0;  // sum of token_mismatch_distance(early, full) over sequences

  // One pair; the seconds are the reports' unless a decoder reports none (CALM_DECODER_TIMING=0),
  // then both are the calls' wall-clock times.
  void add(const SequenceReport& early, std::span<const int> early_tokens,
           const SequenceReport& full, std::span<const int> full_tokens, double early_call_s,
           double full_call_s) {
    const bool timed = early.generation_seconds > 0.0 && full.generation_seconds > 0.0;
    num_layers = early.num_layers;
    ++sequences;
    tokens += static_cast<double>(early.tokens.size());
    exit_layers += early.average_layers() * static_cast<double>(early.tokens.size());
    early_seconds += timed ? early.generation_seconds : early_call_s;
    full_seconds += timed ? full.generation_seconds : full_call_s;
    layer_seconds += early.layer_seconds;
    check_seconds += early.check_seconds;
    propagation_seconds += early.propagation_seconds;
    head_seconds += early.head_seconds;
    mismatch += calibrate::token_mismatch_distance(early_tokens, full_tokens);
  }

  double average_layers() const noexcept { return tokens > 0.0 ? exit_layers / tokens : 0.0; }
  double layer_speedup() const noexcept {
    const double avg = average_layers();
    return avg > 0.0 ? static_cast<double>(num_layers) / avg : 0.0;
  }
  double wall_speedup() const noexcept {
    return early_seconds > 0.0 ? full_seconds / early_seconds : 0.0;
  }
  double wall_over_layer() const noexcept {
    const double lx = layer_speedup();
    return lx > 0.0 ? wall_speedup() / lx : 0.0;
  }
  double agreement() const noexcept {
    return sequences ? 1.0 - mismatch / static_cast<double>(sequences) : 0.0;
  }
};

// The counters of the header comment.
inline void set_decode_counters(::benchmark::State& state, const DecodeTotals& t) {
  state.counters["avg_layers"] = t.average_layers();
  state.counters["layer_x"] = t.layer_speedup();
  state.counters["wall_x"] = t.wall_speedup();
  state.counters["wall_over_layer"] = t.wall_over_layer();
  if (t.layer_seconds + t.check_seconds + t.propagation_seconds + t.head_seconds > 0.0 &&
      t.early_seconds > 0.0) {
    state.counters["layers%"] = 100.0 * t.layer_seconds / t.early_seconds;
    state.counters["checks%"] = 100.0 * t.check_seconds / t.early_seconds;
    state.counters["propagation%"] = 100.0 * t.propagation_seconds / t.early_seconds;
    state.counters["head%"] = 100.0 * t.head_seconds / t.early_seconds;
  }
  state.counters["agreement"] = t.agreement();
}

// Google Benchmark body: every iteration decodes each prompt with `early` and with `full`;
// on_pair(early_result, full_result) sees each pair (for counters of your own). Sets the
// counters above and returns the totals.
template <BenchmarkableDecoder Early, BenchmarkableDecoder Full, class OnPair>
DecodeTotals early_vs_full(::benchmark::State& state, Early& early, Full& full,
                           const std::vector<std::vector<int>>& prompts, DecodeOptions opts,
                           OnPair&& on_pair) {
  using Clock = std::chrono::steady_clock;
  DecodeTotals totals;
  std::size_t round = 0;
  for (auto _ : state) {
    for (const std::vector<int>& prompt : prompts) {
      decltype(early.generate(prompt, opts.new_tokens)) e;
      decltype(full.generate(prompt, opts.new_tokens)) f;
      double early_s = 0.0, full_s = 0.0;
      const auto run_early = [&] {
        const auto t0 = Clock::now();
        e = early.generate(prompt, opts.new_tokens);
        early_s = std::chrono::duration<double>(Clock::now() - t0).count();
      };
      const auto run_full = [&] {
        const auto t0 = Clock::now();
        f = full.generate(prompt, opts.new_tokens);
        full_s = std::chrono::duration<double>(Clock::now() - t0).count();
      };
      if (opts.alternate && round++ % 2 == 1) run_full(), run_early();
      else run_early(), run_full();
      totals.add(e.report, e.tokens, f.report, f.tokens, early_s, full_s);
      on_pair(std::as_const(e), std::as_const(f));
    }
  }
  set_decode_counters(state, totals);
  return totals;
}

template <BenchmarkableDecoder Early, BenchmarkableDecoder Full>
DecodeTotals early_vs_full(::benchmark::State& state, Early& early, Full& full,
                           const std::vector<std::vector<int>>& prompts, DecodeOptions opts = {}) {
  return early_vs_full(state, early, full, prompts, opts, [](const auto&, const auto&) {});
}

// Against the full model on the early decoder's own backend (borrowed: each generate starts a
// new sequence, so the two take turns on one session and one KV cache).
template <BenchmarkableDecoder Early, class OnPair>
  requires requires(Early& e) { e.backend(); }
DecodeTotals early_vs_full(::benchmark::State& state, Early& early,
                           const std::vector<std::vector<int>>& prompts, DecodeOptions opts,
                           OnPair&& on_pair) {
  using Backend = std::remove_reference_t<decltype(early.backend())>;
  FullDecoder<Backend&> full(early.backend());
  return early_vs_full(state, early, full, prompts, opts, std::forward<OnPair>(on_pair));
}
template <BenchmarkableDecoder Early>
  requires requires(Early& e) { e.backend(); }
DecodeTotals early_vs_full(::benchmark::State& state, Early& early,
                           const std::vector<std::vector<int>>& prompts, DecodeOptions opts = {}) {
  return early_vs_full(state, early, prompts, opts, [](const auto&, const auto&) {});
}

// Registers a benchmark `name` that builds a decoder with make_decoder() when it runs and
// measures it against the full model on its backend. Returns the benchmark, for more settings
// (->Iterations(n), ->MinTime(s)).
template <class MakeDecoder>
  requires(BenchmarkableDecoder<std::invoke_result_t<MakeDecoder&>>)
::benchmark::internal::Benchmark* register_early_vs_full(const std::string& name,
                                                         MakeDecoder make_decoder,
                                                         std::vector<std::vector<int>> prompts,
                                                         DecodeOptions opts = {}) {
  return ::benchmark::RegisterBenchmark(
             name.c_str(),
             [make_decoder = std::move(make_decoder), prompts = std::move(prompts),
              opts](::benchmark::State& state) mutable {
               auto decoder = make_decoder();
               early_vs_full(state, decoder, prompts, opts);
             })
      ->Unit(::benchmark::kMillisecond);
}

}  // namespace calm::bench
