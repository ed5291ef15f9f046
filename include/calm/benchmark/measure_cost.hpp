// What one confidence check of a measure costs, next to one layer of the same model, measured
// side by side: the price of an exit point. A check is what the early-exit decoder runs at an
// exit point (calm/decoding/early_exit.hpp): RMSNorm_final of the state when the measure reads
// the normed state or the logits, the V x d vocabulary projection when it reads the logits, then
// score(). A check that costs a fraction f of a layer pays off only if it saves more than f
// layers per check on average (docs/design.md §8).
//
//   calm::bench::register_check_costs("check", model, MyMeasure{});  // + the shipped measures
//   calm::bench::register_check_costs("check/tinyllama", calm::bench::kTinyLlama, MyMeasure{});
//
// Counters: check_ns (one check), layer_ns (one decode layer: a decode step through all layers
// / L, interleaved with the checks), and check_over_layer = check_ns / layer_ns.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "calm/backends/llama/llama.hpp"
#include "calm/benchmark/fixtures.hpp"
#include "calm/concepts.hpp"
#include "calm/confidence/exit_classifier.hpp"
#include "calm/confidence/hidden_saturation.hpp"
#include "calm/confidence/softmax_response.hpp"
#include "calm/core/aligned.hpp"
#include "calm/policy_registry.hpp"

namespace calm::bench {

// A measure with the name it is reported under (for a measure without `policy_name`).
template <ConfidenceMeasure M>
struct Named {
  std::string name;
  M measure;
};
template <ConfidenceMeasure M>
Named<M> named(std::string name, M measure) {
  return {std::move(name), std::move(measure)};
}

namespace detail {
template <class M>
const M& measure_of(const M& m) {
  return m;
}
template <class M>
const M& measure_of(const Named<M>& m) {
  return m.measure;
}
}  // namespace detail

// The name a measure is reported under: its registry name (calm/policy_registry.hpp: "softmax",
// "classifier", or the `policy_name` of a measure of your own), or the one given to named().
template <class M>
std::string measure_name(const M& m) {
  static_assert(has_policy_name<M>,
                "calm::bench: this measure has no `static constexpr std::string_view "
                "policy_name`; give it a name with calm::bench::named(\"name\", measure)");
  return policy_traits<M>::name_of(m);
}
template <class M>
std::string measure_name(const Named<M>& m) {
  return m.name;
}

// One confidence check at exit layer `layer` (1-based) on a given state, computed as
// calm::Decoder's early-exit strategy computes it, through the backend's own final_norm and
// lm_head.
template <TransformerBackend Backend, ConfidenceMeasure M>
class ExitCheck {
  static constexpr bool kNeedsLogits = M::needs_logits;
  static constexpr bool kNeedsNormed = kNeedsLogits || traits::needs_normed_state<M>();

 public:
  ExitCheck(Backend& backend, M measure, std::size_t layer)
      : backend_(backend),
        measure_(std::move(measure)),
        normed_(kNeedsNormed ? backend.hidden_size() : 0),
        logits_(kNeedsLogits ? backend.vocab_size() : 0),
        layer_(layer) {}

  // state: d_t^i (hidden); previous: d_t at the previous exit point (hidden, or empty).
  float operator()(std::span<const float> state, std::span<const float> previous,
                   std::size_t step = 1) {
    ExitSignal s;
    s.layer = layer_;
    s.num_layers = backend_.num_layers();
    s.step = step;
    s.state = state;
    if constexpr (traits::needs_previous_state<M>()) s.previous_state = previous;
    if constexpr (kNeedsNormed) {
      backend_.final_norm(state, std::span<float>(normed_.data(), normed_.size()));
      s.normed_state = std::span<const float>(normed_.data(), normed_.size());
    }
    if constexpr (kNeedsLogits) {
      backend_.lm_head(s.normed_state, std::span<float>(logits_.data(), logits_.size()));
      s.logits = std::span<const float>(logits_.data(), logits_.size());
    }
    return measure_.score(s);
  }

