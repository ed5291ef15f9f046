// End-to-end speed of the Llama backend with the full model (no early exit): decode time per
// token against the memory-bandwidth bound (weight bytes read per token ÷ triad bandwidth, both
// measured in this run; also against a read-only bandwidth), and prefill GFLOP/s. Models:
// TinyLlama-1.1B's and Llama-3.2-1B's shapes and a small one, random bf16 weights (the kit's
// fixtures, calm/benchmark/fixtures.hpp; limits from calm/benchmark/bandwidth.hpp).
#include <calm/backends/llama/llama.hpp>
#include <calm/benchmark.hpp>

#include <benchmark/benchmark.h>

#include <numeric>
#include <vector>

namespace {

constexpr std::size_t kPromptTokens = 64;

// Decodes one token per iteration after a 64-token prompt (positions 64..64+iterations).
// Args: threads, weights copied to huge-page memory (1) or read from the file mapping (0).
void BM_Decode(benchmark::State& state, const calm::bench::ModelShape& shape,
               calm::WeightFormat weights = calm::WeightFormat::file) {
  const auto threads = static_cast<std::size_t>(state.range(0));
  calm::LlamaSession model = calm::LlamaSession::load(
      calm::bench::random_checkpoint(shape), threads,
      {.max_context = 2048, .copy_weights = state.range(1) != 0, .weights = weights});
  std::vector<int> prompt(kPromptTokens);
  std::iota(prompt.begin(), prompt.end(), 3);
  std::vector<float> x(model.hidden_size()), logits(model.vocab_size());
  model.prefill(prompt, 0, x);
  // Measured right before the decode, with its thread count: the limits of this moment.
  const calm::bench::MachineLimits limits = calm::bench::measure_machine_limits(threads);
  std::size_t pos = kPromptTokens;
  for (auto _ : state) {
    if (pos == model.max_context()) pos = kPromptTokens;  // wrap: cache positions are reused
    model.embed(static_cast<int>(pos % 1000), x);
    for (std::size_t i = 0; i < model.num_layers(); ++i) model.run_layer(i, x, pos);
    model.exit_head(x, logits);
    benchmark::DoNotOptimize(logits.data());
    ++pos;
  }
  calm::bench::set_bound_counters(state, double(model.weight_bytes_per_token()), limits);
  state.counters["tokens/s"] = benchmark::Counter(state.iterations(), benchmark::Counter::kIsRate);
}

// Prefill of a 64-token prompt: GFLOP/s of the matrix-matrix products (2 · params · tokens).
void BM_Prefill(benchmark::State& state, const calm::bench::ModelShape& shape,
                calm::WeightFormat weights = calm::WeightFormat::file) {
  const auto threads = static_cast<std::size_t>(state.range(0));
  calm::LlamaSession model = calm::LlamaSession::load(calm::bench::random_checkpoint(shape), threads,
                                                       {.max_context = 2048, .weights = weights});
  std::vector<int> prompt(kPromptTokens);
  std::iota(prompt.begin(), prompt.end(), 3);
  std::vector<float> x(model.hidden_size());
  for (auto _ : state) {
    model.prefill(prompt, 0, x);
    benchmark::DoNotOptimize(x.data());
  }
  const auto& w = model.model().weights();
  double layer_params = 0;
  for (const auto& l : w.layers)
    layer_params += double(l.q.rows * l.q.cols + l.k.rows * l.k.cols + l.v.rows * l.v.cols +
                           l.o.rows * l.o.cols + l.gate.rows * l.gate.cols +
                           l.up.rows * l.up.cols + l.down.rows * l.down.cols);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * layer_params * kPromptTokens * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
  state.counters["prompt_tokens/s"] =
      benchmark::Counter(double(kPromptTokens) * state.iterations(), benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(BM_Decode, tinyllama, calm::bench::kTinyLlama)
    ->ArgsProduct({{1, 2}, {1, 0}})->ArgNames({"threads", "copy"})->Unit(benchmark::kMillisecond)->UseRealTime();
// Llama-3.2-1B's shape (tied 128256 x 2048 head, llama3 RoPE scaling): 2.5 GB written on first use.
BENCHMARK_CAPTURE(BM_Decode, llama32_1b, calm::bench::kLlama32_1B)
    ->ArgsProduct({{1, 2}, {1}})->ArgNames({"threads", "copy"})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Decode, small, calm::bench::kSmall)
    ->ArgsProduct({{1, 2}, {1, 0}})->ArgNames({"threads", "copy"})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Prefill, tinyllama, calm::bench::kTinyLlama)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();
// The same checkpoint on the bf16 dot product (WeightFormat::bf16_dot: AMX-BF16 tiles where the
// process may, for decoding too; the vdpbf16ps chain elsewhere).
BENCHMARK_CAPTURE(BM_Decode, tinyllama_bf16_dot, calm::bench::kTinyLlama, calm::WeightFormat::bf16_dot)
    ->ArgsProduct({{1, 2}, {1}})->ArgNames({"threads", "copy"})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Prefill, tinyllama_bf16_dot, calm::bench::kTinyLlama, calm::WeightFormat::bf16_dot)
    ->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Prefill, small, calm::bench::kSmall)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
