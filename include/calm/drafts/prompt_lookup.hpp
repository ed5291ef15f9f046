// Token draft sources (calm::TokenDraftSource) for SpeculativeDecoder's fourth parameter:
//   NoTokenDrafts  proposes nothing: every draft comes from the early-exit decoder (the default).
//   PromptLookup   n-gram drafts (Prompt Lookup Decoding, Saxena 2023): the tokens that followed
//                  the most recent earlier occurrence of the sequence's last m tokens in prompt +
//                  output, trying m = max_ngram first, down to min_ngram. Free to compute and
//                  often right where the output copies its context (quotes, code edits, lists).
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <string>

#include "calm/concepts.hpp"
#include "calm/core/error.hpp"

namespace calm {

struct NoTokenDrafts {
  std::span<const int> propose(std::span<const int>, std::size_t) const noexcept { return {}; }
};

struct PromptLookup {
  std::size_t max_ngram = 3;  // longest suffix looked up; 0 proposes nothing
  std::size_t min_ngram = 1;  // shortest suffix looked up before giving up

  void validate() const {
    if (max_ngram > 0 && (min_ngram == 0 || min_ngram > max_ngram))
      throw Error("PromptLookup: min_ngram must be in [1, max_ngram = " +
                  std::to_string(max_ngram) + "], got " + std::to_string(min_ngram));
  }

  // For m = max_ngram down to min_ngram: the latest i < len - m with history[i, i+m) equal to
  // the last m tokens; proposes history[i+m, i+m+k), k = min(n, what follows). The scan is
  // O(len · m) per m, far below one forward pass for any context calm holds.
  std::span<const int> propose(std::span<const int> history, std::size_t n) const noexcept {
    const std::size_t len = history.size();
    if (n == 0 || len < 2 || min_ngram == 0) return {};
    for (std::size_t m = std::min(max_ngram, len - 1); m >= min_ngram; --m) {
      const std::span<const int> suffix = history.last(m);
      for (std::size_t i = len - m; i-- > 0;) {
        if (!std::equal(suffix.begin(), suffix.end(), history.begin() + i)) continue;
        const std::size_t next = i + m;  // < len: at least one token follows
        return history.subspan(next, std::min(n, len - next));
      }
    }
    return {};
  }
};

static_assert(TokenDraftSource<NoTokenDrafts>);
static_assert(TokenDraftSource<PromptLookup>);

}  // namespace calm