 private:
  Backend& backend_;
  M measure_;
  AlignedBuffer<float> normed_;  // (hidden)
  AlignedBuffer<float> logits_;  // (vocab)
  std::size_t layer_;
};

struct CheckCostOptions {
  std::size_t prompt_tokens = 16;  // cached positions before the timed one (attention's length)
  std::size_t exit_layer = 0;      // 1-based layer after which the check runs; 0: the middle
};

// Google Benchmark body: each iteration runs one token through all the layers (at the same
// position: a decode step; layer_ns is its time / L) and then k checks of `measure` on the state
// after exit layer `exit_layer`, with k chosen once so that both parts take about as long; the
// parts alternate, so load on the machine hits both alike, and the layers evict what they evict
// in a decode between two exit points. The states are real: a synthetic prompt is prefilled,
// then one token runs through the layers.
template <TransformerBackend Backend, ConfidenceMeasure M>
void check_cost(::benchmark::State& state, Backend& backend, const M& measure,
                CheckCostOptions opts = {}) {
  using Clock = std::chrono::steady_clock;
  const auto secs = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  const std::size_t L = backend.num_layers(), h = backend.hidden_size();
  const std::size_t layer = opts.exit_layer ? std::min(opts.exit_layer, L) : (L + 1) / 2;
  if (opts.prompt_tokens + 1 > backend.max_context())
    throw Error("calm::bench::check_cost: prompt_tokens + 1 exceeds the backend's context");
  const std::vector<int> prompt =
      synthetic_prompts(1, opts.prompt_tokens, backend.vocab_size()).front();
  std::vector<float> embedded(h), x(h), previous(h), work(h);
  backend.truncate(0);
  backend.prefill(prompt, 0, x);
  const std::size_t pos = prompt.size();
  backend.embed(prompt.front(), embedded);  // the token at pos: any id, the cost is the same
  x = embedded;
  for (std::size_t i = 0; i < layer; ++i) {
    if (i + 1 == layer) previous = x;
    backend.run_layer(i, x, pos);
  }
  ExitCheck<Backend, M> check(backend, measure, layer);
  const auto run_layers = [&] {
    std::copy(embedded.begin(), embedded.end(), work.begin());
    for (std::size_t i = 0; i < L; ++i) backend.run_layer(i, work, pos);
    ::benchmark::DoNotOptimize(work.data());
  };
  double one_check = 1e30, all_layers = 1e30;
  for (int r = 0; r < 3; ++r) {
    auto t0 = Clock::now();
    ::benchmark::DoNotOptimize(check(x, previous));
    one_check = std::min(one_check, secs(t0, Clock::now()));
    t0 = Clock::now();
    run_layers();
    all_layers = std::min(all_layers, secs(t0, Clock::now()));
  }
  const std::size_t k = std::clamp<std::size_t>(
      static_cast<std::size_t>(all_layers / std::max(one_check, 1e-9)), 1, 4096);
  double check_s = 0.0, layer_s = 0.0;
  float sink = 0.0f;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    run_layers();
    const auto t1 = Clock::now();
    for (std::size_t i = 0; i < k; ++i) sink += check(x, previous);
    layer_s += secs(t0, t1);
    check_s += secs(t1, Clock::now());
  }
  ::benchmark::DoNotOptimize(sink);
  backend.truncate(0);
  const double n = static_cast<double>(state.iterations());
  const double check_ns = 1e9 * check_s / (n * static_cast<double>(k));
  const double layer_ns = 1e9 * layer_s / (n * static_cast<double>(L));
  state.counters["check_ns"] = check_ns;
  state.counters["layer_ns"] = layer_ns;
  state.counters["check_over_layer"] = check_ns / layer_ns;
}

// One thread, a cache just long enough for the check's position.
inline SessionOptions session_options(const CheckCostOptions& opts) {
  SessionOptions so;
  so.max_context = opts.prompt_tokens + 1;
  return so;
}

// A model loaded on first use and shared by the benchmarks registered with it.
using ModelSource = std::function<std::shared_ptr<const LlamaModel>()>;

inline ModelSource once(ModelSource load) {
  struct Cache {
    std::once_flag flag;
    std::shared_ptr<const LlamaModel> model;
  };
  auto cache = std::make_shared<Cache>();
  return [cache, load = std::move(load)] {
    std::call_once(cache->flag, [&] { cache->model = load(); });
    return cache->model;
  };
}
inline ModelSource model_source(std::shared_ptr<const LlamaModel> model) {
  return [model = std::move(model)] { return model; };
}
// A random checkpoint of `shape`, written and loaded when a benchmark first needs it. A shape of
// more than 256 MB of weights is written with 1 layer: its layer alone already exceeds the
// caches, so a check and a layer cost what they cost in the full model, which is not written.
// A smaller shape is written whole, so that its layers compete for the caches as they do when
// the whole model decodes.
inline ModelSource model_source(const ModelShape& shape) {
  return once([shape] {
    LlamaOptions opts;
    opts.max_context = 256;
    const bool whole = shape.weight_bytes_per_token() <= 256e6;
    return LlamaModel::load(random_checkpoint(whole ? shape : shape.with_layers(1)), opts);
  });
}

// Registers "<prefix>/<measure name>" for each measure (a measure with `policy_name`, a shipped
// one, or calm::bench::named(...)), on a session of the source's model with 1 thread. The
// counters are steady_clock times of the interleaved parts. (The parameters go unused when no
// measure is given.)
template <class... Measures>
void register_check_costs_of([[maybe_unused]] const std::string& prefix,
                             [[maybe_unused]] const ModelSource& source,
                             [[maybe_unused]] CheckCostOptions opts,
                             const Measures&... measures) {
  (::benchmark::RegisterBenchmark(
       (prefix + "/" + measure_name(measures)).c_str(),
       [source, opts, m = detail::measure_of(measures)](::benchmark::State& state) {
         LlamaSession session(source(), session_options(opts));
         check_cost(state, session, m, opts);
       }),
   ...);
}

// The user's measures, then calm's own at the same model: softmax response (the top-2 gap),
// hidden-state saturation, and the exit classifier of both kinds (linear and a 32-unit mlp, random
// weights of the model's hidden size: its cost does not depend on them).
template <class... Measures>
void register_check_costs(const std::string& prefix, const ModelSource& source,
                          const Measures&... measures) {
  register_check_costs_of(prefix, source, {}, measures...);
  // The classifier's hidden size is only known once the model is: build it in the benchmark.
  register_check_costs_of(prefix, source, {}, SoftmaxResponse{}, HiddenSaturation{});
  for (const auto kind : {ExitClassifierKind::linear, ExitClassifierKind::mlp}) {
    const std::string name = kind == ExitClassifierKind::linear ? "/classifier" : "/classifier-mlp";
    ::benchmark::RegisterBenchmark((prefix + name).c_str(), [source, kind](::benchmark::State& state) {
      const CheckCostOptions opts;
      LlamaSession session(source(), session_options(opts));
      check_cost(state, session, random_exit_classifier(session.hidden_size(), 7, kind), opts);
    });
  }
}
template <class... Measures>
void register_check_costs(const std::string& prefix, std::shared_ptr<const LlamaModel> model,
                          const Measures&... measures) {
  register_check_costs(prefix, model_source(std::move(model)), measures...);
}
template <class... Measures>
void register_check_costs(const std::string& prefix, const ModelShape& shape,
                          const Measures&... measures) {
  register_check_costs(prefix, model_source(shape), measures...);
}

}  // namespace calm::bench
