// calm-serve's scheduler: one thread owns the BatchDecoder and loops -- admit queued jobs while
// the batch has rows free (each join prefills its prompt), decode one step for every sequence,
// hand each token to its job, and free the rows of finished and cancelled jobs. The HTTP threads
// only submit jobs and read their channels, so the decoder is never shared between threads.
#pragma once

#include "job.hpp"

#include <calm/core/error.hpp>
#include <calm/decoding/batch.hpp>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

namespace calm::serve {

class Scheduler {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Admission { queued, queue_full, shutting_down };

  Scheduler(std::size_t max_queue, Metrics& metrics) : max_queue_(max_queue), metrics_(metrics) {}

  // Queues a job, or says why not: the queue holds max_queue jobs beyond the batch's free rows
  // (jobs that arrive together wait here for the loop to admit them into free rows).
  Admission submit(std::shared_ptr<Job> job) {
    {
      std::lock_guard lock(m_);
      if (stopping_) return Admission::shutting_down;
      const std::size_t free_rows = capacity_ > busy_ ? capacity_ - busy_ : 0;
      if (queue_.size() >= max_queue_ + free_rows) return Admission::queue_full;
      queue_.push_back(std::move(job));
      metrics_.queued.store(queue_.size(), std::memory_order_relaxed);
    }
    cv_.notify_one();
    return Admission::queued;
  }
  // A job was cancelled: an idle loop wakes to drop it.
  void wake() { cv_.notify_one(); }
  bool stopping() const {
    std::lock_guard lock(m_);
    return stopping_;
  }
  // Accepts no more jobs; those in flight run on until `deadline`, then are cancelled. run()
  // returns once none is left.
  void shut_down(Clock::time_point deadline) {
    {
      std::lock_guard lock(m_);
      stopping_ = true;
      deadline_ = deadline;
    }
    cv_.notify_one();
  }

  // The loop (on the scheduler's own thread). policy(job) gives the job's measure and schedule.
  template <class M, class S, class Policy>
  void run(BatchDecoder<M, S>& batch, Policy&& policy) {
    std::map<SequenceId, std::shared_ptr<Job>> running;
    {
      std::lock_guard lock(m_);
      capacity_ = batch.capacity();
    }
    const auto leave = [&](auto it, Finish how, std::string error = {}) {
      batch.leave(it->first);
      it->second->end(how, std::move(error));
      count(how);
      return running.erase(it);
    };
    for (;;) {
      std::deque<std::shared_ptr<Job>> admitted;
      bool past_deadline = false;
      {
        std::unique_lock lock(m_);
        cv_.wait(lock, [&] { return !queue_.empty() || !running.empty() || stopping_; });
        past_deadline = deadline_ && Clock::now() >= *deadline_;
        if (stopping_ && queue_.empty() && running.empty()) break;
        while (!queue_.empty() && (past_deadline || running.size() + admitted.size() < batch.capacity())) {
          admitted.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
        busy_ = running.size() + admitted.size();
        metrics_.queued.store(queue_.size(), std::memory_order_relaxed);
      }
      for (std::shared_ptr<Job>& job : admitted) {
        if (past_deadline || job->cancelled.load()) {
          job->end(Finish::cancelled, "the server is shutting down");
          count(Finish::cancelled);
          continue;
        }
        try {
          auto [measure, schedule] = policy(*job);
          const SequenceId id = batch.join({.prompt = job->prompt,
                                            .max_new_tokens = job->max_new_tokens,
                                            .sampling = job->sampling,
                                            .decoder = job->decoder},
                                           std::move(measure), std::move(schedule));
          running.emplace(id, std::move(job));
        } catch (const std::exception& e) {
          job->end(Finish::error, e.what());
          count(Finish::error);
        }
      }
      for (auto it = running.begin(); it != running.end();)
        it = past_deadline || it->second->cancelled.load()
                 ? leave(it, Finish::cancelled, past_deadline ? "the server is shutting down" : "")
                 : std::next(it);
      metrics_.sequences.store(batch.size(), std::memory_order_relaxed);
      if (batch.active() == 0) continue;
      try {
        const auto tokens = batch.step();
        metrics_.steps.fetch_add(1, std::memory_order_relaxed);
        metrics_.step_rows.fetch_add(tokens.size(), std::memory_order_relaxed);
        for (const BatchToken& t : tokens) {
          if (!t.error.empty()) {  // this row failed (e.g. non-finite logits); the others go on
            const auto it = running.find(t.id);
            if (it != running.end()) leave(it, Finish::error, "decoding failed: " + t.error);
            continue;
          }
          metrics_.generated_tokens.fetch_add(1, std::memory_order_relaxed);
          metrics_.exit_layer_sum.fetch_add(t.stats.exit_layer, std::memory_order_relaxed);
          const auto it = running.find(t.id);
          if (it == running.end()) continue;  // cannot happen: every row is in `running`
          it->second->push(t.stats, t.finished);
          if (t.finished) {
            batch.leave(t.id);
            metrics_.completed.fetch_add(1, std::memory_order_relaxed);
            running.erase(it);
          }
        }
      } catch (const std::exception& e) {  // the step failed for every row: all of them end
        for (auto it = running.begin(); it != running.end();)
          it = leave(it, Finish::error, std::string("decoding failed: ") + e.what());
      }
      metrics_.sequences.store(batch.size(), std::memory_order_relaxed);
      std::lock_guard lock(m_);
      busy_ = running.size();
    }
    metrics_.sequences.store(0, std::memory_order_relaxed);
  }

 private:
  void count(Finish how) {
    (how == Finish::error ? metrics_.failed : metrics_.cancelled)
        .fetch_add(1, std::memory_order_relaxed);
  }

  std::size_t max_queue_;
  std::size_t capacity_ = 0, busy_ = 0;  // the batch's rows, and those running or admitted
  Metrics& metrics_;
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  std::optional<Clock::time_point> deadline_;
};

}  // namespace calm::serve
