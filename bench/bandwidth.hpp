// The machine's limit, measured inside each benchmark binary: a STREAM-style triad
// a[i] = b[i] + s * c[i] over arrays far larger than the caches. Every speed figure is reported
// as a ratio to this number measured in the same run, never as an absolute time, because the
// machine is shared and noisy.
#pragma once

#include <calm/core/thread_pool.hpp>

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <vector>

#include <sys/mman.h>

namespace calm::bench {

// Triad bandwidth in bytes/s (3 arrays of 8M doubles: 192 MiB moved per pass; best of 5 passes).
inline double measure_triad_bandwidth(std::size_t threads) {
  constexpr std::size_t n = std::size_t{8} << 20;
  std::unique_ptr<double[]> a(new double[n]), b(new double[n]), c(new double[n]);
  ThreadPool pool(threads);
  const auto pass = [&](double s) {
    pool.parallel_for(threads, [&](std::size_t t) {
      const std::size_t lo = n * t / threads, hi = n * (t + 1) / threads;
      for (std::size_t i = lo; i < hi; ++i) a[i] = b[i] + s * c[i];
    });
  };
  pool.parallel_for(threads, [&](std::size_t t) {  // first touch by the thread that uses the pages
    for (std::size_t i = n * t / threads; i < n * (t + 1) / threads; ++i) a[i] = 0, b[i] = 1, c[i] = 2;
  });
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pass(0.5 + rep);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 3.0 * n * sizeof(double) / best;
}

// Read-only bandwidth in bytes/s: each thread sums its slice of 512 MiB of floats in huge-page
// memory (the weights' kind of memory, see WeightArena; best of 5 passes). A second reference
// next to the triad: decode only reads its weights, and the triad also writes.
inline double measure_read_bandwidth(std::size_t threads) {
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
      // Slices rounded to 4 batches: 4 independent accumulators keep the adds off the critical path.
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
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pass();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  volatile float sink = sums[0];  // keeps the sums alive
  (void)sink;
  ::munmap(p, bytes);
  return static_cast<double>(bytes) / best;
}

// Measured once per thread count per run, on first use.
inline double triad_bandwidth(std::size_t threads) {
  static std::map<std::size_t, double> cache;
  auto it = cache.find(threads);
  if (it == cache.end()) it = cache.emplace(threads, measure_triad_bandwidth(threads)).first;
  return it->second;
}

}  // namespace calm::bench
