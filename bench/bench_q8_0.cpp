// q8_0 and q4_0 weights (formats/, LlamaOptions::weights) against the file's bf16, measured in
// the same run: each iteration decodes a few tokens with the bf16 model and as many with the
// quantized model of the same checkpoint, alternating which goes first, so noise on the
// (shared) machine hits both alike. Counters (q4_0's are named q4_...):
//   bf16_tok/s q8_0_tok/s  decode speed of each (full model, one token after a 64-token prompt)
//   q8_over_bf16           the speed ratio
//   bf16_of_triad q8_of_triad   bytes of weights per token / time per token, over the triad
//                          bandwidth measured right before (the fraction of the memory bound)
//   bf16_of_read q8_of_read     the same over the read-only bandwidth
// Models: TinyLlama-1.1B's shape with random bf16 weights (the kit's fixtures; memory-bound) and
// the bundled models/shakespeare-8l (in cache: per-token fixed costs). BM_Matvec: one matrix
// y = W x, bf16 vs q8_0, alternately, at TinyLlama's largest shapes.
#include "model_fixture.hpp"

#include <calm/backends/llama/llama.hpp>
#include <calm/benchmark.hpp>
#include <calm/kernels/amx.hpp>
#include <calm/kernels/matvec.hpp>
#include <calm/kernels/q8_0.hpp>

#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kPromptTokens = 64;
constexpr std::size_t kTokensPerTurn = 4;  // tokens each model decodes per turn

struct Decoding {
  calm::LlamaSession session;
  std::vector<float> x, logits;
  std::size_t pos = kPromptTokens;
  double seconds = 0;
  std::size_t tokens = 0;

  Decoding(const std::filesystem::path& dir, std::size_t threads, calm::WeightFormat format)
      : session(calm::LlamaSession::load(dir, threads, {.max_context = 256, .weights = format})),
        x(session.hidden_size()),
        logits(session.vocab_size()) {
    std::vector<int> prompt(kPromptTokens);
    std::iota(prompt.begin(), prompt.end(), 3);
    session.prefill(prompt, 0, x);
  }
  void turn() {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t k = 0; k < kTokensPerTurn; ++k) {
      if (pos == session.max_context()) pos = kPromptTokens;  // wrap: positions are reused
      session.embed(static_cast<int>(pos % 300), x);
      for (std::size_t i = 0; i < session.num_layers(); ++i) session.run_layer(i, x, pos);
      session.exit_head(x, logits);
      benchmark::DoNotOptimize(logits.data());
      ++pos;
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    tokens += kTokensPerTurn;
  }
};

// The quantized format's counters are named after it: q8_0_tok/s, q8_over_bf16, q8_of_triad, ...
// (q4_0: q4_...; the dot-product formats: dot_...).
struct Quantized {
  calm::WeightFormat format;
  std::string name, prefix;  // "q8_0", "q8"
};
const Quantized kQ8{calm::WeightFormat::q8_0, "q8_0", "q8"};
const Quantized kQ4{calm::WeightFormat::q4_0, "q4_0", "q4"};
const Quantized kQ8Dot{calm::WeightFormat::q8_0_dot, "q8_0_dot", "dot"};
const Quantized kQ4Dot{calm::WeightFormat::q4_0_dot, "q4_0_dot", "dot"};

void BM_DecodeQuantized(benchmark::State& state, const std::filesystem::path& dir,
                        const Quantized& quantized) {
  const auto threads = static_cast<std::size_t>(state.range(0));
  Decoding bf16(dir, threads, calm::WeightFormat::file), q8(dir, threads, quantized.format);
  const calm::bench::MachineLimits limits = calm::bench::measure_machine_limits(threads);
  bool bf16_first = true;
  for (auto _ : state) {
    if (bf16_first) {
      bf16.turn();
      q8.turn();
    } else {
      q8.turn();
      bf16.turn();
    }
    bf16_first = !bf16_first;
  }
  const double tb = bf16.seconds / double(bf16.tokens), tq = q8.seconds / double(q8.tokens);
  const double bytes_b = double(bf16.session.model().weight_bytes_per_token());
  const double bytes_q = double(q8.session.model().weight_bytes_per_token());
  const std::string& p = quantized.prefix;
  state.counters["bf16_tok/s"] = 1.0 / tb;
  state.counters[quantized.name + "_tok/s"] = 1.0 / tq;
  state.counters[p + "_over_bf16"] = tb / tq;
  state.counters["bf16_of_triad"] = bytes_b / tb / limits.triad_bytes_per_second;
  state.counters[p + "_of_triad"] = bytes_q / tq / limits.triad_bytes_per_second;
  if (limits.read_bytes_per_second > 0) {
    state.counters["bf16_of_read"] = bytes_b / tb / limits.read_bytes_per_second;
    state.counters[p + "_of_read"] = bytes_q / tq / limits.read_bytes_per_second;
  }
  state.counters[p + "_GB_per_token"] = bytes_q / 1e9;
}

