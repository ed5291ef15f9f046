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
    candidates_.clear();
    for (std::size_t i = 0; i < logits.size(); ++i)
      candidates_.push_back({logits[i] / opts_.temperature, static_cast<int>(i)});
    const auto higher = [](const Candidate& a, const Candidate& b) {
      return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    };
    std::size_t keep = candidates_.size();
    if (opts_.top_k > 0 && opts_.top_k < keep) {
      std::nth_element(candidates_.begin(), candidates_.begin() + opts_.top_k - 1,
                       candidates_.end(), higher);
      keep = opts_.top_k;
    }
    std::sort(candidates_.begin(), candidates_.begin() + keep, higher);
    const float max_logit = candidates_[0].logit;
    double total = 0.0;
    for (std::size_t i = 0; i < keep; ++i) {
      candidates_[i].logit = std::exp(candidates_[i].logit - max_logit);  // now unnormalised p
      total += candidates_[i].logit;
    }
    if (opts_.top_p < 1.0f) {  // smallest prefix whose probability mass reaches top_p
      double mass = 0.0;
      std::size_t i = 0;
      while (i < keep) {
        mass += candidates_[i++].logit;
        if (mass >= opts_.top_p * total) break;
      }
      keep = i;
      total = mass;
    }
    const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * total;
    double acc = 0.0;
    for (std::size_t i = 0; i < keep; ++i) {
      acc += candidates_[i].logit;
      if (u < acc) return candidates_[i].id;
    }
    return candidates_[keep - 1].id;  // u rounded up to total
  }

 private:
  struct Candidate {
    float logit;
    int id;
  };
  SamplingOptions opts_;
  std::mt19937_64 rng_;
  std::vector<Candidate> candidates_;
};

}  // namespace calm
