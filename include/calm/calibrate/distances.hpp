// Distances between token sequences and the calibration losses built on them (docs/design.md §6).
//
// Every similarity here is in [0, 1] and every distance is 1 - similarity, so the losses that
// Learn-then-Test consumes are bounded in [0, 1] as its p-values require.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "calm/core/error.hpp"

namespace calm::calibrate {

using TokenSequence = std::span<const std::int32_t>;

// Share of positions 0..max(|a|,|b|)-1 whose tokens differ; a position that exists in only one
// sequence counts as a difference. Two empty sequences are identical (0).
inline double token_mismatch_distance(TokenSequence a, TokenSequence b) noexcept {
  const std::size_t longest = std::max(a.size(), b.size());
  if (longest == 0) return 0.0;
  const std::size_t shared = std::min(a.size(), b.size());
  std::size_t differing = longest - shared;
  for (std::size_t i = 0; i < shared; ++i) differing += (a[i] != b[i]) ? 1 : 0;
  return static_cast<double>(differing) / static_cast<double>(longest);
}

// Length of the longest common subsequence: O(|a|·|b|) time, O(min(|a|,|b|)) memory (one DP row
// over the shorter sequence).
inline std::size_t longest_common_subsequence(TokenSequence a, TokenSequence b) {
  if (a.size() < b.size()) std::swap(a, b);  // b is the shorter one: the row runs over it
  if (b.empty()) return 0;
  std::vector<std::size_t> row(b.size() + 1, 0);  // row[j] = LCS(a[0..i), b[0..j))
  for (std::size_t i = 0; i < a.size(); ++i) {
    std::size_t diagonal = 0;  // LCS(a[0..i), b[0..j)) before row[j] is overwritten
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = (a[i] == b[j - 1]) ? diagonal + 1 : std::max(row[j], row[j - 1]);
      diagonal = above;
    }
  }
  return row[b.size()];
}

// ROUGE-L F1 (β = 1) on tokens: P = lcs/|a|, R = lcs/|b|, F1 = 2PR/(P+R) = 2·lcs/(|a|+|b|).
// The second form is used: exact for equal sequences and symmetric. Both empty: 1; one empty: 0.
inline double rouge_l_f1(TokenSequence a, TokenSequence b) {
  if (a.empty() && b.empty()) return 1.0;
  if (a.empty() || b.empty()) return 0.0;
  const double lcs = static_cast<double>(longest_common_subsequence(a, b));
  return std::clamp(2.0 * lcs / static_cast<double>(a.size() + b.size()), 0.0, 1.0);
}

// Token F1 as in SQuAD: overlap of the two bags of tokens counted with multiplicity,
// F1 = 2·overlap/(|a|+|b|). Both empty: 1; one empty: 0.
inline double token_f1(TokenSequence a, TokenSequence b) {
  if (a.empty() && b.empty()) return 1.0;
  if (a.empty() || b.empty()) return 0.0;
  std::vector<std::int32_t> sorted_a(a.begin(), a.end());
  std::vector<std::int32_t> sorted_b(b.begin(), b.end());
  std::sort(sorted_a.begin(), sorted_a.end());
  std::sort(sorted_b.begin(), sorted_b.end());
  std::size_t overlap = 0;  // size of the multiset intersection, by a merge of the sorted bags
  for (std::size_t i = 0, j = 0; i < sorted_a.size() && j < sorted_b.size();) {
    if (sorted_a[i] < sorted_b[j]) {
      ++i;
    } else if (sorted_b[j] < sorted_a[i]) {
      ++j;
    } else {
      ++overlap, ++i, ++j;
    }
  }
  return std::clamp(2.0 * static_cast<double>(overlap) / static_cast<double>(a.size() + b.size()),
                    0.0, 1.0);
}

inline double rouge_l_distance(TokenSequence a, TokenSequence b) { return 1.0 - rouge_l_f1(a, b); }
inline double token_f1_distance(TokenSequence a, TokenSequence b) { return 1.0 - token_f1(a, b); }

// Which distance D (textual consistency) or risk R (risk consistency) a calibration uses.
enum class Distance { token_mismatch, rouge_l, token_f1 };

inline constexpr std::string_view kAcceptedDistances = "token-mismatch, rouge-l, token-f1";

inline std::string_view to_string(Distance distance) noexcept {
  switch (distance) {
    case Distance::token_mismatch:
      return "token-mismatch";
    case Distance::rouge_l:
      return "rouge-l";
    case Distance::token_f1:
      return "token-f1";
  }
  return "unknown";
}

inline Distance parse_distance(std::string_view name) {
  if (name == "token-mismatch") return Distance::token_mismatch;
  if (name == "rouge-l") return Distance::rouge_l;
  if (name == "token-f1") return Distance::token_f1;
  throw Error("unknown distance '" + std::string(name) +
              "' (accepted: " + std::string(kAcceptedDistances) + ")");
}

// D(a, b) in [0, 1] for the chosen distance.
inline double distance(Distance kind, TokenSequence a, TokenSequence b) {
  switch (kind) {
    case Distance::token_mismatch:
      return token_mismatch_distance(a, b);
    case Distance::rouge_l:
      return rouge_l_distance(a, b);
    case Distance::token_f1:
      return token_f1_distance(a, b);
  }
  throw Error("distance: invalid Distance value " + std::to_string(static_cast<int>(kind)));
}

// Which global consistency the calibration certifies (docs/design.md §6).
enum class Consistency {
  textual,  // loss = D(Y_early, Y_full)
  risk,     // loss = max(0, R(Y_early, Z) - R(Y_full, Z)) against a reference Z
};

inline std::string_view to_string(Consistency consistency) noexcept {
  return consistency == Consistency::textual ? "textual" : "risk";
}

inline Consistency parse_consistency(std::string_view name) {
  if (name == "textual") return Consistency::textual;
  if (name == "risk") return Consistency::risk;
  throw Error("unknown consistency '" + std::string(name) + "' (accepted: textual, risk)");
}

// Textual consistency loss: D(Y_early, Y_full).
inline double textual_consistency_loss(Distance kind, TokenSequence early, TokenSequence full) {
  return distance(kind, early, full);
}

// Risk consistency loss: max(0, R(Y_early, Z) - R(Y_full, Z)) with R = distance to the reference
// Z. Only the extra risk of exiting early counts; doing better than the full model costs nothing.
inline double risk_consistency_loss(Distance risk, TokenSequence early, TokenSequence full,
                                    TokenSequence reference) {
  return std::max(0.0, distance(risk, early, reference) - distance(risk, full, reference));
}

}  // namespace calm::calibrate