void BM_DecodeQ8_TinyLlama(benchmark::State& state) {
  BM_DecodeQuantized(state, calm::bench::random_checkpoint(calm::bench::kTinyLlama), kQ8);
}
void BM_DecodeQ8_Shakespeare(benchmark::State& state) {
  BM_DecodeQuantized(state, std::filesystem::path(CALM_MODELS) / "shakespeare-8l", kQ8);
}
void BM_DecodeQ4_TinyLlama(benchmark::State& state) {
  BM_DecodeQuantized(state, calm::bench::random_checkpoint(calm::bench::kTinyLlama), kQ4);
}

// Runs turn(k) for k = 0 and 1 each iteration, in alternating order (0 first, then 1 first),
// and returns the seconds each took in all.
template <class Turn>
std::array<double, 2> alternate(benchmark::State& state, Turn&& turn) {
  std::array<double, 2> seconds{};
  bool zero_first = true;
  for (auto _ : state) {
    for (int i = 0; i < 2; ++i) {
      const int k = (i == 0) == zero_first ? 0 : 1;
      const auto t0 = std::chrono::steady_clock::now();
      turn(k);
      seconds[k] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    zero_first = !zero_first;
  }
  return seconds;
}

// Prefill of a 64-token prompt, bf16 and quantized (Linear::apply_batch of each) alternately.
// Counter: q8_over_bf16 (q4_over_bf16), the ratio of prompt tokens/s.
void BM_PrefillQuantized(benchmark::State& state, const Quantized& quantized) {
  const auto dir = calm::bench::random_checkpoint(calm::bench::kTinyLlama);
  const auto threads = static_cast<std::size_t>(state.range(0));
  calm::LlamaSession bf16 = calm::LlamaSession::load(dir, threads, {.max_context = 256});
  calm::LlamaSession q8 =
      calm::LlamaSession::load(dir, threads, {.max_context = 256, .weights = quantized.format});
  std::vector<int> prompt(kPromptTokens);
  std::iota(prompt.begin(), prompt.end(), 3);
  std::vector<float> x(bf16.hidden_size());
  const auto [tb, tq] = alternate(state, [&](int k) { (k == 0 ? bf16 : q8).prefill(prompt, 0, x); });
  const double n = double(state.iterations()) * kPromptTokens;
  state.counters["bf16_prompt_tok/s"] = n / tb;
  state.counters[quantized.name + "_prompt_tok/s"] = n / tq;
  state.counters[quantized.prefix + "_over_bf16"] = tb / tq;
}
void BM_PrefillQ8_TinyLlama(benchmark::State& state) { BM_PrefillQuantized(state, kQ8); }
void BM_PrefillQ8Dot_TinyLlama(benchmark::State& state) { BM_PrefillQuantized(state, kQ8Dot); }

// An int8-dot format's prefill of a 64-token prompt on AMX (its blocks dequantized to bf16 on
// AMX-BF16 tiles, kernels/blocks.hpp) and on the AVX-512 int8 kernels (amx::enable),
// alternately; within the bf16 prefill's tolerance of each other, not the same bits. Counters:
// amx_prompt_tok/s, avx512_prompt_tok/s, amx_over_avx512; amx 0 where the process may not use
// AMX (then both turns run the AVX-512 kernels).
void BM_PrefillDotAmx(benchmark::State& state, calm::WeightFormat format) {
  const auto dir = calm::bench::random_checkpoint(calm::bench::kTinyLlama);
  const auto threads = static_cast<std::size_t>(state.range(0));
  calm::LlamaSession s =
      calm::LlamaSession::load(dir, threads, {.max_context = 256, .weights = format});
  std::vector<int> prompt(kPromptTokens);
  std::iota(prompt.begin(), prompt.end(), 3);
  std::vector<float> x(s.hidden_size());
  const auto [t_amx, t_avx] = alternate(state, [&](int k) {
    calm::kernels::amx::enable(k == 0);
    s.prefill(prompt, 0, x);
  });
  calm::kernels::amx::enable(true);
  const double n = double(state.iterations()) * kPromptTokens;
  state.counters["amx_prompt_tok/s"] = n / t_amx;
  state.counters["avx512_prompt_tok/s"] = n / t_avx;
  state.counters["amx_over_avx512"] = t_avx / t_amx;
  state.counters["amx"] = calm::kernels::amx::usable();
}
void BM_PrefillQ8DotAmx_TinyLlama(benchmark::State& state) {
  BM_PrefillDotAmx(state, calm::WeightFormat::q8_0_dot);
}
void BM_PrefillQ4DotAmx_TinyLlama(benchmark::State& state) {
  BM_PrefillDotAmx(state, calm::WeightFormat::q4_0_dot);
}
void BM_PrefillQ4Dot_TinyLlama(benchmark::State& state) { BM_PrefillQuantized(state, kQ4Dot); }

// A block format on the int8 dot product (WeightFormat::q8_0_dot, q4_0_dot: x quantized to int8
// blocks, one arithmetic for every batch size) against the same blocks with the block kernels
// (q8_0: f32 x; q4_0: x quantized too, its own f32 order), decoding alternately as above.
// Counters (q8_0 / q8_0_dot; q4_0 / q4_0_dot likewise): q8_0_tok/s, q8_0_dot_tok/s,
// dot_over_q8 (the speed ratio), each one's decode step in ms, and each one's bytes of weights
// per token / time per token over the triad bandwidth measured right before (q8_of_triad,
// dot_of_triad: the fraction of the memory bound); on a shared machine the bandwidth moves
// during the run, so also over the mean of one triad pass per iteration, run between the turns
// (q8_of_mean_triad, dot_of_mean_triad).
void BM_DecodeDotVsBlocks(benchmark::State& state, const Quantized& blocks, const Quantized& dot) {
  const auto dir = calm::bench::random_checkpoint(calm::bench::kTinyLlama);
  const auto threads = static_cast<std::size_t>(state.range(0));
  Decoding plain(dir, threads, blocks.format), dotted(dir, threads, dot.format);
  const calm::bench::MachineLimits limits = calm::bench::measure_machine_limits(threads);
  calm::ThreadPool pool(threads);
  calm::bench::Triad triad;
  triad.run(pool);  // faults the pages in
  double triad_s = 0;
  bool plain_first = true;
  for (auto _ : state) {
    if (plain_first) {
      plain.turn();
      dotted.turn();
    } else {
      dotted.turn();
      plain.turn();
    }
    const auto t0 = std::chrono::steady_clock::now();
    triad.run(pool);
    triad_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    plain_first = !plain_first;
  }
  const double mean_triad = triad.bytes() * double(state.iterations()) / triad_s;
  const double tq = plain.seconds / double(plain.tokens), td = dotted.seconds / double(dotted.tokens);
  state.counters[blocks.name + "_tok/s"] = 1.0 / tq;
  state.counters[dot.name + "_tok/s"] = 1.0 / td;
  state.counters["dot_over_" + blocks.prefix] = tq / td;
  state.counters[blocks.name + "_step_ms"] = 1e3 * tq;
  state.counters[dot.name + "_step_ms"] = 1e3 * td;
  const double bytes = double(dotted.session.model().weight_bytes_per_token());
  state.counters[blocks.prefix + "_of_triad"] = bytes / tq / limits.triad_bytes_per_second;
  state.counters["dot_of_triad"] = bytes / td / limits.triad_bytes_per_second;
  state.counters[blocks.prefix + "_of_mean_triad"] = bytes / tq / mean_triad;
  state.counters["dot_of_mean_triad"] = bytes / td / mean_triad;
  state.counters["GB_per_token"] = bytes / 1e9;
}
void BM_DecodeQ8DotVsQ8_TinyLlama(benchmark::State& state) {
  BM_DecodeDotVsBlocks(state, kQ8, kQ8Dot);
}
void BM_DecodeQ4DotVsQ4_TinyLlama(benchmark::State& state) {
  BM_DecodeDotVsBlocks(state, kQ4, kQ4Dot);
}

// The verification cost of speculative decoding (calm::bench::verify_cost, as bench_speculative's
// BM_VerifyCostTinyLlama): each row bitwise the row alone (Products::matvec). Args: n.
void verify_cost(benchmark::State& state, const std::shared_ptr<const calm::LlamaModel>& model) {
  calm::bench::verify_cost(state, model, calm::Products::matvec);
}
std::shared_ptr<const calm::LlamaModel> tiny_llama(calm::WeightFormat format) {
  return calm::LlamaModel::load(calm::bench::random_checkpoint(calm::bench::kTinyLlama),
                                {.max_context = 256, .weights = format});
}
void BM_VerifyCostTinyLlamaQ8(benchmark::State& state) {
  static const auto m = tiny_llama(calm::WeightFormat::q8_0);
  verify_cost(state, m);
}
void BM_VerifyCostTinyLlamaQ8Dot(benchmark::State& state) {
  static const auto m = tiny_llama(calm::WeightFormat::q8_0_dot);
  calm::bench::verify_cost_amx(state, m, calm::Products::matvec);
}
void BM_VerifyCostTinyLlamaQ4Dot(benchmark::State& state) {
  static const auto m = tiny_llama(calm::WeightFormat::q4_0_dot);
  calm::bench::verify_cost_amx(state, m, calm::Products::matvec);
}

void BM_PrefillQ4_TinyLlama(benchmark::State& state) { BM_PrefillQuantized(state, kQ4); }

// y = W x for one (rows, cols) matrix, bf16 and q8_0 alternately (weights far larger than the
// caches: each iteration reads every weight from memory). Args: rows, cols.
void BM_Matvec(benchmark::State& state) {
  const auto rows = static_cast<std::size_t>(state.range(0)), cols = static_cast<std::size_t>(state.range(1));
  // Several copies so that the pass over them outruns the last-level cache.
  constexpr std::size_t kCopies = 8;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-0.03f, 0.03f);
  std::vector<calm::bf16> wb(kCopies * rows * cols);
  for (auto& w : wb) w = calm::to_bf16(u(rng));
  std::vector<std::int8_t> q(wb.size());
  std::vector<float> d(wb.size() / calm::kernels::kQ8Block);
  for (std::size_t r = 0; r < kCopies * rows; ++r)
    calm::kernels::quantize_row_q8_0(q.data() + r * cols, d.data() + r * (cols / 32),
                                     wb.data() + r * cols, cols);
  std::vector<float> x(cols, 0.5f), y(rows);
  const calm::bench::MachineLimits limits = calm::bench::measure_machine_limits(1);
  double tb = 0, tq = 0;
  std::size_t copy = 0;
  for (auto _ : state) {
    const std::size_t o = copy * rows * cols;
    auto t0 = std::chrono::steady_clock::now();
    calm::kernels::matvec(y.data(), wb.data() + o, x.data(), rows, cols);
    auto t1 = std::chrono::steady_clock::now();
    calm::kernels::matvec_q8_0(y.data(), q.data() + o, d.data() + o / 32, x.data(), rows, cols);
    auto t2 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(y.data());
    tb += std::chrono::duration<double>(t1 - t0).count();
    tq += std::chrono::duration<double>(t2 - t1).count();
    copy = (copy + 1) % kCopies;
  }
  const double n = double(state.iterations());
  const double bytes_b = 2.0 * rows * cols, bytes_q = 1.125 * rows * cols;
  state.counters["q8_over_bf16"] = tb / tq;
  state.counters["bf16_of_triad"] = bytes_b * n / tb / limits.triad_bytes_per_second;
  state.counters["q8_of_triad"] = bytes_q * n / tq / limits.triad_bytes_per_second;
  if (limits.read_bytes_per_second > 0) {
    state.counters["bf16_of_read"] = bytes_b * n / tb / limits.read_bytes_per_second;
    state.counters["q8_of_read"] = bytes_q * n / tq / limits.read_bytes_per_second;
  }
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)

