// ThreadPool: a small fork-join pool for the big kernels (matvec, matmul, attention).
//
// Decode calls a matvec about seven times per layer, so the per-call overhead matters more than
// flexibility: parallel_for wakes the persistent workers by bumping a generation counter, the
// caller takes share 0 itself, and everyone spins briefly before blocking (std::atomic::wait,
// a futex on Linux) so back-to-back calls never pay for a sleep/wake.
//
// Work is split statically: with T threads, thread t runs tasks [n*t/T, n*(t+1)/T) in order.
// Kernels give each output element to exactly one task, so results do not depend on timing.
//
// One parallel_for runs at a time (callers from several threads are serialised); calling
// parallel_for on the same pool from inside a task deadlocks and is not allowed.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "calm/core/error.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace calm {

class ThreadPool {
 public:
  // n_threads counts the calling thread: 1 runs everything inline and starts no thread.
  explicit ThreadPool(std::size_t n_threads) : n_threads_(n_threads) {
    if (n_threads == 0) throw Error("ThreadPool: n_threads must be at least 1 (got 0)");
    workers_.reserve(n_threads - 1);
    for (std::size_t t = 1; t < n_threads; ++t) workers_.emplace_back([this, t] { worker_loop(t); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    stop_.store(true, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    generation_.notify_all();
    for (auto& w : workers_) w.join();
  }

  std::size_t size() const noexcept { return n_threads_; }

  // Runs f(task) for every task in [0, n_tasks) and returns when all are done. The first
  // exception thrown by a task is rethrown here (after every thread has finished its share).
  template <class F>
  void parallel_for(std::size_t n_tasks, F&& f) {
    if (n_tasks == 0) return;
    if (n_threads_ == 1 || n_tasks == 1) {
      for (std::size_t i = 0; i < n_tasks; ++i) f(i);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    std::lock_guard<std::mutex> lock(call_mutex_);
    job_ctx_ = const_cast<void*>(static_cast<const void*>(std::addressof(f)));
    job_call_ = [](void* ctx, std::size_t task) { (*static_cast<Fn*>(ctx))(task); };
    job_n_tasks_ = n_tasks;
    error_ = nullptr;
    pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);  // publishes job_* to the workers
    generation_.notify_all();

    std::exception_ptr own_error;
    try {
      run_share(0);
    } catch (...) {
      own_error = std::current_exception();
    }
    // Wait for the workers: they read f, which lives in the caller's frame.
    for (unsigned spins = 0;;) {
      const std::size_t left = pending_.load(std::memory_order_acquire);
      if (left == 0) break;
      if (spins < kSpinLimit) {
        ++spins;
        cpu_relax();
      } else {
        pending_.wait(left, std::memory_order_acquire);
      }
    }
    if (own_error) std::rethrow_exception(own_error);
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  // About 30-60 µs of pause instructions before blocking: long enough to bridge the small
  // kernels between two matvecs, short enough not to starve other processes on 2 cores.
  static constexpr unsigned kSpinLimit = 1u << 11;

  static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#else
    std::this_thread::yield();
#endif
  }

  void run_share(std::size_t thread) {
    const std::size_t begin = job_n_tasks_ * thread / n_threads_;
    const std::size_t end = job_n_tasks_ * (thread + 1) / n_threads_;
    for (std::size_t i = begin; i < end; ++i) job_call_(job_ctx_, i);
  }

  void worker_loop(std::size_t thread) {
    std::uint64_t seen = 0;
    for (;;) {
      std::uint64_t now = generation_.load(std::memory_order_acquire);
      for (unsigned spins = 0; now == seen; now = generation_.load(std::memory_order_acquire)) {
        if (spins < kSpinLimit) {
          ++spins;
          cpu_relax();
        } else {
          generation_.wait(seen, std::memory_order_acquire);
        }
      }
      seen = now;
      if (stop_.load(std::memory_order_relaxed)) return;
      try {
        run_share(thread);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
    }
  }

  std::size_t n_threads_;
  std::vector<std::thread> workers_;
  std::mutex call_mutex_;
  // The current job: written by the caller before the generation bump, read by workers after.
  void* job_ctx_ = nullptr;
  void (*job_call_)(void*, std::size_t) = nullptr;
  std::size_t job_n_tasks_ = 0;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<std::size_t> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

}  // namespace calm
