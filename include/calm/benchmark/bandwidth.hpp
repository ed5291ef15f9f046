// The machine's limits, measured in the benchmark's own run: a STREAM-style triad and a
// read-only bandwidth for any thread count, and the bound they put on a decode that reads a
// model's weights once per token. Speed figures are reported as ratios to these numbers
// measured in the same run, never as absolute times: on a shared machine the absolute figures
// move with the load, the ratios much less.
//
//   const calm::bench::MachineLimits& m = calm::bench::machine_limits(2);  // measured once
//   calm::bench::set_bound_counters(state, model.weight_bytes_per_token(), m);
#pragma once

#include <benchmark/benchmark.h>
#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <ctime>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <sys/mman.h>

#include "calm/core/aligned.hpp"
#include "calm/core/thread_pool.hpp"

namespace calm::bench {

// How a bandwidth pass is timed. thread_cpu (the calling thread's CPU time) leaves out the time
// the thread was descheduled, as Google Benchmark's default CPU-time rows do; it measures only
// the calling thread's work, so use it with 1 thread. wall: with several threads, or next to
// UseRealTime() rows.
enum class Timing : unsigned char { wall, thread_cpu };

inline double thread_cpu_seconds() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

namespace detail {

// Best (shortest) of `passes` timed calls of pass().
template <class Pass>
double best_seconds(int passes, Timing timing, Pass&& pass) {
  double best = 1e30;
  for (int rep = 0; rep < passes; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = thread_cpu_seconds();
    pass();
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, timing == Timing::thread_cpu ? thread_cpu_seconds() - c0 : wall);
  }
  return best;
}

}  // namespace detail

// STREAM's triad a = b + s·c over three float arrays, by default 3 x 64 MiB (far past the
// last-level caches of current CPUs). bytes() follows STREAM's convention: 12 bytes per element
// (two reads, one write), the write-allocate read of `a` not counted, so a read-only kernel may
// exceed the triad figure.
class Triad {
 public:
  static constexpr std::size_t kDefaultLength = std::size_t{1} << 24;  // floats per array

  explicit Triad(std::size_t length = kDefaultLength) : a_(length), b_(length), c_(length) {
    std::fill(b_.begin(), b_.end(), 1.0f);
    std::fill(c_.begin(), c_.end(), 2.0f);
  }

  // One pass, split into pool.size() contiguous slices of whole SIMD batches.
  void run(ThreadPool& pool) {
    using B = xsimd::batch<float>;
    const std::size_t n = a_.size(), chunks = pool.size();
    pool.parallel_for(chunks, [&](std::size_t t) {
      const std::size_t begin = n * t / chunks / B::size * B::size;
      const std::size_t end = t + 1 == chunks ? n : n * (t + 1) / chunks / B::size * B::size;
      const B s(3.0f);
      std::size_t i = begin;
      for (; i + B::size <= end; i += B::size)
        xsimd::fma(s, B::load_aligned(c_.data() + i), B::load_aligned(b_.data() + i))
            .store_aligned(a_.data() + i);
      for (; i < end; ++i) a_[i] = 3.0f * c_[i] + b_[i];
    });
  }

  double bytes() const noexcept { return 3.0 * sizeof(float) * static_cast<double>(a_.size()); }
  const float* result() const noexcept { return a_.data(); }

 private:
  AlignedBuffer<float> a_, b_, c_;  // (length) each
};

// Triad bandwidth in bytes/s: the best of `passes` passes after one that faults the pages in.
inline double measure_triad_bandwidth(std::size_t threads, Timing timing = Timing::wall,
                                      int passes = 10) {
  Triad triad;
  ThreadPool pool(threads);
  triad.run(pool);
  const double best = detail::best_seconds(passes, timing, [&] { triad.run(pool); });
  ::benchmark::DoNotOptimize(triad.result());
  return triad.bytes() / best;
}