// The other way to multiply q8_0 weights, as llama.cpp does: quantize x to q8_0 blocks too
// and take int8 dot products (vpdpbusd: |w| as unsigned times x with w's sign), one f32 scale
// product dw * dx per block. A prototype kept here to measure the choice (docs/design.md §13):
// 4 rows at a time, cols a multiple of 64, no prefetch.
void matvec_q8_vnni(float* y, const std::int8_t* q, const float* d, const std::int8_t* xq,
                    const float* dx, std::size_t rows, std::size_t cols) {
  const std::size_t nb = cols / 32;
  const __m512i halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i zero = _mm512_setzero_si512();
  const auto pair = [&](const float* p) {  // [p0 x8, p1 x8]
    return _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_castpd_ps(
                                             _mm_load_sd(reinterpret_cast<const double*>(p)))));
  };
  for (std::size_t r0 = 0; r0 + 4 <= rows; r0 += 4) {
    __m512 acc[4];
    for (auto& a : acc) a = _mm512_setzero_ps();
    for (std::size_t b = 0; b < nb; b += 2) {
      const std::size_t c = b * 32;
      const __m512i xv = _mm512_loadu_si512(xq + c);
      const __m512 sx = pair(dx + b);
      for (std::size_t r = 0; r < 4; ++r) {
        const __m512i wv = _mm512_loadu_si512(q + (r0 + r) * cols + c);
        const __m512i sxv = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), zero, xv);
        const __m512i dot = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(wv), sxv);
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot),
                                 _mm512_mul_ps(sx, pair(d + (r0 + r) * nb + b)), acc[r]);
      }
    }
    for (std::size_t r = 0; r < 4; ++r) y[r0 + r] = _mm512_reduce_add_ps(acc[r]);
  }
}

