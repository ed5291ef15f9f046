// A draft head over a sub-vocabulary (FR-Spec, Zhao et al. 2025): the LM head's rows for V' of
// the V tokens -- the most frequent ones in a reference text (calm::TokenFrequencies::top) --
// copied into a compact matrix of their own in the head's format, so that a drafted token reads
// V'/V of the head. At Llama 3's 128,256-token vocabulary the head is a fifth of a 1B model; a
// draft over 32k tokens pays a quarter of that.
//
// Drafting only: SpeculativeDecoder verifies with the full head, so the output is the full
// model's whatever V' is; a token outside V' cannot be drafted, so it costs an acceptance, never
// correctness. Each logit is bitwise the full head's for that token (the same row bytes through
// the same kernel), so the greedy draft is the argmax of the full logits restricted to V'.
#pragma once

#include <calm/core/aligned.hpp>
#include <calm/core/error.hpp>
#include <calm/core/thread_pool.hpp>
#include <calm/formats/formats.hpp>
#include <calm/kernels/argmax.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace calm {

class SubVocabularyHead {
 public:
  // head: the model's LM head (vocab, hidden); tokens: the sub-vocabulary, ids ascending, no
  // repeats (TokenFrequencies::top gives them so).
  SubVocabularyHead(const Linear& head, std::vector<std::uint32_t> tokens)
      : tokens_(std::move(tokens)) {
    if (tokens_.empty()) throw Error("SubVocabularyHead: the sub-vocabulary is empty");
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      if (tokens_[i] >= head.rows)
        throw Error("SubVocabularyHead: token " + std::to_string(tokens_[i]) +
                    " is outside the head's vocabulary (" + std::to_string(head.rows) + " rows)");
      if (i > 0 && tokens_[i] <= tokens_[i - 1])
        throw Error("SubVocabularyHead: the tokens must be ascending without repeats (token " +
                    std::to_string(tokens_[i]) + " follows " + std::to_string(tokens_[i - 1]) +
                    ")");
    }
    formats::visit(head.format, [&](auto f) {
      using F = decltype(f);
      const std::size_t n = tokens_.size(), data_row = F::data_bytes(head.cols),
                        scale_row = F::scale_bytes(head.cols);
      static_assert(F::alignment <= kCacheLine, "AlignedBuffer aligns to a cache line");
      data_ = AlignedBuffer<std::byte>(n * data_row);
      if (scale_row > 0) scales_ = AlignedBuffer<float>(n * scale_row / sizeof(float));
      for (std::size_t k = 0; k < n; ++k) {
        std::memcpy(data_.data() + k * data_row, head.data + tokens_[k] * data_row, data_row);
        if (scale_row > 0)
          std::memcpy(scales_.data() + k * scale_row / sizeof(float),
                      head.scales + tokens_[k] * scale_row / sizeof(float), scale_row);
      }
    });
    matrix_.format = head.format;
    matrix_.rows = tokens_.size();
    matrix_.cols = head.cols;
    matrix_.data = data_.data();
    matrix_.scales = scales_.size() > 0 ? scales_.data() : nullptr;
  }

  SubVocabularyHead(const SubVocabularyHead&) = delete;
  SubVocabularyHead& operator=(const SubVocabularyHead&) = delete;

  std::size_t size() const noexcept { return tokens_.size(); }  // V'
  std::span<const std::uint32_t> tokens() const noexcept { return tokens_; }
  const Linear& matrix() const noexcept { return matrix_; }
  std::size_t bytes() const { return matrix_.bytes(); }

  // logits(k) := row tokens()[k] of the head · normed (normed: the final norm's output).
  void apply(std::span<const float> normed, std::span<float> logits, ThreadPool* pool) const {
    if (normed.size() != matrix_.cols || logits.size() != tokens_.size())
      throw Error("SubVocabularyHead::apply: " + std::to_string(normed.size()) + " inputs and " +
                  std::to_string(logits.size()) + " logits for a head of " +
                  std::to_string(tokens_.size()) + " x " + std::to_string(matrix_.cols));
    matrix_.apply(logits.data(), normed.data(), pool);
  }

  // The token whose logit is largest (the lowest id among equals, as the full argmax).
  int argmax(std::span<const float> logits) const noexcept {
    return static_cast<int>(tokens_[kernels::argmax(logits.data(), logits.size())]);
  }

  // full(tokens()[k]) := logits(k), every other entry -inf: the sub-vocabulary's logits where a
  // sampler expects the whole vocabulary's (it then renormalises over V').
  void scatter(std::span<const float> logits, std::span<float> full) const noexcept {
    std::fill(full.begin(), full.end(), -std::numeric_limits<float>::infinity());
    for (std::size_t k = 0; k < tokens_.size(); ++k) full[tokens_[k]] = logits[k];
  }

 private:
  std::vector<std::uint32_t> tokens_;
  AlignedBuffer<std::byte> data_;
  AlignedBuffer<float> scales_;
  Linear matrix_;
};

}  // namespace calm
