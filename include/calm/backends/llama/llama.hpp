// calm::Llama — the Llama-family backend (Hugging Face LlamaForCausalLM semantics), exposing the
// per-layer API that calm::Decoder composes: embed a token, run one layer, apply the shared exit
// head at any layer, and fill a skipped layer's K/V from a given state (SPEC sections 1 and 5).
//
// Layers are 0-based in code: run_layer(i) is SPEC's layer i + 1. A Llama holds one sequence's
// KV cache and its scratch buffers, so one Llama serves one decoder at a time.
#pragma once

#include <calm/backends/llama/kv_cache.hpp>
#include <calm/backends/llama/weights.hpp>
#include <calm/core/error.hpp>
#include <calm/core/thread_pool.hpp>
#include <calm/io/hf_config.hpp>
#include <calm/io/safetensors.hpp>
#include <calm/kernels/attention.hpp>
#include <calm/kernels/elementwise.hpp>
#include <calm/kernels/rmsnorm.hpp>
#include <calm/kernels/rope.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace calm {

struct LlamaOptions {
  std::size_t threads = 1;      // threads for the big products (the caller's thread included)
  std::size_t max_context = 0;  // KV cache length; 0 = min(config max_position_embeddings, 4096)
  // Copy the weights out of the file mapping into huge-page memory (faster decode; costs the
  // copy at load and the weights' size in anonymous memory). false: use the mapping in place.
  bool copy_weights = true;
};

class Llama {
 public:
  static Llama load(const std::filesystem::path& dir, LlamaOptions opts = {}) {
    LlamaConfig config = load_llama_config(dir / "config.json");
    io::Checkpoint ckpt = io::Checkpoint::open(dir);
    return Llama(std::move(config), std::move(ckpt), opts);
  }

  Llama(LlamaConfig config, io::Checkpoint ckpt, LlamaOptions opts)
      : config_(std::move(config)),
        ckpt_(std::make_unique<io::Checkpoint>(std::move(ckpt))),
        weights_(LlamaWeights::load(*ckpt_, config_)),
        pool_(std::make_unique<ThreadPool>(std::max<std::size_t>(1, opts.threads))) {
    if (opts.copy_weights) arena_ = weights_.copy_to_arena();
    const std::size_t cfg_max = config_.max_position_embeddings;
    max_context_ = opts.max_context ? opts.max_context : std::min<std::size_t>(cfg_max, 4096);
    if (max_context_ > cfg_max)
      throw Error("max_context " + std::to_string(max_context_) +
                  " exceeds the model's max_position_embeddings " + std::to_string(cfg_max));
    const std::size_t kv_dim = config_.num_key_value_heads * config_.head_dim;
    cache_ = KvCache(config_.num_hidden_layers, max_context_, kv_dim);
    rope_cos_.resize(max_context_ * (config_.head_dim / 2));
    rope_sin_.resize(rope_cos_.size());
    for (std::size_t p = 0; p < max_context_; ++p)
      kernels::rope_table(rope_cos_.data() + p * (config_.head_dim / 2),
                          rope_sin_.data() + p * (config_.head_dim / 2), config_.head_dim, p,
                          config_.rope_theta);
    scratch_.scores.resize(config_.num_attention_heads * max_context_);
  }

  const LlamaConfig& config() const noexcept { return config_; }
  const LlamaWeights& weights() const noexcept { return weights_; }
  std::size_t num_layers() const noexcept { return config_.num_hidden_layers; }
  std::size_t hidden_size() const noexcept { return config_.hidden_size; }
  std::size_t vocab_size() const noexcept { return config_.vocab_size; }
  std::size_t max_context() const noexcept { return max_context_; }
  ThreadPool* pool() noexcept { return pool_.get(); }

  // x(hidden) := embedding row of token.
  void embed(int token, std::span<float> x) const {
    check_token(token);
    weights_.embed.row(static_cast<std::size_t>(token), x.data());
  }

  // One decoder layer on the residual stream x(hidden) of the token at position pos, in place;
  // writes the layer's K/V for pos into the cache.
  void run_layer(std::size_t layer, std::span<float> x, std::size_t pos) {
    check_pos(pos);
    const LlamaLayerWeights& w = weights_.layers[layer];
    const LlamaConfig& c = config_;
    Scratch& s = scratch_;
    s.reserve(1, c);
    float* xn = s.xn.data();
    kernels::rmsnorm(xn, x.data(), w.input_norm.data(), c.hidden_size, c.rms_norm_eps);
    float* k = cache_.k(layer, pos);
    float* v = cache_.v(layer, pos);
    apply_shared_input({{w.q, s.q.data()}, {w.k, k}, {w.v, v}}, xn, pool());
    kernels::rope(s.q.data(), c.num_attention_heads, c.head_dim, cos_at(pos), sin_at(pos));
    kernels::rope(k, c.num_key_value_heads, c.head_dim, cos_at(pos), sin_at(pos));
    kernels::attention(s.att.data(), s.q.data(), cache_.k(layer, 0), cache_.v(layer, 0), pos + 1,
                       c.num_attention_heads, c.num_key_value_heads, c.head_dim, s.scores.data(),
                       pool());
    w.o.apply(s.proj.data(), s.att.data(), pool());
    kernels::add(x.data(), s.proj.data(), c.hidden_size);
    mlp(w, x.data(), 1);
  }