// y = W x, q8_0 with f32 x (calm's kernel) against the VNNI prototype (x quantized per call,
// its cost included), alternately. Args: rows, cols, copies (1: in cache).
void BM_MatvecVnni(benchmark::State& state) {
  const auto rows = static_cast<std::size_t>(state.range(0)), cols = static_cast<std::size_t>(state.range(1));
  const auto copies = static_cast<std::size_t>(state.range(2));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-0.03f, 0.03f);
  std::vector<float> w(copies * rows * cols);
  for (auto& v : w) v = u(rng);
  std::vector<std::int8_t> q(w.size());
  std::vector<float> d(w.size() / 32);
  for (std::size_t r = 0; r < copies * rows; ++r)
    calm::kernels::quantize_row_q8_0(q.data() + r * cols, d.data() + r * (cols / 32), w.data() + r * cols, cols);
  std::vector<float> x(cols), y(rows), y2(rows);
  for (auto& v : x) v = u(rng) * 30;
  std::vector<std::int8_t> xq(cols);
  std::vector<float> dx(cols / 32);
  double tf = 0, tv = 0;
  std::size_t copy = 0;
  for (auto _ : state) {
    const std::size_t o = copy * rows * cols;
    auto t0 = std::chrono::steady_clock::now();
    calm::kernels::matvec_q8_0(y.data(), q.data() + o, d.data() + o / 32, x.data(), rows, cols);
    auto t1 = std::chrono::steady_clock::now();
    calm::kernels::quantize_row_q8_0(xq.data(), dx.data(), x.data(), cols);
    matvec_q8_vnni(y2.data(), q.data() + o, d.data() + o / 32, xq.data(), dx.data(), rows, cols);
    auto t2 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(y2.data());
    tf += std::chrono::duration<double>(t1 - t0).count();
    tv += std::chrono::duration<double>(t2 - t1).count();
    copy = (copy + 1) % copies;
  }
  double num = 0, den = 0;  // how far x's quantization moves y
  for (std::size_t r = 0; r < rows; ++r) num += double(y2[r] - y[r]) * (y2[r] - y[r]), den += double(y[r]) * y[r];
  state.counters["vnni_over_f32x"] = tf / tv;
  state.counters["vnni_rel_diff"] = std::sqrt(num / den);
}

