// Softmax response over a candidate set (docs/design.md §3d): the exit check that reads k rows of
// the vocabulary head instead of all V.
//
// A token's first check sees the whole vocabulary's logits and scores them as SoftmaxResponse
// does; the decoder keeps that check's k most likely tokens as the token's candidates. Each later
// check of the token projects only onto the candidates and scores the softmax restricted to them:
//   c = (1 - exp(v2 - v1)) / Z_C,   Z_C = sum_{j in C} exp(l_j - v1)   (or 1 / Z_C, the top1 variant)
// with v1 >= v2 the two largest candidate logits. Z_C <= Z, so the restricted score is never below
// the full one when the top two are candidates: this is a different measure, not an
// approximation with a bound, and calibration certifies it as it is (the decoder and calm-calibrate
// run the same code). A token that exits at a narrowed check gets its output logits from one full
// head at the exit state, so sampling and the logits a caller reads are the model's own.
//
// Cost per token: two full projections (the first check, the output) and k x d per later check,
// against one full projection per check for SoftmaxResponse.
#pragma once

#include <cstddef>
#include <string>

#include "calm/concepts.hpp"
#include "calm/confidence/softmax_response.hpp"
#include "calm/core/error.hpp"

namespace calm {

class CandidateSoftmax {
 public:
  using Variant = SoftmaxResponse::Variant;
  static constexpr bool needs_logits = true;
  static constexpr float max_score = SoftmaxResponse::max_score;
  static constexpr std::size_t kDefaultCandidates = 32;

  CandidateSoftmax() noexcept = default;
  // candidates: k >= 2 (the gap needs a runner-up).
  explicit CandidateSoftmax(std::size_t candidates, Variant v = Variant::gap)
      : candidates_(candidates), measure_(v) {
    if (candidates < 2)
      throw Error("CandidateSoftmax: the candidate set needs at least 2 tokens, got " +
                  std::to_string(candidates));
  }

  // k: how many of the first check's most likely tokens the later checks score (the decoder
  // uses min(k, V)).
  std::size_t candidates() const noexcept { return candidates_; }
  Variant variant() const noexcept { return measure_.variant(); }

  // The softmax response of whatever logits the check carries: the whole vocabulary's at a
  // token's first check, the candidates' after it.
  float score(const ExitSignal& s) const noexcept { return measure_.score(s); }

 private:
  std::size_t candidates_ = kDefaultCandidates;
  SoftmaxResponse measure_;
};

static_assert(ConfidenceMeasure<CandidateSoftmax>);
static_assert(traits::narrows_logits<CandidateSoftmax>());

}  // namespace calm
