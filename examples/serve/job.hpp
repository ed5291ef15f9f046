// calm-serve: one completion between the HTTP thread that took it and the scheduler thread that
// decodes it (Job: what to decode, and the channel its tokens come back on), and the server's
// counters (Metrics) in Prometheus' text format.
#pragma once

#include <calm/report.hpp>
#include <calm/decoding/common.hpp>
#include <calm/sampling/sampler.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace calm::serve {

// How a sequence ended.
enum class Finish { none, stop, length, cancelled, error };

struct Job {
  // What to decode (set before Scheduler::submit, read only afterwards).
  std::vector<int> prompt;
  std::size_t max_new_tokens = 16;
  SamplingOptions sampling;
  DecoderOptions decoder;     // stop tokens (the tokenizer's end tokens), exit points
  std::string measure_name;   // a name of the server's measure type
  bool full_model = false;    // a threshold no score reaches: every token runs all layers
  float lambda = 1.0f;        // the threshold otherwise

  // Set by the HTTP side: the client is gone (or a stop string ended the text); the scheduler
  // frees the sequence at its next step.
  std::atomic<bool> cancelled{false};

  // The channel: the scheduler pushes tokens, then a Finish; the HTTP thread takes them.
  struct Update {
    std::vector<TokenStats> tokens;
    Finish finish = Finish::none;
    std::string error;
  };
  void push(const TokenStats& token, bool last) {
    {
      std::lock_guard lock(m_);
      pending_.push_back(token);
      // The last token: a stop token (e.g. EOS) ends it with "stop", else the length did.
      if (last) finish_ = std::find(decoder.stop_tokens.begin(), decoder.stop_tokens.end(),
                                    token.token) != decoder.stop_tokens.end()
                              ? Finish::stop : Finish::length;
    }
    cv_.notify_one();
  }
  void end(Finish how, std::string error = {}) {
    {
      std::lock_guard lock(m_);
      if (finish_ == Finish::none) finish_ = how, error_ = std::move(error);
    }
    cv_.notify_one();
  }
  // Waits up to `wait` for tokens or the end. An empty Update with Finish::none: nothing yet.
  template <class Rep, class Period>
  Update take(std::chrono::duration<Rep, Period> wait) {
    std::unique_lock lock(m_);
    cv_.wait_for(lock, wait, [&] { return !pending_.empty() || finish_ != Finish::none; });
    Update u;
    u.tokens.assign(pending_.begin(), pending_.end());
    pending_.clear();
    u.finish = finish_;
    u.error = error_;
    return u;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<TokenStats> pending_;
  Finish finish_ = Finish::none;
  std::string error_;
};

// Counters read by GET /metrics. Written by the scheduler and the HTTP threads; relaxed atomics:
// each value is a count on its own.
struct Metrics {
  std::atomic<std::uint64_t> requests{0};           // completions accepted into the queue
  std::atomic<std::uint64_t> completed{0};          // finished with stop or length
  std::atomic<std::uint64_t> cancelled{0};          // client gone, stop string, or shutdown
  std::atomic<std::uint64_t> failed{0};             // the decoder refused or failed
  std::atomic<std::uint64_t> rejected{0};           // answered with a 4xx/5xx before decoding
  std::atomic<std::uint64_t> prompt_tokens{0};
  std::atomic<std::uint64_t> generated_tokens{0};
  std::atomic<std::uint64_t> exit_layer_sum{0};     // sum of generated tokens' exit layers
  std::atomic<std::uint64_t> full_model_requests{0};
  std::atomic<std::uint64_t> certified_requests{0};
  std::atomic<std::uint64_t> steps{0};              // BatchDecoder::step() calls
  std::atomic<std::uint64_t> step_rows{0};          // sum of the rows decoded by those steps
  std::atomic<std::uint64_t> sequences{0};          // held by the batch now
  std::atomic<std::uint64_t> queued{0};             // waiting for a row now
  std::size_t capacity = 0;
  std::size_t num_layers = 0;

  std::string prometheus() const {
    std::string out;
    const auto metric = [&](const char* name, const char* type, const char* help, double value) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
             name + " " + number(value) + "\n";
    };
    const auto get = [](const std::atomic<std::uint64_t>& a) {
      return static_cast<double>(a.load(std::memory_order_relaxed));
    };
    metric("calm_requests_total", "counter", "completions accepted", get(requests));
    metric("calm_requests_completed_total", "counter", "completions that ended by a stop or the length", get(completed));
    metric("calm_requests_cancelled_total", "counter", "completions ended early: client gone, stop string, shutdown", get(cancelled));
    metric("calm_requests_failed_total", "counter", "completions the decoder refused or failed", get(failed));
    metric("calm_requests_rejected_total", "counter", "requests refused before decoding (4xx, 5xx)", get(rejected));
    metric("calm_requests_certified_total", "counter", "completions decoded under the certificate", get(certified_requests));
    metric("calm_requests_full_model_total", "counter", "completions decoded by the full model", get(full_model_requests));
    metric("calm_prompt_tokens_total", "counter", "prompt tokens prefilled", get(prompt_tokens));
    metric("calm_generated_tokens_total", "counter", "tokens generated", get(generated_tokens));
    metric("calm_exit_layers_total", "counter", "sum of the generated tokens' exit layers", get(exit_layer_sum));
    const double tokens = get(generated_tokens);
    metric("calm_mean_exit_layer", "gauge", "mean exit layer of the generated tokens (0: none yet)",
           tokens > 0 ? get(exit_layer_sum) / tokens : 0.0);
    metric("calm_model_layers", "gauge", "layers of the model", static_cast<double>(num_layers));
    metric("calm_batch_steps_total", "counter", "batched decoding steps", get(steps));
    metric("calm_batch_rows_total", "counter", "rows decoded over all steps", get(step_rows));
    const double steps_done = get(steps);
    metric("calm_batch_mean_rows", "gauge", "mean rows per step (0: no step yet)",
           steps_done > 0 ? get(step_rows) / steps_done : 0.0);
    metric("calm_batch_sequences", "gauge", "sequences held by the batch now", get(sequences));
    metric("calm_batch_capacity", "gauge", "sequences the batch holds at most (--max-sequences)",
           static_cast<double>(capacity));
    metric("calm_batch_occupancy", "gauge", "sequences held now / capacity",
           capacity ? get(sequences) / static_cast<double>(capacity) : 0.0);
    metric("calm_queue_length", "gauge", "completions waiting for a row", get(queued));
    return out;
  }

 private:
  static std::string number(double v) {
    char text[64];
    std::snprintf(text, sizeof text, "%.17g", v);
    return text;
  }
};

}  // namespace calm::serve
