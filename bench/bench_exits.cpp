// What early exit buys in time, next to what it saves in layers (docs/design.md §8), measured side by side:
// each iteration decodes the same prompts with the early-exit decoder and with the full model
// (Never), alternately, so machine noise hits both alike.
//  - the bundled model (models/shakespeare-8l, trained to exit early): each measure at several
//    thresholds;
//  - TinyLlama-1.1B's shape (random weights): static exits, whose exit layer does not depend
//    on the weights, show the cost of propagating K/V for skipped layers at a realistic size.
// Counters: avg_layers, layer_x (L / avg_layers), wall_x (full time / early time), and
// wall_over_layer (wall_x / layer_x; the target is >= 0.8), time shares of layers,
// checks, propagation and head.
#include "model_fixture.hpp"

#include <calm/backends/llama/llama.hpp>
#include <calm/confidence/exit_classifier.hpp>
#include <calm/confidence/hidden_saturation.hpp>
#include <calm/confidence/softmax_response.hpp>
#include <calm/decoder.hpp>
#include <calm/io/tokenizer.hpp>
#include <calm/schedule/decaying.hpp>
#include <calm/schedule/never.hpp>
#include <calm/schedule/static_exit.hpp>

#include <benchmark/benchmark.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kNewTokens = 32;
using calm::bench::kBundled;

calm::LlamaSession& bundled() {
  static calm::LlamaSession m = calm::LlamaSession::load(kBundled);
  return m;
}

// The first 8 test prompts of the bundled model, tokenized.
const std::vector<std::vector<int>>& bundled_prompts() {
  static const std::vector<std::vector<int>> prompts = calm::bench::bundled_test_prompts(8);
  return prompts;
}

template <class Early>
void measure(benchmark::State& state, calm::LlamaSession& model, Early& early,
             const std::vector<std::vector<int>>& prompts) {
  calm::Decoder<calm::LlamaSession&, calm::HiddenSaturation, calm::Never> full(model);
  double early_s = 0, full_s = 0, layers = 0, tokens = 0, layer_s = 0, check_s = 0, prop_s = 0,
         head_s = 0;
  for (auto _ : state) {
    for (const auto& prompt : prompts) {
      const auto e = early.generate(prompt, kNewTokens);
      const auto f = full.generate(prompt, kNewTokens);
      early_s += e.report.generation_seconds;
      full_s += f.report.generation_seconds;
      layers += e.report.average_layers() * double(e.report.tokens.size());
      tokens += double(e.report.tokens.size());
      layer_s += e.report.layer_seconds;
      check_s += e.report.check_seconds;
      prop_s += e.report.propagation_seconds;
      head_s += e.report.head_seconds;
    }
  }
  const double L = double(model.num_layers()), avg = layers / tokens;
  state.counters["avg_layers"] = avg;
  state.counters["layer_x"] = L / avg;
  state.counters["wall_x"] = full_s / early_s;
  state.counters["wall_over_layer"] = (full_s / early_s) / (L / avg);
  state.counters["layers%"] = 100 * layer_s / early_s;
  state.counters["checks%"] = 100 * check_s / early_s;
  state.counters["propagation%"] = 100 * prop_s / early_s;
  state.counters["head%"] = 100 * head_s / early_s;
}

// Args: threshold lambda in percent.
template <class Measure>
void BM_Bundled(benchmark::State& state, Measure m) {
  const float lambda = float(state.range(0)) / 100.0f;
  calm::Decoder<calm::LlamaSession&, Measure, calm::DecayingThreshold> early(bundled(), m, {lambda, 4.0f});
  measure(state, bundled(), early, bundled_prompts());
}

void BM_BundledClassifier(benchmark::State& state) {
  BM_Bundled(state, calm::ExitClassifier::load(kBundled / "calm.safetensors",
                                               bundled().hidden_size()));
}

// Args: static exit layer (1-based), threads.
void BM_TinyLlamaStatic(benchmark::State& state) {
  static calm::LlamaSession m = calm::LlamaSession::load(
      calm::bench::bench_model_dir(calm::bench::kTinyLlama), 1, {.max_context = 256});
  calm::Decoder<calm::LlamaSession&, calm::HiddenSaturation, calm::StaticExit> early(
      m, {}, calm::StaticExit{std::size_t(state.range(0))});
  const std::vector<std::vector<int>> prompts = {{1, 306, 1658, 278, 593, 310, 834, 338}};
  measure(state, m, early, prompts);
}

BENCHMARK_CAPTURE(BM_Bundled, softmax, calm::SoftmaxResponse{})
    ->Arg(95)->Arg(80)->Arg(50)->Arg(20)->ArgName("lambda%")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Bundled, saturation, calm::HiddenSaturation{})
    ->Arg(100)->Arg(95)->ArgName("lambda%")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BundledClassifier)->Arg(95)->Arg(80)->Arg(50)->Arg(20)->ArgName("lambda%")
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TinyLlamaStatic)->Arg(5)->Arg(11)->Arg(16)->ArgName("exit_layer")
    ->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
