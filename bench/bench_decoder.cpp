// Decoder costs, measured side by side in one run:
//  - zero overhead: Decoder<LlamaSession&, NoConfidence, Never> against a plain loop over the
//    backend's layers (BM_NeverOverhead interleaves the two and reports decoder / plain);
//  - what early exit costs and saves per policy (layers used, checks, tokens/s);
//  - softmax-response check strategies on a vocabulary-sized logit vector;
//  - one check of each shipped measure next to one layer, at real shapes (the kit's
//    calm/benchmark/measure_cost.hpp: BM_CheckCost/<shape>/<measure>).
// Models are random-weight checkpoints from the kit's fixtures (cached in $CALM_BENCH_DIR).
#include <calm/backends/llama/llama.hpp>
#include <calm/confidence/hidden_saturation.hpp>
#include <calm/confidence/softmax_response.hpp>
#include <calm/decoder.hpp>
#include <calm/kernels/argmax.hpp>
#include <calm/kernels/softmax.hpp>
#include <calm/schedule/constant.hpp>
#include <calm/schedule/never.hpp>
#include <calm/schedule/static_exit.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <vector>

#include <calm/benchmark.hpp>

namespace {

constexpr std::size_t kNewTokens = 32;
const std::vector<int> kPrompt = {1, 306, 1658, 278, 593, 310, 834, 338};  // < vocab 2048

calm::LlamaSession& model(const calm::bench::ModelShape& shape) {
  static calm::LlamaSession small =
      calm::LlamaSession::load(calm::bench::random_checkpoint(calm::bench::kSmall));
  (void)shape;
  return small;
}

// The baseline: prefill, then greedy tokens with a hand-written loop over the layers.
int plain_generate(calm::LlamaSession& m, std::vector<float>& x, std::vector<float>& normed,
                   std::vector<float>& logits) {
  m.prefill(kPrompt, 0, x);
  m.final_norm(x, normed);
  m.lm_head(normed, logits);
  int token = int(calm::kernels::argmax(logits.data(), logits.size()));
  for (std::size_t t = 1; t < kNewTokens; ++t) {
    m.embed(token, x);
    for (std::size_t i = 0; i < m.num_layers(); ++i) m.run_layer(i, x, kPrompt.size() + t - 1);
    m.final_norm(x, normed);
    m.lm_head(normed, logits);
    token = int(calm::kernels::argmax(logits.data(), logits.size()));
  }
  return token;
}

void BM_PlainLoop(benchmark::State& state) {
  calm::LlamaSession& m = model(calm::bench::kSmall);
  std::vector<float> x(m.hidden_size()), normed(m.hidden_size()), logits(m.vocab_size());
  for (auto _ : state) benchmark::DoNotOptimize(plain_generate(m, x, normed, logits));
  state.counters["tokens/s"] =
      benchmark::Counter(double(kNewTokens), benchmark::Counter::kIsIterationInvariantRate);
}

template <class C, class S>
void BM_Decoder(benchmark::State& state, C measure, S schedule) {
  calm::LlamaSession& m = model(calm::bench::kSmall);
  calm::Decoder<calm::LlamaSession&, C, S> dec(m, measure, schedule);
  calm::GenerationResult r;
  for (auto _ : state) {
    r = dec.generate(kPrompt, kNewTokens);
    benchmark::DoNotOptimize(r.tokens.data());
  }
  std::size_t checks = 0;
  for (const auto& t : r.report.tokens) checks += t.checks;
  state.counters["tokens/s"] =
      benchmark::Counter(double(kNewTokens), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["avg_layers"] = r.report.average_layers();
  state.counters["checks/token"] = double(checks) / double(r.report.tokens.size());
  state.counters["check_share"] = r.report.check_seconds / r.report.generation_seconds;
  state.counters["prop_share"] = r.report.propagation_seconds / r.report.generation_seconds;
}

// Plain loop and Decoder<..., Never> alternated within one benchmark (which one goes first
// alternates too), so that machine noise hits both alike; the minimum over many rounds
// estimates each one's undisturbed time. Thread CPU time is reported next to wall time: on a
// shared machine it is the steadier of the two.
double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

void BM_NeverOverhead(benchmark::State& state) {
  calm::LlamaSession& m = model(calm::bench::kSmall);
  std::vector<float> x(m.hidden_size()), normed(m.hidden_size()), logits(m.vocab_size());
  calm::Decoder<calm::LlamaSession&, calm::NoConfidence, calm::Never> dec(m);
  using Clock = std::chrono::steady_clock;
  double wall[2] = {1e30, 1e30}, cpu[2] = {1e30, 1e30};  // [plain, decoder]
  const auto run = [&](int which) {
    const auto t0 = Clock::now();
    const double c0 = thread_cpu_seconds();
    if (which == 0) {
      benchmark::DoNotOptimize(plain_generate(m, x, normed, logits));
    } else {
      const auto r = dec.generate(kPrompt, kNewTokens);
      benchmark::DoNotOptimize(r.tokens.data());
    }
    cpu[which] = std::min(cpu[which], thread_cpu_seconds() - c0);
    wall[which] = std::min(wall[which], std::chrono::duration<double>(Clock::now() - t0).count());
  };
  int round = 0;
  for (auto _ : state) {
    const int first = round++ % 2;
    run(first);
    run(1 - first);
  }
  state.counters["plain_ms"] = wall[0] * 1e3;
  state.counters["decoder_ms"] = wall[1] * 1e3;
  state.counters["decoder/plain"] = wall[1] / wall[0];
  state.counters["cpu_decoder/plain"] = cpu[1] / cpu[0];
}

// Softmax response on V logits: the library's exact summary (top-2 + one exp-sum pass, no
// probability vector), its one-pass scalar twin, and the naive materialise-softmax-then-top-2.
std::vector<float> logits_of(std::size_t v) {
  std::vector<float> l(v);
  std::uint32_t s = 7;
  for (float& e : l) {
    s = s * 1664525u + 1013904223u;
    e = float(s >> 8) / float(1u << 24) * 20.0f - 10.0f;
  }
  return l;
}

void BM_SoftmaxResponseSummary(benchmark::State& state) {
  const std::vector<float> l = logits_of(std::size_t(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(calm::summarize_logits(l).probability_gap());
}
void BM_SoftmaxResponseScalarOnePass(benchmark::State& state) {
  const std::vector<float> l = logits_of(std::size_t(state.range(0)));
  for (auto _ : state)
    benchmark::DoNotOptimize(calm::scalar::summarize_logits(l).probability_gap());
}
void BM_SoftmaxResponseMaterialised(benchmark::State& state) {
  const std::vector<float> l = logits_of(std::size_t(state.range(0)));
  std::vector<float> p(l.size());
  for (auto _ : state) {
    std::copy(l.begin(), l.end(), p.begin());
    calm::kernels::softmax(p.data(), p.size());
    const calm::kernels::Top2 t = calm::kernels::top2(p.data(), p.size());
    benchmark::DoNotOptimize(t.v1 - t.v2);
  }
}
// The projection the check needs: W_head . normed, for the same model.
void BM_LmHead(benchmark::State& state) {
  calm::LlamaSession& m = model(calm::bench::kSmall);
  std::vector<float> normed(m.hidden_size(), 0.1f), logits(m.vocab_size());
  for (auto _ : state) {
    m.lm_head(normed, logits);
    benchmark::DoNotOptimize(logits.data());
  }
}
void BM_OneLayer(benchmark::State& state) {
  calm::LlamaSession& m = model(calm::bench::kSmall);
  std::vector<float> x(m.hidden_size(), 0.1f);
  for (auto _ : state) {
    m.run_layer(3, x, 8);
    std::fill(x.begin(), x.end(), 0.1f);
  }
}

}  // namespace

BENCHMARK(BM_NeverOverhead)->Iterations(60)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_PlainLoop)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Decoder, never, calm::SoftmaxResponse{}, calm::Never{})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Decoder, softmax_lambda_above_1, calm::SoftmaxResponse{},
                  calm::ConstantThreshold{1.01f})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Decoder, softmax_lambda_1, calm::SoftmaxResponse{},
                  calm::ConstantThreshold{1.0f})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Decoder, saturation_lambda_1, calm::HiddenSaturation{},
                  calm::ConstantThreshold{1.0f})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Decoder, static_exit_4, calm::SoftmaxResponse{}, calm::StaticExit{4})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SoftmaxResponseSummary)->Arg(2048)->Arg(32000);
BENCHMARK(BM_SoftmaxResponseScalarOnePass)->Arg(2048)->Arg(32000);
BENCHMARK(BM_SoftmaxResponseMaterialised)->Arg(2048)->Arg(32000);
BENCHMARK(BM_LmHead);
BENCHMARK(BM_OneLayer);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  // 1-layer random checkpoints of each shape, written when first run (Llama-3.2-1B's: 0.65 GB).
  for (const calm::bench::ModelShape* shape :
       {&calm::bench::kSmall, &calm::bench::kTinyLlama, &calm::bench::kLlama32_1B})
    calm::bench::register_check_costs("BM_CheckCost/" + shape->name, *shape);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
