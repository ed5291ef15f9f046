// Kernel benchmarks. Figures are reported as ratios to this machine's limits measured in the
// same run: bytes/s of the memory-bound kernels divided by a STREAM-style triad measured at
// start-up (counter bw_ratio), and FLOP/s of the compute-bound prefill matmul.
//
//   build-kernels/bench/bench_kernels --benchmark_filter=Matvec
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "calm/benchmark/bandwidth.hpp"
#include "calm/core/aligned.hpp"
#include "calm/core/dtype.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/kernels/kernels.hpp"

namespace {

namespace k = calm::kernels;
using calm::AlignedBuffer;

// Triad bandwidth (bytes/s, STREAM convention: 3 arrays x 4 bytes per element, the
// write-allocate read of `a` not counted) for 1 and 2 threads, measured before the benchmarks.
double g_triad_bps[3] = {0.0, 0.0, 0.0};

// The kit's triad (calm/benchmark/bandwidth.hpp): 3 x 64 MiB, far past the 32 MiB L3.
constexpr double kTriadBytes = 3.0 * sizeof(float) * calm::bench::Triad::kDefaultLength;

// Best of 10 triads. One thread: timed in thread CPU time, like the single-threaded benchmarks
// (which Google Benchmark times in CPU time); two threads: wall time, like the 2-thread ones.
double measure_triad(std::size_t threads) {
  return calm::bench::measure_triad_bandwidth(
      threads, threads == 1 ? calm::bench::Timing::thread_cpu : calm::bench::Timing::wall);
}

void set_bandwidth_counters(benchmark::State& state, double bytes_per_iter, std::size_t threads) {
  state.SetBytesProcessed(static_cast<int64_t>(bytes_per_iter * static_cast<double>(state.iterations())));
  state.counters["bw_ratio"] = benchmark::Counter(bytes_per_iter / g_triad_bps[threads],
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

void set_flop_counter(benchmark::State& state, double flops_per_iter) {
  state.counters["FLOPS"] =
      benchmark::Counter(flops_per_iter, benchmark::Counter::kIsIterationInvariantRate);
}

template <class T>
void fill_random(T* p, std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  for (std::size_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, calm::bf16>) p[i] = calm::to_bf16(d(rng));
    else if constexpr (std::is_same_v<T, calm::f16>) p[i] = calm::to_f16(d(rng));
    else p[i] = d(rng);
  }
}

// With --benchmark_repetitions=N the "max" row holds the best rate counters (bytes/s, bw_ratio,
// FLOPS) of the N runs: on shared cores the best run is the one least disturbed.
double max_of(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

struct Simd {};
struct Scalar {};

std::unique_ptr<calm::ThreadPool> make_pool(std::size_t threads) {
  return threads > 1 ? std::make_unique<calm::ThreadPool>(threads) : nullptr;
}

void BM_Triad(benchmark::State& state) {
  const auto threads = static_cast<std::size_t>(state.range(0));
  calm::bench::Triad triad;
  calm::ThreadPool pool(threads);
  for (auto _ : state) {
    triad.run(pool);
    benchmark::ClobberMemory();
  }
  set_bandwidth_counters(state, kTriadBytes, threads);
}
BENCHMARK(BM_Triad)->Arg(1)->Unit(benchmark::kMillisecond)->ComputeStatistics("max", max_of);
BENCHMARK(BM_Triad)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond)->ComputeStatistics("max", max_of);

// y(rows) = W(rows, cols) x. Large weights rotate over copies totalling >= 128 MiB so every
// call streams from DRAM, not from the 32 MiB L3.
template <class Impl, class T>
void BM_Matvec(benchmark::State& state) {
  const auto rows = static_cast<std::size_t>(state.range(0));
  const auto cols = static_cast<std::size_t>(state.range(1));
  const auto threads = static_cast<std::size_t>(state.range(2));
  const std::size_t w_bytes = rows * cols * sizeof(T);
  const std::size_t copies =
      w_bytes >= (std::size_t{8} << 20) ? std::max<std::size_t>(1, (std::size_t{128} << 20) / w_bytes) : 1;
  std::vector<AlignedBuffer<T>> w;
  for (std::size_t i = 0; i < copies; ++i) {
    w.emplace_back(rows * cols);
    fill_random(w.back().data(), rows * cols, 1 + static_cast<unsigned>(i));
  }
  AlignedBuffer<float> x(cols), y(rows);
  fill_random(x.data(), cols, 99);
  auto pool = make_pool(threads);
  std::size_t which = 0;
  for (auto _ : state) {
    if constexpr (std::is_same_v<Impl, Simd>) {
      k::matvec(y.data(), w[which].data(), x.data(), rows, cols, pool.get());
    } else {
      k::scalar::matvec(y.data(), w[which].data(), x.data(), rows, cols);
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    which = which + 1 == copies ? 0 : which + 1;
  }
  set_bandwidth_counters(state, static_cast<double>(w_bytes + (rows + cols) * sizeof(float)), threads);
  set_flop_counter(state, 2.0 * static_cast<double>(rows * cols));
}

// Single-threaded runs are timed in CPU time: the 2 cores are shared with builds, and CPU time
// leaves out the time the benchmark was descheduled. Two-thread runs must use wall time.
void MatvecShapes(benchmark::internal::Benchmark* b) {
  b->Args({4096, 4096, 1});
  b->Args({11008, 4096, 1});
  b->Args({512, 512, 1});
  b->Args({2048, 512, 1});  // also the bundled model's vocabulary projection (2048 x 512)
  b->Args({512, 2048, 1});
  b->Unit(benchmark::kMicrosecond);
  b->ComputeStatistics("max", max_of);
}
void MatvecShapes2(benchmark::internal::Benchmark* b) {
  b->Args({4096, 4096, 2});
  b->Args({11008, 4096, 2});
  b->UseRealTime();
  b->Unit(benchmark::kMicrosecond);
  b->ComputeStatistics("max", max_of);
}
void MatvecScalarShapes(benchmark::internal::Benchmark* b) {
  b->Args({4096, 4096, 1});
  b->Args({512, 512, 1});
  b->Args({2048, 512, 1});
  b->Unit(benchmark::kMicrosecond);
  b->ComputeStatistics("max", max_of);
}
BENCHMARK_TEMPLATE(BM_Matvec, Simd, calm::bf16)->Apply(MatvecShapes);
BENCHMARK_TEMPLATE(BM_Matvec, Simd, calm::bf16)->Apply(MatvecShapes2);
BENCHMARK_TEMPLATE(BM_Matvec, Scalar, calm::bf16)->Apply(MatvecScalarShapes);
BENCHMARK_TEMPLATE(BM_Matvec, Simd, calm::f16)->Apply(MatvecShapes);
BENCHMARK_TEMPLATE(BM_Matvec, Simd, calm::f16)->Apply(MatvecShapes2);
BENCHMARK_TEMPLATE(BM_Matvec, Scalar, calm::f16)->Apply(MatvecScalarShapes);
BENCHMARK_TEMPLATE(BM_Matvec, Simd, float)->Apply(MatvecShapes);
BENCHMARK_TEMPLATE(BM_Matvec, Simd, float)->Apply(MatvecShapes2);
BENCHMARK_TEMPLATE(BM_Matvec, Scalar, float)->Apply(MatvecScalarShapes);

// Y(n, rows) = X(n, cols) W^T (prefill).
template <class Impl, class T>
void BM_Matmul(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto rows = static_cast<std::size_t>(state.range(1));
  const auto cols = static_cast<std::size_t>(state.range(2));
  const auto threads = static_cast<std::size_t>(state.range(3));
  AlignedBuffer<T> w(rows * cols);
  AlignedBuffer<float> x(n * cols), y(n * rows);
  fill_random(w.data(), rows * cols, 5);
  fill_random(x.data(), n * cols, 6);
  auto pool = make_pool(threads);
  for (auto _ : state) {
    if constexpr (std::is_same_v<Impl, Simd>) {
      k::matmul(y.data(), w.data(), x.data(), n, rows, cols, pool.get());
    } else {
      k::scalar::matmul(y.data(), w.data(), x.data(), n, rows, cols);
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_flop_counter(state, 2.0 * static_cast<double>(n * rows * cols));
}

void MatmulShapes(benchmark::internal::Benchmark* b) {
  b->Args({64, 2048, 2048, 1});
  b->Args({64, 5632, 2048, 1});
  b->Args({64, 2048, 5632, 1});
  b->Args({64, 512, 512, 1});
  b->Args({64, 2048, 512, 1});
  b->Args({64, 512, 2048, 1});
  b->Args({16, 2048, 2048, 1});
  b->Unit(benchmark::kMillisecond);
  b->ComputeStatistics("max", max_of);
}
void MatmulShapes2(benchmark::internal::Benchmark* b) {
  b->Args({64, 2048, 2048, 2});
  b->Args({64, 5632, 2048, 2});
  b->UseRealTime();
  b->Unit(benchmark::kMillisecond);
  b->ComputeStatistics("max", max_of);
}
void MatmulScalarShapes(benchmark::internal::Benchmark* b) {
  b->Args({64, 2048, 2048, 1});
  b->Args({64, 512, 512, 1});
  b->Unit(benchmark::kMillisecond);
  b->ComputeStatistics("max", max_of);
}
BENCHMARK_TEMPLATE(BM_Matmul, Simd, calm::bf16)->Apply(MatmulShapes);
BENCHMARK_TEMPLATE(BM_Matmul, Simd, calm::bf16)->Apply(MatmulShapes2);
BENCHMARK_TEMPLATE(BM_Matmul, Scalar, calm::bf16)->Apply(MatmulScalarShapes);
BENCHMARK_TEMPLATE(BM_Matmul, Simd, calm::f16)->Apply(MatmulShapes);
BENCHMARK_TEMPLATE(BM_Matmul, Simd, calm::f16)->Apply(MatmulShapes2);
BENCHMARK_TEMPLATE(BM_Matmul, Simd, float)->Apply(MatmulShapes);
BENCHMARK_TEMPLATE(BM_Matmul, Simd, float)->Apply(MatmulShapes2);

// The small per-token kernels, at Llama-7B-like sizes.
template <class Impl>
void BM_Rmsnorm(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  AlignedBuffer<float> x(n), w(n), out(n);
  fill_random(x.data(), n, 1);
  fill_random(w.data(), n, 2);
  for (auto _ : state) {
    if constexpr (std::is_same_v<Impl, Simd>) k::rmsnorm(out.data(), x.data(), w.data(), n, 1e-5f);
    else k::scalar::rmsnorm(out.data(), x.data(), w.data(), n, 1e-5f);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * 3 * n * sizeof(float)));
}
BENCHMARK_TEMPLATE(BM_Rmsnorm, Simd)->Arg(4096);
BENCHMARK_TEMPLATE(BM_Rmsnorm, Scalar)->Arg(4096);

template <class Impl>
void BM_Softmax(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  AlignedBuffer<float> src(n), x(n);
  fill_random(src.data(), n, 3);
  for (auto _ : state) {
    std::copy(src.begin(), src.end(), x.begin());
    if constexpr (std::is_same_v<Impl, Simd>) k::softmax(x.data(), n);
    else k::scalar::softmax(x.data(), n);
    benchmark::DoNotOptimize(x.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}
BENCHMARK_TEMPLATE(BM_Softmax, Simd)->Arg(32000);
BENCHMARK_TEMPLATE(BM_Softmax, Scalar)->Arg(32000);

template <class Impl>
void BM_Top2(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  AlignedBuffer<float> x(n);
  fill_random(x.data(), n, 4);
  for (auto _ : state) {
    k::Top2 t = std::is_same_v<Impl, Simd> ? k::top2(x.data(), n) : k::scalar::top2(x.data(), n);
    benchmark::DoNotOptimize(t);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}
BENCHMARK_TEMPLATE(BM_Top2, Simd)->Arg(32000);
BENCHMARK_TEMPLATE(BM_Top2, Scalar)->Arg(32000);

// One query over n_pos cached positions: 32 heads, 8 kv heads, head_dim 128.
template <class Impl>
void BM_Attention(benchmark::State& state) {
  const auto n_pos = static_cast<std::size_t>(state.range(0));
  const auto threads = static_cast<std::size_t>(state.range(1));
  const std::size_t n_heads = 32, n_kv = 8, head_dim = 128;
  AlignedBuffer<float> q(n_heads * head_dim), kc(n_pos * n_kv * head_dim),
      vc(n_pos * n_kv * head_dim), out(n_heads * head_dim), sc(n_heads * n_pos);
  fill_random(q.data(), q.size(), 1);
  fill_random(kc.data(), kc.size(), 2);
  fill_random(vc.data(), vc.size(), 3);
  auto pool = make_pool(threads);
  for (auto _ : state) {
    if constexpr (std::is_same_v<Impl, Simd>) {
      k::attention(out.data(), q.data(), kc.data(), vc.data(), n_pos, n_heads, n_kv, head_dim, sc.data(), pool.get());
    } else {
      k::scalar::attention(out.data(), q.data(), kc.data(), vc.data(), n_pos, n_heads, n_kv, head_dim, sc.data());
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_bandwidth_counters(state, 2.0 * static_cast<double>(kc.size() * sizeof(float)), threads);
}
BENCHMARK_TEMPLATE(BM_Attention, Simd)->Args({512, 1})->Args({4096, 1});
BENCHMARK_TEMPLATE(BM_Attention, Simd)->Args({512, 2})->Args({4096, 2})->UseRealTime();
BENCHMARK_TEMPLATE(BM_Attention, Scalar)->Args({512, 1});

// Per-call overhead of the pool (decode calls it ~7 times per layer).
void BM_PoolOverhead(benchmark::State& state) {
  calm::ThreadPool pool(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) pool.parallel_for(pool.size(), [](std::size_t i) { benchmark::DoNotOptimize(i); });
}
BENCHMARK(BM_PoolOverhead)->Arg(1)->Arg(2)->UseRealTime();  // wall time: includes the wake-up

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  g_triad_bps[1] = measure_triad(1);
  g_triad_bps[2] = measure_triad(2);
  std::printf("triad bandwidth (best of 10, STREAM bytes): 1 thread %.2f GB/s (CPU time), "
              "2 threads %.2f GB/s (wall time)\n",
              g_triad_bps[1] * 1e-9, g_triad_bps[2] * 1e-9);
  benchmark::AddCustomContext("triad_1thread_GBps", std::to_string(g_triad_bps[1] * 1e-9));
  benchmark::AddCustomContext("triad_2threads_GBps", std::to_string(g_triad_bps[2] * 1e-9));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
