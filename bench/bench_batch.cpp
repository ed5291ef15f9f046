// Aggregate decode throughput of calm::BatchDecoder against the number of sequences decoded
// together, as a ratio to one sequence measured in the same iteration (alternately, so machine
// noise hits both alike): rows_x = (rows tokens / batch time) / (1 token / single time).
// Where weights stream from memory a step over n rows reads each weight once, so rows_x grows
// nearly with n until the products turn compute-bound.
//  - TinyLlama-1.1B's shape, random bf16 weights: the full model, and a static exit at layer 11
//    of 22 (its exit does not depend on the weights);
//  - the bundled model (its weights sit in cache: compute-bound): the full model and the
//    certified-style early exit (exit classifier, decaying threshold 0.8), whose rows leave at
//    their own layers.
// Prefill is not timed: only the steps after every row joined. Counters: rows_x, tokens_per_s
// (aggregate), avg_layers (mean exit layer of the batch's tokens).
#include "model_fixture.hpp"

#include <calm/backends/llama/llama.hpp>
#include <calm/benchmark.hpp>
#include <calm/confidence/exit_classifier.hpp>
#include <calm/decoding/batch.hpp>
#include <calm/schedule/decaying.hpp>
#include <calm/schedule/never.hpp>
#include <calm/schedule/static_exit.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>
#include <vector>

namespace {

constexpr std::size_t kNewTokens = 16;

struct Timed {
  double seconds = 0.0, layers = 0.0;
  std::size_t tokens = 0;
};

// Joins one sequence per prompt, then times the steps until all are done.
template <class C, class S>
Timed decode_batch(const std::shared_ptr<const calm::LlamaModel>& model,
                   const std::vector<std::vector<int>>& prompts, const C& measure,
                   const S& schedule) {
  calm::BatchDecoder<C, S> batch(model, {.max_rows = prompts.size(), .max_context = 256});
  for (const auto& p : prompts) {
    calm::SequenceRequest r;
    r.prompt = p;
    r.max_new_tokens = kNewTokens;
    batch.join(r, measure, schedule);
  }
  Timed t;
  const auto t0 = std::chrono::steady_clock::now();
  while (batch.active() > 0)
    for (const calm::BatchToken& b : batch.step()) {
      ++t.tokens;
      t.layers += double(b.stats.exit_layer);
    }
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return t;
}

// Args: rows.
template <class C, class S>
void run(benchmark::State& state, const std::shared_ptr<const calm::LlamaModel>& model,
         const std::vector<std::vector<int>>& pool, const C& measure, const S& schedule) {
  const std::size_t rows = std::size_t(state.range(0));
  std::vector<std::vector<int>> prompts;
  for (std::size_t i = 0; i < rows; ++i) prompts.push_back(pool[i % pool.size()]);
  double single = 0.0, batched = 0.0, layers = 0.0;
  std::size_t single_tokens = 0, batched_tokens = 0;
  for (auto _ : state) {
    const Timed one = decode_batch(model, {prompts.front()}, measure, schedule);
    const Timed many = decode_batch(model, prompts, measure, schedule);
    single += one.seconds;
    single_tokens += one.tokens;
    batched += many.seconds;
    batched_tokens += many.tokens;
    layers += many.layers;
    state.SetIterationTime(many.seconds);
  }
  const double rate = double(batched_tokens) / batched, one_rate = double(single_tokens) / single;
  state.counters["tokens_per_s"] = rate;
  state.counters["rows_x"] = rate / one_rate;
  state.counters["avg_layers"] = layers / double(batched_tokens);
}

const std::shared_ptr<const calm::LlamaModel>& tinyllama() {
  static const auto m = calm::LlamaModel::load(
      calm::bench::random_checkpoint(calm::bench::kTinyLlama), {.max_context = 256});
  return m;
}
const std::vector<std::vector<int>> kTinyPrompts = {{1, 306, 1658, 278, 593, 310, 834, 338},
                                                    {1, 450, 4996, 17354, 1701, 432, 17204}};

void BM_TinyLlamaFull(benchmark::State& state) {
  run(state, tinyllama(), kTinyPrompts, calm::NoConfidence{}, calm::Never{});
}
// The full model on the bf16 dot product (WeightFormat::bf16_dot).
void BM_TinyLlamaFullBf16Dot(benchmark::State& state) {
  static const auto m =
      calm::LlamaModel::load(calm::bench::random_checkpoint(calm::bench::kTinyLlama),
                             {.max_context = 256, .weights = calm::WeightFormat::bf16_dot});
  run(state, m, kTinyPrompts, calm::NoConfidence{}, calm::Never{});
}
void BM_TinyLlamaStatic11(benchmark::State& state) {
  run(state, tinyllama(), kTinyPrompts, calm::NoConfidence{}, calm::StaticExit{11});
}

const std::shared_ptr<const calm::LlamaModel>& bundled() {
  static const auto m = calm::LlamaModel::load(calm::bench::kBundled);
  return m;
}
const std::vector<std::vector<int>>& bundled_prompts() {
  static const auto p = calm::bench::bundled_test_prompts(16);
  return p;
}

void BM_BundledFull(benchmark::State& state) {
  run(state, bundled(), bundled_prompts(), calm::NoConfidence{}, calm::Never{});
}
void BM_BundledClassifier(benchmark::State& state) {
  static const auto classifier = calm::ExitClassifier::load(
      calm::bench::kBundled / "calm.safetensors", bundled()->hidden_size());
  run(state, bundled(), bundled_prompts(), classifier,
      calm::DecayingThreshold{.lambda = 0.8f, .tau = 4.0f});
}

#define CALM_ROWS ->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(16)->ArgName("rows")->UseManualTime()
BENCHMARK(BM_TinyLlamaFull) CALM_ROWS->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TinyLlamaFullBf16Dot) CALM_ROWS->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TinyLlamaStatic11) CALM_ROWS->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BundledFull) CALM_ROWS->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BundledClassifier) CALM_ROWS->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
