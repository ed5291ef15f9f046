// Softmax response (docs/design.md §3a): c = p_(1) - p_(2) of softmax(logits), or p_(1) alone
// (a variant).
//
// Exact without a probability vector: with v1 >= v2 the two largest logits and
// Z = sum_j exp(l_j - v1) (>= 1),
//   p_(1) = 1 / Z,   p_(1) - p_(2) = (1 - exp(v2 - v1)) / Z.
// One max/top-2 pass and one exp-sum pass over the logits, nothing written back: both are
// O(V) next to the O(V d) projection that made the logits. That projection is the real cost
// of this measure; the decoder pays it only at exit points, skips it when lambda_t > 1
// (max_score), and reuses it as the output logits when the token exits.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>

#include <xsimd/xsimd.hpp>

#include "calm/concepts.hpp"
#include "calm/kernels/argmax.hpp"
#include "calm/kernels/load.hpp"

namespace calm {

// The softmax of a logit vector summarised by what confidence measures ask of it.
struct LogitSummary {
  std::size_t top1 = 0;  // argmax
  std::size_t top2 = 0;  // runner-up
  float logit1 = 0.0f;
  float logit2 = 0.0f;
  float partition = 1.0f;  // Z = sum_j exp(l_j - logit1), >= 1

  float top1_probability() const noexcept { return 1.0f / partition; }
  float top2_probability() const noexcept { return std::exp(logit2 - logit1) / partition; }
  float probability_gap() const noexcept { return (1.0f - std::exp(logit2 - logit1)) / partition; }
  float log_partition() const noexcept { return logit1 + std::log(partition); }  // logsumexp
};

namespace scalar {

// Reference twin: one pass with an online partition sum (rescaled when the max moves).
// logits(n), n >= 2.
inline LogitSummary summarize_logits(std::span<const float> logits) {
  LogitSummary s{0, 1, logits[0], logits[1], 1.0f};
  if (logits[1] > logits[0]) s = {1, 0, logits[1], logits[0], 1.0f};
  s.partition = 1.0f + std::exp(s.logit2 - s.logit1);
  for (std::size_t j = 2; j < logits.size(); ++j) {
    const float l = logits[j];
    if (l > s.logit1) {
      s.partition = s.partition * std::exp(s.logit1 - l) + 1.0f;
      s.top2 = s.top1;
      s.logit2 = s.logit1;
      s.top1 = j;
      s.logit1 = l;
    } else {
      s.partition += std::exp(l - s.logit1);
      if (l > s.logit2) {
        s.top2 = j;
        s.logit2 = l;
      }
    }
  }
  return s;
}

}  // namespace scalar

// logits(n), n >= 2. SIMD top-2, then one SIMD pass of exp(l - v1) summed in registers.
template <class Arch = xsimd::default_arch>
LogitSummary summarize_logits(std::span<const float> logits) {
  using B = kernels::detail::fbatch<Arch>;
  const float* x = logits.data();
  const std::size_t n = logits.size();
  const kernels::Top2 t = kernels::top2<Arch>(x, n);
  const B vmax(t.v1);
  B acc(0.0f);
  std::size_t j = 0;
  for (; j + B::size <= n; j += B::size) acc += xsimd::exp(B::load_unaligned(x + j) - vmax);
  float z = xsimd::hadd(acc);
  for (; j < n; ++j) z += std::exp(x[j] - t.v1);
  return {t.i1, t.i2, t.v1, t.v2, z};
}

class SoftmaxResponse {
 public:
  enum class Variant : unsigned char {
    gap,         // p_(1) - p_(2) (the default, docs/design.md §3a)
    top1,        // p_(1)
  };
  static constexpr bool needs_logits = true;
  static constexpr float max_score = 1.0f;  // both variants are probabilities

  constexpr SoftmaxResponse() noexcept = default;
  constexpr explicit SoftmaxResponse(Variant v) noexcept : variant_(v) {}
  constexpr Variant variant() const noexcept { return variant_; }

  float score(const ExitSignal& s) const noexcept {
    const LogitSummary sum = summarize_logits(s.logits);
    // Z >= 1 bounds both by 1 mathematically; the min keeps max_score a true bound under
    // rounding, so skipping checks when lambda_t > 1 stays exact.
    const float c = variant_ == Variant::gap ? sum.probability_gap() : sum.top1_probability();
    // A NaN (from a non-finite state or logits) is no confidence at all: it never exits.
    return c < 1.0f ? c : (c >= 1.0f ? 1.0f : 0.0f);
  }

 private:
  Variant variant_ = Variant::gap;
};

static_assert(ConfidenceMeasure<SoftmaxResponse>);

}  // namespace calm
