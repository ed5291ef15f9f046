// Lossless speculative decoding (calm::SpeculativeDecoder) against full decoding, side by side:
//  - the bundled model (trained to exit early), greedy, 1 thread: each iteration decodes the
//    test prompts with the speculative decoder and with the full model, alternating which goes
//    first, so machine noise hits both alike (the kit's early-vs-full comparison,
//    calm/benchmark/decode.hpp). Counters: wall_x (full time / speculative time, generation
//    only), acceptance, tokens_per_round, mean draft exit layer, draft% / verify% of the time,
//    and identical (1 when every token equalled the full model's: it must);
//  - verification cost per token: one pass of all layers over n tokens with Products::matvec
//    (what verification runs) or Products::matmul, against one decode step, at the bundled
//    model's and TinyLlama-1.1B's shapes (random weights, the kit's fixtures).
#include "model_fixture.hpp"

#include <calm/calm.hpp>
#include <calm/io/tokenizer.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kNewTokens = 48;
using calm::bench::kBundled;

const std::shared_ptr<const calm::LlamaModel>& bundled() {
  static const auto m = calm::LlamaModel::load(kBundled);
  return m;
}

// The first 16 test prompts of the bundled model, tokenized.
const std::vector<std::vector<int>>& bundled_prompts() {
  static const std::vector<std::vector<int>> prompts = calm::bench::bundled_test_prompts(16);
  return prompts;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

template <class Spec>
void measure(benchmark::State& state, Spec& spec) {
  calm::SpeculationStats total;
  double draft_s = 0, verify_s = 0;
  bool identical = true;
  const calm::bench::DecodeTotals totals = calm::bench::early_vs_full(
      state, spec, bundled_prompts(), {.new_tokens = kNewTokens},
      [&](const calm::SpeculativeResult& s, const calm::GenerationResult& f) {
        identical = identical && s.tokens == f.tokens;
        total.rounds += s.speculation.rounds;
        total.drafted += s.speculation.drafted;
        total.accepted += s.speculation.accepted;
        total.draft_layers += s.speculation.draft_layers;
        draft_s += s.speculation.draft_seconds;
        verify_s += s.speculation.verify_seconds;
      });
  // Every token is the full model's (exit layer L): layer_x is 1, wall_over_layer is wall_x,
  // and the split of a speculative decode is draft% / verify%, not the decoder loop's.
  for (const char* c : {"avg_layers", "layer_x", "wall_over_layer", "layers%", "checks%",
                        "propagation%", "head%"})
    state.counters.erase(c);
  state.counters["acceptance"] = total.acceptance_rate();
  state.counters["tokens_per_round"] = total.tokens_per_round();
  state.counters["draft_exit"] = total.mean_draft_exit();
  state.counters["draft%"] = 100 * draft_s / totals.early_seconds;
  state.counters["verify%"] = 100 * verify_s / totals.early_seconds;
  state.counters["identical"] = identical ? 1 : 0;
}

// Args: static draft layer E, gamma, reuse (1/0).
void BM_SpecStatic(benchmark::State& state) {
  calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> spec(
      calm::LlamaSession(bundled()), {}, {std::size_t(state.range(0))}, {},
      {.max_draft = std::size_t(state.range(1)), .reuse_draft = state.range(2) != 0});
  measure(state, spec);
}

// Args: threshold lambda in percent, gamma (decaying schedule, tau 4; reuse on).
template <class Measure>
void BM_SpecThreshold(benchmark::State& state, Measure m) {
  calm::SpeculativeDecoder<calm::LlamaSession, Measure, calm::ConstantThreshold> spec(
      calm::LlamaSession(bundled()), m, {float(state.range(0)) / 100.0f}, {},
      {.max_draft = std::size_t(state.range(1))});
  measure(state, spec);
}

void BM_SpecClassifier(benchmark::State& state) {
  BM_SpecThreshold(state, calm::ExitClassifier::load(kBundled / "calm.safetensors",
                                                     bundled()->hidden_size()));
}

// One pass of all layers over n tokens (Products given), per token, over one decode step's
// time, interleaved. Args: n, products (1 = matvec, 0 = matmul).
void verify_cost(benchmark::State& state, const std::shared_ptr<const calm::LlamaModel>& model) {
  const std::size_t n = std::size_t(state.range(0));
  const auto products = state.range(1) ? calm::Products::matvec : calm::Products::matmul;
  calm::LlamaSession s(model);
  const std::size_t h = model->hidden_size(), L = model->num_layers();
  std::vector<int> prompt(64);
  std::iota(prompt.begin(), prompt.end(), 3);
  std::vector<float> x(h), rows(n * h);
  s.append(prompt, x);
  double one_s = 0, batch_s = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    model->embed(5, x.data());
    for (std::size_t l = 0; l < L; ++l) s.run_layer(l, x, prompt.size());
    one_s += seconds_since(t0);
    s.truncate(prompt.size());
    for (std::size_t t = 0; t < n; ++t) model->embed(int(5 + t), rows.data() + t * h);
    t0 = std::chrono::steady_clock::now();
    s.run_layers(0, L, rows, prompt.size(), products);
    batch_s += seconds_since(t0);
    s.truncate(prompt.size());
  }
  state.counters["pass_over_step"] = batch_s / one_s;
  state.counters["per_token_over_step"] = batch_s / one_s / double(n);
  state.counters["step_ms"] = 1e3 * one_s / double(state.iterations());
}

void BM_VerifyCostBundled(benchmark::State& state) { verify_cost(state, bundled()); }
void BM_VerifyCostTinyLlama(benchmark::State& state) {
  static const auto m = calm::LlamaModel::load(
      calm::bench::random_checkpoint(calm::bench::kTinyLlama), {.max_context = 256});
  verify_cost(state, m);
}

}  // namespace

BENCHMARK(BM_SpecStatic)
    ->ArgsProduct({{2, 3, 4, 6}, {2, 4, 6}, {1}})
    ->Args({3, 4, 0})
    ->ArgNames({"E", "gamma", "reuse"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_SpecThreshold, softmax, calm::SoftmaxResponse{})
    ->ArgsProduct({{30, 50, 70, 90}, {4, 8}})
    ->ArgNames({"lambda%", "gamma"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_SpecThreshold, saturation, calm::HiddenSaturation{})
    ->ArgsProduct({{90, 95, 99}, {4, 8}})
    ->ArgNames({"lambda%", "gamma"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SpecClassifier)
    ->ArgsProduct({{50, 70, 90}, {4, 8}})
    ->ArgNames({"lambda%", "gamma"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_VerifyCostBundled)
    ->ArgsProduct({{1, 2, 4, 8, 16}, {1, 0}})
    ->ArgNames({"n", "matvec"})
    ->Iterations(200)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_VerifyCostTinyLlama)
    ->ArgsProduct({{1, 2, 4, 8, 16}, {1, 0}})
    ->ArgNames({"n", "matvec"})
    ->Iterations(5)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
