// Sampling from the logits of whichever layer a token exits at. Runtime configuration, not a
// template parameter: greedy (temperature 0), or temperature / top-k / top-p with a seed.
#pragma once

#include <calm/core/error.hpp>
#include <calm/kernels/argmax.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace calm {

struct SamplingOptions {
  float temperature = 0.0f;  // 0 = greedy (argmax)
  std::size_t top_k = 0;     // 0 = no top-k cut
  float top_p = 1.0f;        // 1 = no nucleus cut
  std::uint64_t seed = 0;

  void validate() const {
    if (!(temperature >= 0.0f) || !std::isfinite(temperature))
      throw Error("sampling: temperature must be a finite number >= 0, got " +
                  std::to_string(temperature));
    if (!(top_p > 0.0f && top_p <= 1.0f))
      throw Error("sampling: top_p must be in (0, 1], got " + std::to_string(top_p));
  }
};

namespace detail {

struct WeightedToken {
  double weight;  // unnormalised probability
  int id;
};

// The tokens SamplingOptions keep (temperature > 0, then top-k, then top-p) with their
// unnormalised probabilities exp((logit - max logit) / T), most likely first (ties: lower id
// first); returns their sum. Numerics: the candidates are ordered by the raw logits (dividing by
// T > 0 keeps the order) and only the difference to the largest, <= 0, is divided by T, in double.
// Dividing the logits themselves overflows float below T ~ 1e-37 (inf - inf = NaN weights), which
// sampled the least likely token; this way the weights tend to greedy's as T -> 0 (the largest
// logit has weight 1, the others underflow to 0).
inline double kept_tokens(std::span<const float> logits, const SamplingOptions& opts,
                          std::vector<WeightedToken>& out) {
  out.clear();
  for (std::size_t i = 0; i < logits.size(); ++i)
    out.push_back({static_cast<double>(logits[i]), static_cast<int>(i)});
  const auto higher = [](const WeightedToken& a, const WeightedToken& b) {
    return a.weight > b.weight || (a.weight == b.weight && a.id < b.id);
  };
  std::size_t keep = out.size();
  if (opts.top_k > 0 && opts.top_k < keep) keep = opts.top_k;
  std::partial_sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(keep), out.end(), higher);
  out.resize(keep);
  const double max_logit = out[0].weight;
  double total = 0.0;
  for (WeightedToken& t : out) total += (t.weight = std::exp((t.weight - max_logit) / opts.temperature));
  if (opts.top_p < 1.0f) {  // smallest prefix whose probability mass reaches top_p
    double mass = 0.0;
    std::size_t i = 0;
    while (i < keep) {
      mass += out[i++].weight;
      if (mass >= opts.top_p * total) break;
    }
    out.resize(i);
    total = mass;
  }
  return total;
}

}  // namespace detail

class Sampler {
 public:
  explicit Sampler(SamplingOptions opts = {}) : opts_(opts), rng_(opts.seed) { opts_.validate(); }

  const SamplingOptions& options() const noexcept { return opts_; }
  bool greedy() const noexcept { return opts_.temperature == 0.0f; }

  // Picks the next token from logits(vocab). Deterministic for a given seed and call sequence:
  // the uniform draw is built from the raw 64-bit engine output, not from a std distribution
  // whose algorithm differs between standard libraries.
  int sample(std::span<const float> logits) {
    if (logits.empty()) throw Error("sampling: empty logits");
    if (greedy()) return static_cast<int>(kernels::argmax(logits.data(), logits.size()));
    const double total = detail::kept_tokens(logits, opts_, candidates_);
    const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * total;
    double acc = 0.0;
    for (const detail::WeightedToken& c : candidates_) {
      acc += c.weight;
      if (u < acc) return c.id;
    }
    return candidates_.back().id;  // u rounded up to total
  }

 private:
  SamplingOptions opts_;
  std::mt19937_64 rng_;
  std::vector<detail::WeightedToken> candidates_;
};

}  // namespace calm
