// Speculation length that adapts to the acceptance seen in earlier rounds (DEL: "Dynamic Exit
// Layer" for self-speculative decoding, 2025; docs/design.md §9, "Adaptive γ"):
//   AcceptanceTracker  α_k, the probability that draft k is accepted given drafts 1..k-1 were,
//                      as an exponential moving average over the rounds that drafted k;
//   SpeculationCost    what a drafted token and a verification pass over n rows cost, in decode
//                      steps (one token through all layers and the head = 1);
//   choose_gamma       the γ that maximises expected tokens per unit of cost.
// SpeculativeDecoder (SpeculativeOptions::adaptive_gamma) picks each round's γ before drafting,
// from earlier rounds only: γ decides how much is proposed, never what is accepted, so the output
// stays the full model's (greedy: bit for bit; sampling: in distribution).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "calm/core/error.hpp"

namespace calm {

// Costs in decode steps. Verification of n rows: 1 + verify_row · (n − 1). A drafted token:
// draft_token when > 0, else from its exit layer E of L: E/L · (1 − head) + head (the layers it
// ran, then the head; the K/V of the skipped layers and the exit checks are left out).
struct SpeculationCost {
  // Each row beyond the first. Measured (bench/README.md, "Adaptive γ" and BM_VerifyCost*):
  // 0.06-0.18 per row (n = 2..8) for the 49 MB sibling and 0.09-0.36 for the 7 MB bundled model
  // (Intel Xeon, AVX-512, L3 300 MiB: both in cache), ~0.2 at TinyLlama-1.1B's memory-bound shape
  // (Zen 4). Too low makes γ too long; too high, too short.
  double verify_row = 0.25;
  double draft_token = 0.0;  // > 0: every early-exit draft costs this (e.g. measured)
  // The head's share of a step; < 0: from the backend when it tells (LlamaSession: the bytes of
  // the head over those of the head and all layers), else 0.1. With a sub-vocabulary draft head,
  // a draft pays head · V'/V.
  double head = -1.0;

  void validate() const {
    if (!(verify_row >= 0.0 && verify_row <= 16.0))
      throw Error("SpeculationCost: verify_row must be in [0, 16] (decode steps per verified "
                  "row), got " + std::to_string(verify_row));
    if (!(draft_token >= 0.0 && draft_token <= 16.0))
      throw Error("SpeculationCost: draft_token must be in [0, 16] (decode steps; 0: from the "
                  "exit layer), got " + std::to_string(draft_token));
    if (!(head < 0.0 || head <= 1.0) || std::isnan(head))
      throw Error("SpeculationCost: head must be in [0, 1] (its share of a decode step; < 0: "
                  "from the backend), got " + std::to_string(head));
  }
};

// Expected tokens of a round that drafts γ = alpha.size() tokens or fewer:
//   T(γ) = 1 + Σ_{i=1..γ} Π_{k=1..i} α_k   (the accepted drafts, then the full model's token).
// Picks γ in [1, alpha.size()] maximising T(γ) / C(γ), C(γ) = γ·draft_cost + 1 + verify_row·γ;
// the smallest such γ on ties. γ ≥ 1 always: a round without drafts would observe nothing, and
// the estimates could never recover.
inline std::size_t choose_gamma(std::span<const double> alpha, double draft_cost,
                                double verify_row) noexcept {
  std::size_t best = 1;
  double best_rate = -1.0, tokens = 1.0, reach = 1.0;
  for (std::size_t g = 1; g <= alpha.size(); ++g) {
    reach *= alpha[g - 1];  // P(drafts 1..g all accepted)
    tokens += reach;
    const double gd = static_cast<double>(g);
    const double rate = tokens / (gd * draft_cost + 1.0 + verify_row * gd);
    if (rate > best_rate) best_rate = rate, best = g;
  }
  return best;
}

// α_1..α_max, each an exponential moving average with weight `weight` on the newest round that
// drafted that position (drafts after a rejection are not observed: α_k is conditional on
// drafts < k accepted). Positions past a round's γ are not observed either; when all γ drafts
// were accepted, they move toward α_γ by the same weight, so that γ can grow.
class AcceptanceTracker {
 public:
  AcceptanceTracker() = default;
  AcceptanceTracker(std::size_t max_draft, double weight, double prior)
      : alpha_(max_draft, prior), weight_(weight), prior_(prior) {}

  std::span<const double> acceptance() const noexcept { return alpha_; }
  void reset() { std::fill(alpha_.begin(), alpha_.end(), prior_); }

  // A round drafted `drafted` tokens and the first `accepted` were accepted; `capped`: it stopped
  // at the γ asked for (not because the source had no more).
  void update(std::size_t drafted, std::size_t accepted, bool capped) noexcept {
    drafted = std::min(drafted, alpha_.size());
    accepted = std::min(accepted, drafted);
    for (std::size_t k = 0; k < accepted; ++k) move(k, 1.0);
    if (accepted < drafted) {
      move(accepted, 0.0);
    } else if (capped && drafted > 0) {
      const double last = alpha_[drafted - 1];
      for (std::size_t k = drafted; k < alpha_.size(); ++k) move(k, last);
    }
  }

 private:
  void move(std::size_t k, double observed) noexcept {
    alpha_[k] += weight_ * (observed - alpha_[k]);
  }

  std::vector<double> alpha_;  // (max_draft) α_k for k = 1..max_draft
  double weight_ = 0.125, prior_ = 0.8;
};

}  // namespace calm