  // SPEC 5: a skipped layer computes its own K/V from the exit state x: RMSNorm_layer(x) -> W_K,
  // W_V, RoPE on K at pos -> cache. Q, attention and the MLP are not run.
  void propagate_kv(std::size_t layer, std::span<const float> x, std::size_t pos) {
    check_pos(pos);
    const LlamaLayerWeights& w = weights_.layers[layer];
    const LlamaConfig& c = config_;
    Scratch& s = scratch_;
    s.reserve(1, c);
    kernels::rmsnorm(s.xn.data(), x.data(), w.input_norm.data(), c.hidden_size, c.rms_norm_eps);
    float* k = cache_.k(layer, pos);
    apply_shared_input({{w.k, k}, {w.v, cache_.v(layer, pos)}}, s.xn.data(), pool());
    kernels::rope(k, c.num_key_value_heads, c.head_dim, cos_at(pos), sin_at(pos));
  }

  // out(hidden) := RMSNorm_final(x)
  void final_norm(std::span<const float> x, std::span<float> out) const {
    kernels::rmsnorm(out.data(), x.data(), weights_.final_norm.data(), config_.hidden_size,
                     config_.rms_norm_eps);
  }
  // logits(vocab) := W_head · normed
  void lm_head(std::span<const float> normed, std::span<float> logits) {
    weights_.lm_head.apply(logits.data(), normed.data(), pool());
  }
  // The shared exit head (SPEC 1): logits(vocab) := W_head · RMSNorm_final(x), at any layer.
  void exit_head(std::span<const float> x, std::span<float> logits) {
    Scratch& s = scratch_;
    s.reserve(1, config_);
    final_norm(x, s.xn);
    lm_head(s.xn, logits);
  }

  // Runs all layers over tokens at positions pos0.. with matrix-matrix products and fills the
  // cache; x_last(hidden) := the last token's final residual state (before the final norm).
  void prefill(std::span<const int> tokens, std::size_t pos0, std::span<float> x_last) {
    const std::size_t n = tokens.size();
    if (n == 0) throw Error("prefill: empty token sequence");
    if (pos0 + n > max_context_)
      throw Error("prompt of " + std::to_string(n) + " tokens at position " + std::to_string(pos0) +
                  " exceeds the context length " + std::to_string(max_context_));
    const LlamaConfig& c = config_;
    const std::size_t h = c.hidden_size, q_dim = c.num_attention_heads * c.head_dim;
    const std::size_t kv_dim = c.num_key_value_heads * c.head_dim;
    Scratch& s = scratch_;
    s.reserve(n, c);
    std::vector<float>& x = s.x;  // (n, hidden)
    for (std::size_t t = 0; t < n; ++t) embed(tokens[t], std::span<float>(x.data() + t * h, h));
    for (std::size_t layer = 0; layer < c.num_hidden_layers; ++layer) {
      const LlamaLayerWeights& w = weights_.layers[layer];
      for (std::size_t t = 0; t < n; ++t)
        kernels::rmsnorm(s.xn.data() + t * h, x.data() + t * h, w.input_norm.data(), h,
                         c.rms_norm_eps);
      w.q.apply_batch(s.q.data(), s.xn.data(), n, pool());     // (n, q_dim)
      w.k.apply_batch(s.kb.data(), s.xn.data(), n, pool());    // (n, kv_dim)
      w.v.apply_batch(s.vb.data(), s.xn.data(), n, pool());    // (n, kv_dim)
      for (std::size_t t = 0; t < n; ++t) {
        const std::size_t pos = pos0 + t;
        float* q = s.q.data() + t * q_dim;
        float* k = cache_.k(layer, pos);
        std::copy_n(s.kb.data() + t * kv_dim, kv_dim, k);
        std::copy_n(s.vb.data() + t * kv_dim, kv_dim, cache_.v(layer, pos));
        kernels::rope(q, c.num_attention_heads, c.head_dim, cos_at(pos), sin_at(pos));
        kernels::rope(k, c.num_key_value_heads, c.head_dim, cos_at(pos), sin_at(pos));
        kernels::attention(s.att.data() + t * q_dim, q, cache_.k(layer, 0), cache_.v(layer, 0),
                           pos + 1, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                           s.scores.data(), pool());
      }
      w.o.apply_batch(s.proj.data(), s.att.data(), n, pool());  // (n, hidden)
      kernels::add(x.data(), s.proj.data(), n * h);
      mlp(w, x.data(), n);
    }
    std::copy_n(x.data() + (n - 1) * h, h, x_last.data());
  }

