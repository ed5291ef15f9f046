// Bench-only glue on top of the benchmark kit (<calm/benchmark.hpp>): where the bundled model
// lives in this source tree, and its test prompts. Random checkpoints, shapes, bandwidth and the
// decode comparisons are the kit's.
#pragma once

#include <calm/benchmark.hpp>
#include <calm/io/tokenizer.hpp>

#include <calm/backends/llama/llama.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <numeric>
#include <vector>

namespace calm::bench {

// The bundled model (models/shakespeare-8l), trained to exit early.
inline const std::filesystem::path kBundled = std::filesystem::path(CALM_MODELS) / "shakespeare-8l";

// The first `count` prompts of its test split, tokenized, each with room for max_new_tokens.
inline std::vector<std::vector<int>> bundled_test_prompts(std::size_t count,
                                                          std::size_t max_new_tokens = 64) {
  const calm::Tokenizer tok = calm::Tokenizer::load(kBundled / "tokenizer.model");
  return encode_prompt_file(kBundled / "data" / "test.jsonl", tok, count, max_new_tokens, 256);
}

// The verification cost of speculative decoding: one pass of all layers over n = range(0) tokens
// with `products`, over one decode step's time, interleaved, after a 64-token prompt. Counters
// pass_over_step, per_token_over_step, step_ms.
inline void verify_cost(benchmark::State& state, const std::shared_ptr<const LlamaModel>& model,
                        Products products, std::size_t threads = 1) {
  const std::size_t n = std::size_t(state.range(0));
  LlamaSession s(model, {.pool = threads > 1 ? std::make_shared<ThreadPool>(threads) : nullptr});
  const std::size_t h = model->hidden_size(), L = model->num_layers();
  std::vector<int> prompt(64);
  std::iota(prompt.begin(), prompt.end(), 3);
  std::vector<float> x(h), rows(n * h);
  s.append(prompt, x);
  const auto since = [](std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  double one_s = 0, batch_s = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    model->embed(5, x.data());
    for (std::size_t l = 0; l < L; ++l) s.run_layer(l, x, prompt.size());
    one_s += since(t0);
    s.truncate(prompt.size());
    for (std::size_t t = 0; t < n; ++t) model->embed(int(5 + t), rows.data() + t * h);
    t0 = std::chrono::steady_clock::now();
    s.run_layers(0, L, rows, prompt.size(), products);
    batch_s += since(t0);
    s.truncate(prompt.size());
  }
  state.counters["pass_over_step"] = batch_s / one_s;
  state.counters["per_token_over_step"] = batch_s / one_s / double(n);
  state.counters["step_ms"] = 1e3 * one_s / double(state.iterations());
}

// verify_cost with range(1) choosing the unit (1: AMX tiles where the process may; 0: the
// AVX-512 kernels) and range(2) the threads. For the int8 formats only the unit changes; for
// bf16_dot the arithmetic changes with it, step and pass alike. Counter amx: whether the tiles
// could run.
inline void verify_cost_amx(benchmark::State& state, const std::shared_ptr<const LlamaModel>& model,
                            Products products) {
  kernels::amx::enable(state.range(1) != 0);
  verify_cost(state, model, products, std::size_t(state.range(2)));
  state.counters["amx"] = kernels::amx::usable();
  kernels::amx::enable(true);
}

// The bundled model's larger sibling (tools/train_sibling.sh: 24.6 M parameters, 49 MB of bf16
// weights, beyond the 32 MB L3 of many hosts), not committed: $CALM_SIBLING, default
// models/shakespeare-8l-wide; empty when it is not there.
inline std::filesystem::path sibling_model() {
  const char* env = std::getenv("CALM_SIBLING");
  const std::filesystem::path dir = env && *env ? std::filesystem::path(env)
                                                : std::filesystem::path(CALM_MODELS) /
                                                      "shakespeare-8l-wide";
  return std::filesystem::exists(dir / "config.json") ? dir : std::filesystem::path();
}

}  // namespace calm::bench
