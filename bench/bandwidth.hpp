// The machine's limit, measured inside each benchmark binary: a STREAM-style triad
// a[i] = b[i] + s * c[i] over arrays far larger than the caches. Every speed figure is reported
// as a ratio to this number measured in the same run, never as an absolute time, because the
// machine is shared and noisy.
#pragma once

#include <calm/core/thread_pool.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <vector>

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

// Measured once per thread count per run, on first use.
inline double triad_bandwidth(std::size_t threads) {
  static std::map<std::size_t, double> cache;
  auto it = cache.find(threads);
  if (it == cache.end()) it = cache.emplace(threads, measure_triad_bandwidth(threads)).first;
  return it->second;
}

}  // namespace calm::bench