// Read-only bandwidth in bytes/s: each thread sums its slice of 512 MiB of floats in huge-page
// memory (the kind of memory calm copies weights into, LlamaOptions::copy_weights; best of
// `passes`). A second reference next to the triad: decode only reads its weights. 0 if the
// memory cannot be mapped.
inline double measure_read_bandwidth(std::size_t threads, Timing timing = Timing::wall,
                                     int passes = 5) {
  using B = xsimd::batch<float>;
  constexpr std::size_t bytes = std::size_t{512} << 20, n = bytes / sizeof(float);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return 0.0;
  ::madvise(p, bytes, MADV_HUGEPAGE);
  float* a = static_cast<float*>(p);
  ThreadPool pool(threads);
  std::vector<float> sums(threads);
  pool.parallel_for(threads, [&](std::size_t t) {  // first touch by the thread that reads it
    for (std::size_t i = n * t / threads; i < n * (t + 1) / threads; ++i) a[i] = 1.0f;
  });
  const auto pass = [&] {
    pool.parallel_for(threads, [&](std::size_t t) {
      // Slices rounded to 4 batches: 4 independent accumulators keep the adds off the critical
      // path, so the loop waits on memory only.
      constexpr std::size_t step = 4 * B::size;
      const std::size_t lo = n * t / threads / step * step, hi = n * (t + 1) / threads / step * step;
      B s0(0.0f), s1(0.0f), s2(0.0f), s3(0.0f);
      for (std::size_t i = lo; i < hi; i += step) {
        s0 += B::load_aligned(a + i);
        s1 += B::load_aligned(a + i + B::size);
        s2 += B::load_aligned(a + i + 2 * B::size);
        s3 += B::load_aligned(a + i + 3 * B::size);
      }
      sums[t] = xsimd::hadd((s0 + s1) + (s2 + s3));
    });
  };
  const double best = detail::best_seconds(passes, timing, pass);
  ::benchmark::DoNotOptimize(sums.data());
  ::munmap(p, bytes);
  return static_cast<double>(bytes) / best;
}

// What the machine can move with `threads` threads, measured in this run.
struct MachineLimits {
  std::size_t threads = 1;
  Timing timing = Timing::wall;
  double triad_bytes_per_second = 0.0;  // STREAM triad (Triad::bytes() convention)
  double read_bytes_per_second = 0.0;   // read-only sum over huge pages; 0: not measured

  // The shortest time per token of a decode that reads `bytes` of weights per token, at the
  // triad's rate: the memory-bandwidth bound of decoding.
  double triad_bound_seconds(double bytes) const noexcept { return bytes / triad_bytes_per_second; }
  double read_bound_seconds(double bytes) const noexcept {
    return read_bytes_per_second > 0.0 ? bytes / read_bytes_per_second : 0.0;
  }
};

inline MachineLimits measure_machine_limits(std::size_t threads, Timing timing = Timing::wall) {
  MachineLimits m;
  m.threads = threads;
  m.timing = timing;
  m.triad_bytes_per_second = measure_triad_bandwidth(threads, timing);
  m.read_bytes_per_second = measure_read_bandwidth(threads, timing);
  return m;
}

// The limits for `threads` threads, measured on first use and kept for the rest of the run
// (each measurement takes ~1 s). Also recorded in the benchmark's context output.
inline const MachineLimits& machine_limits(std::size_t threads, Timing timing = Timing::wall) {
  static std::mutex mutex;
  static std::map<std::pair<std::size_t, Timing>, MachineLimits> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find({threads, timing});
  if (it == cache.end()) {
    it = cache.emplace(std::pair{threads, timing}, measure_machine_limits(threads, timing)).first;
    const std::string key = "triad_" + std::to_string(threads) + "thread" +
                            (timing == Timing::thread_cpu ? "_cpu" : "_wall") + "_GBps";
    ::benchmark::AddCustomContext(key, std::to_string(it->second.triad_bytes_per_second * 1e-9));
  }
  return it->second;
}

// Counters of a benchmark whose iterations each decode one token reading `bytes_per_token` of
// weights:
//   bound_over_time       (bytes / triad) / measured time per token: >= 1 means at or past the
//                         bandwidth bound. A rate counter, so Google Benchmark prints it with a
//                         "/s" suffix; it is a plain ratio.
//   read_bound_over_time  the same against the read-only bandwidth;
//   weights_GB/s, triad_GB/s, read_GB/s, weight_GB_per_token.
inline void set_bound_counters(::benchmark::State& state, double bytes_per_token,
                               const MachineLimits& m) {
  using ::benchmark::Counter;
  const double n = static_cast<double>(state.iterations());
  state.counters["weight_GB_per_token"] = bytes_per_token / 1e9;
  state.counters["triad_GB/s"] = m.triad_bytes_per_second / 1e9;
  state.counters["weights_GB/s"] = Counter(bytes_per_token * n / 1e9, Counter::kIsRate);
  state.counters["bound_over_time"] = Counter(m.triad_bound_seconds(bytes_per_token) * n,
                                              Counter::kIsRate);
  if (m.read_bytes_per_second > 0.0) {
    state.counters["read_GB/s"] = m.read_bytes_per_second / 1e9;
    state.counters["read_bound_over_time"] = Counter(m.read_bound_seconds(bytes_per_token) * n,
                                                     Counter::kIsRate);
  }
}

}  // namespace calm::bench