#endif  // __AVX512VNNI__

}  // namespace

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
BENCHMARK(BM_MatvecVnni)->Args({512, 192, 1})->Args({192, 512, 1})->Args({2048, 2048, 1})->Args({4096, 4096, 8})->Unit(benchmark::kMicrosecond)->UseRealTime();
#endif
BENCHMARK(BM_DecodeQ8_TinyLlama)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
BENCHMARK(BM_DecodeQ8_Shakespeare)->Arg(1)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DecodeQ4_TinyLlama)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
BENCHMARK(BM_PrefillQ8_TinyLlama)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_PrefillQ8Dot_TinyLlama)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_PrefillQ8DotAmx_TinyLlama)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_PrefillQ4Dot_TinyLlama)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_PrefillQ4DotAmx_TinyLlama)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_PrefillQ4_TinyLlama)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DecodeQ8DotVsQ8_TinyLlama)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
BENCHMARK(BM_VerifyCostTinyLlamaQ8)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(16)->ArgName("n")->Iterations(5)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_VerifyCostTinyLlamaQ8Dot)->ArgsProduct({{1, 2, 4, 8, 16}, {1, 0}, {1, 2}})->ArgNames({"n", "amx", "threads"})->Iterations(5)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DecodeQ4DotVsQ4_TinyLlama)->Arg(1)->Arg(2)->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
BENCHMARK(BM_VerifyCostTinyLlamaQ4Dot)->ArgsProduct({{1, 2, 4, 8, 16}, {1, 0}, {1, 2}})->ArgNames({"n", "amx", "threads"})->Iterations(5)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Matvec)->Args({2048, 5632})->Args({5632, 2048})->Args({4096, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