  // The cache entry of one layer and position: k, v (kv_heads * head_dim) each. For tests.
  std::span<const float> k_at(std::size_t layer, std::size_t pos) const {
    return {cache_.k(layer, pos), cache_.row_size()};
  }
  std::span<const float> v_at(std::size_t layer, std::size_t pos) const {
    return {cache_.v(layer, pos), cache_.row_size()};
  }

  // Bytes of weights one generated token reads with the full model (the memory-bound cost).
  std::size_t weight_bytes_per_token() const noexcept { return weights_.bytes_per_token(); }

 private:
  // Activations of up to n tokens (n = 1 while decoding).
  struct Scratch {
    std::size_t capacity = 0;
    std::vector<float> x;       // (n, hidden) residual stream (prefill)
    std::vector<float> xn;      // (n, hidden) normed input
    std::vector<float> q;       // (n, heads*head_dim)
    std::vector<float> kb, vb;  // (n, kv_heads*head_dim) (prefill)
    std::vector<float> att;     // (n, heads*head_dim) attention output
    std::vector<float> proj;    // (n, hidden) o_proj / down_proj output
    std::vector<float> gate;    // (n, intermediate)
    std::vector<float> up;      // (n, intermediate)
    std::vector<float> scores;  // (heads, max_context), sized once at construction

    void reserve(std::size_t n, const LlamaConfig& c) {
      if (n <= capacity) return;
      const std::size_t q_dim = c.num_attention_heads * c.head_dim;
      const std::size_t kv_dim = c.num_key_value_heads * c.head_dim;
      x.resize(n * c.hidden_size);
      xn.resize(n * c.hidden_size);
      q.resize(n * q_dim);
      kb.resize(n * kv_dim);
      vb.resize(n * kv_dim);
      att.resize(n * q_dim);
      proj.resize(n * c.hidden_size);
      gate.resize(n * c.intermediate_size);
      up.resize(n * c.intermediate_size);
      capacity = n;
    }
  };

  // x(n, hidden) += down(silu(gate(xn)) * up(xn)), xn = RMSNorm_post_attention(x).
  void mlp(const LlamaLayerWeights& w, float* x, std::size_t n) {
    const LlamaConfig& c = config_;
    const std::size_t h = c.hidden_size;
    Scratch& s = scratch_;
    for (std::size_t t = 0; t < n; ++t)
      kernels::rmsnorm(s.xn.data() + t * h, x + t * h, w.post_attention_norm.data(), h,
                       c.rms_norm_eps);
    if (n == 1) {
      apply_shared_input({{w.gate, s.gate.data()}, {w.up, s.up.data()}}, s.xn.data(), pool());
      kernels::swiglu(s.gate.data(), s.up.data(), c.intermediate_size);
      w.down.apply(s.proj.data(), s.gate.data(), pool());
    } else {
      w.gate.apply_batch(s.gate.data(), s.xn.data(), n, pool());
      w.up.apply_batch(s.up.data(), s.xn.data(), n, pool());
      kernels::swiglu(s.gate.data(), s.up.data(), n * c.intermediate_size);
      w.down.apply_batch(s.proj.data(), s.gate.data(), n, pool());
    }
    kernels::add(x, s.proj.data(), n * h);
  }

  const float* cos_at(std::size_t pos) const noexcept {
    return rope_cos_.data() + pos * (config_.head_dim / 2);
  }
  const float* sin_at(std::size_t pos) const noexcept {
    return rope_sin_.data() + pos * (config_.head_dim / 2);
  }
  void check_token(int token) const {
    if (token < 0 || static_cast<std::size_t>(token) >= config_.vocab_size)
      throw Error("token id " + std::to_string(token) + " is outside the vocabulary [0, " +
                  std::to_string(config_.vocab_size) + ")");
  }
  void check_pos(std::size_t pos) const {
    if (pos >= max_context_)
      throw Error("position " + std::to_string(pos) + " is past the context length " +
                  std::to_string(max_context_));
  }

  LlamaConfig config_;
  std::unique_ptr<io::Checkpoint> ckpt_;  // owns the mmaps the weights point into
  LlamaWeights weights_;
  WeightArena arena_;  // the weights' copy when LlamaOptions::copy_weights
  std::unique_ptr<ThreadPool> pool_;
  std::size_t max_context_ = 0;
  KvCache cache_;
  std::vector<float> rope_cos_, rope_sin_;  // (max_context, head_dim/2)
  Scratch scratch_;
};

}  // namespace calm
