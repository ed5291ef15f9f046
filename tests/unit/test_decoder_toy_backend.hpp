// A toy transformer backend for decoder tests: small, deterministic, with a real KV cache and
// attention, so early exit and propagation change later tokens as they do in a real model.
// Scalar code written for clarity; it shares nothing with calm::LlamaSession or calm's kernels.
#pragma once

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace toy {

class Backend {
 public:
  // hidden d, vocab V, L layers. `seed` picks the weights.
  Backend(std::size_t d = 8, std::size_t vocab = 12, std::size_t layers = 6,
          std::size_t max_context = 64, std::uint32_t seed = 1)
      : d_(d), vocab_(vocab), layers_(layers), max_context_(max_context), state_(seed) {
    embed_ = random(vocab * d, 1.0f);
    head_ = random(vocab * d, 1.0f);
    for (std::size_t i = 0; i < layers; ++i) {
      a_.push_back(random(d * d, 0.6f / std::sqrt(float(d))));
      wk_.push_back(random(d * d, 1.0f / std::sqrt(float(d))));
      wv_.push_back(random(d * d, 1.0f / std::sqrt(float(d))));
    }
    k_.assign(layers * max_context * d, 0.0f);
    filled_.assign(layers, 0);
    v_.assign(layers * max_context * d, 0.0f);
  }

  std::size_t num_layers() const noexcept { return layers_; }
  std::size_t hidden_size() const noexcept { return d_; }
  std::size_t vocab_size() const noexcept { return vocab_; }
  std::size_t max_context() const noexcept { return max_context_; }

  void embed(int token, std::span<float> x) const {
    for (std::size_t j = 0; j < d_; ++j) x[j] = embed_[std::size_t(token) * d_ + j];
  }

  // x += 0.5 attention(...) + tanh(A n), n = rmsnorm(x); writes K/V for pos first.
  void run_layer(std::size_t layer, std::span<float> x, std::size_t pos) {
    ++layer_calls;
    std::vector<float> n = rmsnorm(x);
    std::vector<float> k(d_), v(d_);
    kv(layer, n, pos, k, v);
    store(layer, pos, k, v);
    // attention with q = n over positions 0..pos
    std::vector<float> w(pos + 1);
    float m = -1e30f;
    for (std::size_t p = 0; p <= pos; ++p) {
      float s = 0;
      for (std::size_t j = 0; j < d_; ++j) s += n[j] * k_[idx(layer, p) + j];
      w[p] = s / std::sqrt(float(d_));
      m = std::max(m, w[p]);
    }
    float z = 0;
    for (float& e : w) z += (e = std::exp(e - m));
    std::vector<float> delta(d_, 0.0f);
    for (std::size_t p = 0; p <= pos; ++p)
      for (std::size_t j = 0; j < d_; ++j) delta[j] += 0.5f * w[p] / z * v_[idx(layer, p) + j];
    for (std::size_t r = 0; r < d_; ++r) {
      float s = 0;
      for (std::size_t j = 0; j < d_; ++j) s += a_[layer][r * d_ + j] * n[j];
      delta[r] += std::tanh(s);
    }
    for (std::size_t j = 0; j < d_; ++j) x[j] += delta[j];
    if (pos == nan_at_position && layer == nan_at_layer) x[0] = std::nanf("");
  }

  // The K/V that `layer` computes at pos from input state x, without touching the cache.
  void expected_kv(std::size_t layer, std::span<const float> x, std::size_t pos,
                   std::vector<float>& k, std::vector<float>& v) const {
    k.resize(d_);
    v.resize(d_);
    kv(layer, rmsnorm(x), pos, k, v);
  }

  void propagate_kv(std::size_t layer, std::span<const float> x, std::size_t pos) {
    ++propagate_calls;
    std::vector<float> k, v;
    expected_kv(layer, x, pos, k, v);
    store(layer, pos, k, v);
  }
  void final_norm(std::span<const float> x, std::span<float> out) const {
    std::vector<float> n = rmsnorm(x);
    for (std::size_t j = 0; j < d_; ++j) out[j] = n[j];
  }
  void lm_head(std::span<const float> normed, std::span<float> logits) {
    ++head_calls;
    for (std::size_t r = 0; r < vocab_; ++r) {
      float s = 0;
      for (std::size_t j = 0; j < d_; ++j) s += head_[r * d_ + j] * normed[j];
      logits[r] = s;
    }
  }
  // logits[k] = the lm_head logit of token rows[k], with lm_head's arithmetic.
  void lm_head_rows(std::span<const float> normed, std::span<const std::uint32_t> rows,
                    std::span<float> logits) {
    ++head_row_calls;
    for (std::size_t k = 0; k < rows.size(); ++k) {
      float s = 0;
      for (std::size_t j = 0; j < d_; ++j) s += head_[rows[k] * d_ + j] * normed[j];
      logits[k] = s;
    }
  }
  void exit_head(std::span<const float> x, std::span<float> logits) {
    std::vector<float> n = rmsnorm(x);
    lm_head(n, logits);
  }
  void prefill(std::span<const int> tokens, std::size_t pos0, std::span<float> x_last) {
    for (std::size_t t = 0; t < tokens.size(); ++t) {
      embed(tokens[t], x_last);
      for (std::size_t i = 0; i < layers_; ++i) run_layer(i, x_last, pos0 + t);
    }
  }
  // Positions cached in every layer; truncate(n) rewinds to the first n.
  std::size_t length() const noexcept {
    return *std::min_element(filled_.begin(), filled_.end());
  }
  void truncate(std::size_t n) {
    for (std::size_t& f : filled_) f = std::min(f, n);
  }
  std::span<const float> k_at(std::size_t layer, std::size_t pos) const {
    return {k_.data() + idx(layer, pos), d_};
  }
  std::span<const float> v_at(std::size_t layer, std::size_t pos) const {
    return {v_.data() + idx(layer, pos), d_};
  }

  std::size_t layer_calls = 0, propagate_calls = 0, head_calls = 0, head_row_calls = 0;
  // run_layer(nan_at_layer, x, nan_at_position) leaves a NaN in x (non-finite handling tests).
  std::size_t nan_at_position = static_cast<std::size_t>(-1), nan_at_layer = 0;

 private:
  std::size_t idx(std::size_t layer, std::size_t pos) const {
    return (layer * max_context_ + pos) * d_;
  }
  std::vector<float> rmsnorm(std::span<const float> x) const {
    float ss = 0;
    for (float e : x) ss += e * e;
    const float inv = 1.0f / std::sqrt(ss / float(d_) + 1e-6f);
    std::vector<float> n(d_);
    for (std::size_t j = 0; j < d_; ++j) n[j] = x[j] * inv;
    return n;
  }
  void kv(std::size_t layer, const std::vector<float>& n, std::size_t pos, std::vector<float>& k,
          std::vector<float>& v) const {
    for (std::size_t r = 0; r < d_; ++r) {
      float sk = 0, sv = 0;
      for (std::size_t j = 0; j < d_; ++j) {
        sk += wk_[layer][r * d_ + j] * n[j];
        sv += wv_[layer][r * d_ + j] * n[j];
      }
      k[r] = sk * std::cos(0.1f * float(pos) * float(r + 1));  // position dependence, like RoPE
      v[r] = sv;
    }
  }
  void store(std::size_t layer, std::size_t pos, const std::vector<float>& k,
             const std::vector<float>& v) {
    if (pos > filled_[layer] || pos >= max_context_)
      throw std::logic_error("toy backend: layer " + std::to_string(layer) + " written at " +
                             std::to_string(pos) + " past its end");
    filled_[layer] = pos + 1;
    for (std::size_t j = 0; j < d_; ++j) {
      k_[idx(layer, pos) + j] = k[j];
      v_[idx(layer, pos) + j] = v[j];
    }
  }
  std::vector<float> random(std::size_t n, float scale) {
    std::vector<float> w(n);
    for (float& e : w) {
      state_ = state_ * 1664525u + 1013904223u;
      e = scale * (float(state_ >> 8) / float(1u << 24) * 2.0f - 1.0f);
    }
    return w;
  }

  std::size_t d_, vocab_, layers_, max_context_;
  std::uint32_t state_;
  std::vector<float> embed_, head_;
  std::vector<std::vector<float>> a_, wk_, wv_;  // per layer (d, d)
  std::vector<float> k_, v_;                     // (layers, max_context, d)
  std::vector<std::size_t> filled_;              // (layers) positions written per layer
};

}  // namespace toy
