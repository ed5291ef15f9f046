// calm::LlamaSession — one sequence on a shared LlamaModel: its KV cache, its scratch buffers
// and the thread pool its products run on. This is the backend calm::Decoder composes: embed a
// token, run one layer, apply the shared exit head at any layer, fill a skipped layer's K/V from
// a given state (docs/design.md §1, §5), and run layers over many tokens at once.
//
// Layers are 0-based in code: run_layer(i) is the paper's layer i + 1.
//
// The session tracks how far each layer's cache is filled. Writing layer l at position p needs
// p <= filled(l) (the entries it attends to exist) and makes p the last entry of that layer:
// whatever was cached after p is dropped, since it attended to what p held before. length() is
// the number of positions cached in every layer; truncate(n) rewinds to n.
//
// A session is movable, not copyable, and serves one thread at a time. Sessions on different
// threads may share one model; sharing one ThreadPool between them serialises their products.
#pragma once

#include <calm/backends/llama/kv_cache.hpp>
#include <calm/backends/llama/model.hpp>
#include <calm/concepts.hpp>
#include <calm/core/error.hpp>
#include <calm/core/thread_pool.hpp>
#include <calm/kernels/attention.hpp>
#include <calm/kernels/elementwise.hpp>
#include <calm/kernels/rmsnorm.hpp>
#include <calm/kernels/rope.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace calm {

struct SessionOptions {
  std::size_t max_context = 0;         // KV cache length; 0 = the model's max_context()
  std::shared_ptr<ThreadPool> pool;    // threads for the big products; null = the caller only
};

class LlamaSession {
 public:
  explicit LlamaSession(std::shared_ptr<const LlamaModel> model, SessionOptions opts = {})
      : model_(std::move(model)), pool_(std::move(opts.pool)) {
    if (!model_) throw Error("LlamaSession: the model is null");
    const std::size_t model_max = model_->max_context();
    max_context_ = opts.max_context ? opts.max_context : model_max;
    if (max_context_ > model_max)
      throw Error("LlamaSession: max_context " + std::to_string(max_context_) +
                  " exceeds the model's context of " + std::to_string(model_max) +
                  " (LlamaOptions::max_context)");
    {
      // The KV cache, sized before it is allocated: (layers, max_context, 2 * kv_dim) floats.
      std::size_t floats = 0;
      if (__builtin_mul_overflow(model_->num_layers() * 2 * model_->kv_dim(), max_context_,
                                 &floats) ||
          floats > PTRDIFF_MAX / sizeof(float))
        throw Error("LlamaSession: a KV cache of max_context " + std::to_string(max_context_) +
                    " positions for " + std::to_string(model_->num_layers()) +
                    " layers does not fit in the address space (SessionOptions::max_context)");
    }
    cache_ = KvCache(model_->num_layers(), max_context_, model_->kv_dim());
    filled_.assign(model_->num_layers(), 0);
    scratch_.scores.resize(model_->config().num_attention_heads * max_context_);
  }
  // One model, one session: loads dir's model and runs it on `threads` threads (a pool of its
  // own; pass SessionOptions::pool to share one). For several sessions, load the model once.
  static LlamaSession load(const std::filesystem::path& dir, std::size_t threads = 1,
                           LlamaOptions opts = {}) {
    if (threads == 0) throw Error("LlamaSession::load: threads must be at least 1 (got 0)");
    SessionOptions so;
    if (threads > 1) so.pool = std::make_shared<ThreadPool>(threads);
    return LlamaSession(LlamaModel::load(dir, opts), std::move(so));
  }

  LlamaSession(LlamaSession&&) noexcept = default;
  LlamaSession& operator=(LlamaSession&&) noexcept = default;
  LlamaSession(const LlamaSession&) = delete;
  LlamaSession& operator=(const LlamaSession&) = delete;

  const LlamaModel& model() const noexcept { return *model_; }
  const std::shared_ptr<const LlamaModel>& shared_model() const noexcept { return model_; }
  const LlamaConfig& config() const noexcept { return model_->config(); }
  std::size_t num_layers() const noexcept { return model_->num_layers(); }
  std::size_t hidden_size() const noexcept { return model_->hidden_size(); }
  std::size_t vocab_size() const noexcept { return model_->vocab_size(); }
  std::size_t max_context() const noexcept { return max_context_; }
  ThreadPool* pool() const noexcept { return pool_.get(); }
  const std::shared_ptr<ThreadPool>& shared_pool() const noexcept { return pool_; }

  // --- the sequence ------------------------------------------------------------------------

  // Positions cached in every layer.
  std::size_t length() const noexcept {
    return filled_.empty() ? 0 : *std::min_element(filled_.begin(), filled_.end());
  }
  // Positions cached in one layer (a token in flight may have reached some layers only).
  std::size_t filled(std::size_t layer) const { return filled_.at(layer); }
  // Rewinds the sequence to its first n positions (n <= length()).
  void truncate(std::size_t n) {
    if (n > length())
      throw Error("LlamaSession::truncate: cannot extend the sequence from " +
                  std::to_string(length()) + " to " + std::to_string(n) + " positions");
    for (std::size_t& f : filled_) f = std::min(f, n);
  }
  // Appends tokens at length(): all layers, matrix-matrix products; x_last(hidden) := the last
  // token's final residual state (before the final norm).
  void append(std::span<const int> tokens, std::span<float> x_last) {
    prefill(tokens, length(), x_last);
  }

  // --- one token, one layer ----------------------------------------------------------------

  // x(hidden) := embedding row of token.
  void embed(int token, std::span<float> x) const { model_->embed(token, x.data()); }

  // One decoder layer on the residual stream x(hidden) of the token at position pos, in place;
  // writes the layer's K/V for pos into the cache.
  void run_layer(std::size_t layer, std::span<float> x, std::size_t pos) {
    begin_write(layer, pos, 1);
    layer_rows(layer, x.data(), 1, [&](std::size_t) { return Row{&cache_, pos}; });
  }

  // docs/design.md §5: a skipped layer computes its own K/V from the exit state x:
  // RMSNorm_layer(x) -> W_K, W_V, RoPE on K at pos -> cache. Q, attention and the MLP are not run.
  void propagate_kv(std::size_t layer, std::span<const float> x, std::size_t pos) {
    begin_write(layer, pos, 1);
    const LlamaLayerWeights& w = model_->weights().layers[layer];
    const LlamaConfig& c = config();
    scratch_.reserve(1, c);
    kernels::rmsnorm(scratch_.xn.data(), x.data(), w.input_norm.data(), c.hidden_size,
                     c.rms_norm_eps);
    float* k = cache_.k(layer, pos);
    apply_shared_input({{w.k, k}, {w.v, cache_.v(layer, pos)}}, scratch_.xn.data(), pool());
    kernels::rope(k, c.num_key_value_heads, c.head_dim, model_->cos_at(pos), model_->sin_at(pos));
  }

  // out(hidden) := RMSNorm_final(x)
  void final_norm(std::span<const float> x, std::span<float> out) const {
    kernels::rmsnorm(out.data(), x.data(), model_->weights().final_norm.data(), hidden_size(),
                     config().rms_norm_eps);
  }
  // logits(vocab) := W_head · normed
  void lm_head(std::span<const float> normed, std::span<float> logits) {
    model_->weights().lm_head.apply(logits.data(), normed.data(), pool());
  }
  // logits(k) := rows rows[k] of W_head · normed, each bitwise the lm_head logit of that token:
  // the exit check over a candidate set (docs/design.md §3d). One thread (k is small).
  void lm_head_rows(std::span<const float> normed, std::span<const std::uint32_t> rows,
                    std::span<float> logits) const {
    model_->weights().lm_head.apply_gather(logits.data(), normed.data(), rows);
  }
  // The shared exit head (docs/design.md §1): logits(vocab) := W_head · RMSNorm_final(x).
  void exit_head(std::span<const float> x, std::span<float> logits) {
    scratch_.reserve(1, config());
    final_norm(x, std::span<float>(scratch_.xn.data(), hidden_size()));
    lm_head(std::span<const float>(scratch_.xn.data(), hidden_size()), logits);
  }

  // --- many tokens -------------------------------------------------------------------------

  // Layers [first, last) over the states x(n, hidden) of n tokens at positions pos0..pos0+n-1,
  // in place, causal among themselves (token t attends to positions <= pos0 + t); pos0 <=
  // filled(layer) for each. The products run over the n tokens at once (see Products).
  void run_layers(std::size_t first, std::size_t last, std::span<float> x, std::size_t pos0,
                  Products products = Products::matmul) {
    const std::size_t h = hidden_size();
    if (x.size() == 0 || x.size() % h != 0)
      throw Error("LlamaSession::run_layers: " + std::to_string(x.size()) +
                  " floats are not a whole number of states of " + std::to_string(h));
    check_layers(first, last);
    const std::size_t n = x.size() / h;
    for (std::size_t layer = first; layer < last; ++layer) {
      begin_write(layer, pos0, n);
      layer_rows(layer, x.data(), n, [&](std::size_t t) { return Row{&cache_, pos0 + t}; },
                 products);
    }
  }

  // logits(n, vocab) := W_head · RMSNorm_final(x_t) for the n states x(n, hidden); each row
  // bitwise what exit_head gives for it alone.
  void exit_heads(std::span<const float> x, std::span<float> logits) {
    const std::size_t h = hidden_size(), n = x.size() / h;
    if (x.size() % h != 0 || logits.size() != n * vocab_size())
      throw Error("LlamaSession::exit_heads: " + std::to_string(x.size()) + " floats of states " +
                  "and " + std::to_string(logits.size()) + " of logits do not match");
    if (n == 0) return;
    scratch_.reserve(n, config());
    for (std::size_t t = 0; t < n; ++t)
      final_norm(x.subspan(t * h, h), std::span<float>(scratch_.xn.data() + t * h, h));
    if (n == 1)
      lm_head(std::span<const float>(scratch_.xn.data(), h), logits);
    else
      model_->weights().lm_head.apply_rows(logits.data(), scratch_.xn.data(), n, pool());
  }

  // Layers [first, last) for n sessions at one position each, the next of each session
  // (filled(layer) of that session): x(n, hidden), row i is sessions[i]'s token. All sessions
  // share one model; the products run once over the n rows, on sessions[0]'s pool.
  static void run_layers(std::span<LlamaSession* const> sessions, std::size_t first,
                         std::size_t last, std::span<float> x,
                         Products products = Products::matmul) {
    const std::size_t n = sessions.size();
    if (n == 0) throw Error("LlamaSession::run_layers: no sessions");
    LlamaSession& lead = *sessions[0];
    const std::size_t h = lead.hidden_size();
    if (x.size() != n * h)
      throw Error("LlamaSession::run_layers: expected " + std::to_string(n) + " states of " +
                  std::to_string(h) + " floats, got " + std::to_string(x.size()) + " floats");
    lead.check_layers(first, last);
    std::size_t longest = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (sessions[i] == nullptr || sessions[i]->model_ != lead.model_)
        throw Error("LlamaSession::run_layers: session " + std::to_string(i) +
                    " is null or runs another model than session 0");
      for (std::size_t j = 0; j < i; ++j)
        if (sessions[j] == sessions[i])
          throw Error("LlamaSession::run_layers: session " + std::to_string(i) +
                      " is listed twice");
      longest = std::max(longest, sessions[i]->max_context_);
    }
    lead.scratch_.reserve_scores(lead.config().num_attention_heads * longest);
    std::vector<std::size_t> pos(n);  // each session's position in this layer
    for (std::size_t layer = first; layer < last; ++layer) {
      for (std::size_t i = 0; i < n; ++i) {
        pos[i] = sessions[i]->filled_[layer];
        sessions[i]->begin_write(layer, pos[i], 1);
      }
      lead.layer_rows(layer, x.data(), n,
                      [&](std::size_t t) { return Row{&sessions[t]->cache_, pos[t]}; }, products);
    }
  }

  // Runs all layers over tokens at positions pos0.. (pos0 <= length()) with matrix-matrix
  // products and fills the cache; x_last(hidden) := the last token's final residual state.
  void prefill(std::span<const int> tokens, std::size_t pos0, std::span<float> x_last) {
    const std::size_t n = tokens.size();
    if (n == 0) throw Error("prefill: empty token sequence");
    if (pos0 + n > max_context_)
      throw Error("prompt of " + std::to_string(n) + " tokens at position " + std::to_string(pos0) +
                  " exceeds the context length " + std::to_string(max_context_));
    if (pos0 > length())
      throw Error("prefill at position " + std::to_string(pos0) + " would leave a gap: the " +
                  "session holds " + std::to_string(length()) + " positions");
    const std::size_t h = hidden_size();
    scratch_.reserve(n, config());
    std::vector<float>& x = scratch_.x;  // (n, hidden)
    for (std::size_t t = 0; t < n; ++t) embed(tokens[t], std::span<float>(x.data() + t * h, h));
    run_layers(0, num_layers(), std::span<float>(x.data(), n * h), pos0);
    std::copy_n(x.data() + (n - 1) * h, h, x_last.data());
  }

  // The cache entry of one layer and position: k, v (kv_heads * head_dim) each.
  std::span<const float> k_at(std::size_t layer, std::size_t pos) const {
    check_cached(layer, pos);
    return {cache_.k(layer, pos), cache_.row_size()};
  }
  std::span<const float> v_at(std::size_t layer, std::size_t pos) const {
    check_cached(layer, pos);
    return {cache_.v(layer, pos), cache_.row_size()};
  }

  // Bytes of weights one generated token reads with the full model (the memory-bound cost).
  std::size_t weight_bytes_per_token() const noexcept { return model_->weight_bytes_per_token(); }

 private:
  // Where one row of a batch writes its K/V and which positions it attends to.
  struct Row {
    KvCache* cache;
    std::size_t pos;
  };

  // Activations of up to n tokens (n = 1 while decoding).
  struct Scratch {
    std::size_t capacity = 0;
    std::vector<float> x;       // (n, hidden) residual stream (prefill)
    std::vector<float> xn;      // (n, hidden) normed input
    std::vector<float> q;       // (n, heads*head_dim)
    std::vector<float> kb, vb;  // (n, kv_heads*head_dim) (batches)
    std::vector<float> att;     // (n, heads*head_dim) attention output
    std::vector<float> proj;    // (n, hidden) o_proj / down_proj output
    std::vector<float> gate;    // (n, intermediate)
    std::vector<float> up;      // (n, intermediate)
    std::vector<float> scores;  // (heads, max_context), sized at construction

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
    void reserve_scores(std::size_t size) {
      if (scores.size() < size) scores.resize(size);
    }
  };

  // One layer over rows x(n, hidden), in place; row t writes K/V to and attends within
  // row_of(t) = {cache, pos} (positions <= pos of that cache). n = 1 uses the fused matvec,
  // n > 1 the matmul or the per-token-exact matvec_batch (products).
  template <class RowOf>
  void layer_rows(std::size_t layer, float* x, std::size_t n, RowOf&& row_of,
                  Products products = Products::matmul) {
    const LlamaLayerWeights& w = model_->weights().layers[layer];
    const LlamaConfig& c = config();
    const std::size_t h = c.hidden_size, q_dim = model_->q_dim(), kv_dim = model_->kv_dim();
    Scratch& s = scratch_;
    s.reserve(n, c);
    for (std::size_t t = 0; t < n; ++t)
      kernels::rmsnorm(s.xn.data() + t * h, x + t * h, w.input_norm.data(), h, c.rms_norm_eps);
    if (n == 1) {
      const Row r = row_of(0);
      apply_shared_input({{w.q, s.q.data()}, {w.k, r.cache->k(layer, r.pos)},
                          {w.v, r.cache->v(layer, r.pos)}},
                         s.xn.data(), pool());
    } else if (products == Products::matvec) {
      w.q.apply_rows(s.q.data(), s.xn.data(), n, pool());   // (n, q_dim)
      w.k.apply_rows(s.kb.data(), s.xn.data(), n, pool());  // (n, kv_dim)
      w.v.apply_rows(s.vb.data(), s.xn.data(), n, pool());  // (n, kv_dim)
    } else {
      w.q.apply_batch(s.q.data(), s.xn.data(), n, pool());   // (n, q_dim)
      w.k.apply_batch(s.kb.data(), s.xn.data(), n, pool());  // (n, kv_dim)
      w.v.apply_batch(s.vb.data(), s.xn.data(), n, pool());  // (n, kv_dim)
    }
    if (n > 1) {
      for (std::size_t t = 0; t < n; ++t) {
        const Row r = row_of(t);
        std::copy_n(s.kb.data() + t * kv_dim, kv_dim, r.cache->k(layer, r.pos));
        std::copy_n(s.vb.data() + t * kv_dim, kv_dim, r.cache->v(layer, r.pos));
      }
    }
    for (std::size_t t = 0; t < n; ++t) {  // rows in order: row t sees the K/V of rows < t
      const Row r = row_of(t);
      float* q = s.q.data() + t * q_dim;
      float* k = r.cache->k(layer, r.pos);
      kernels::rope(q, c.num_attention_heads, c.head_dim, model_->cos_at(r.pos),
                    model_->sin_at(r.pos));
      kernels::rope(k, c.num_key_value_heads, c.head_dim, model_->cos_at(r.pos),
                    model_->sin_at(r.pos));
      kernels::attention(s.att.data() + t * q_dim, q, r.cache->k(layer, 0), r.cache->v(layer, 0),
                         r.pos + 1, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                         s.scores.data(), pool());
    }
    if (n == 1)
      w.o.apply(s.proj.data(), s.att.data(), pool());
    else if (products == Products::matvec)
      w.o.apply_rows(s.proj.data(), s.att.data(), n, pool());
    else
      w.o.apply_batch(s.proj.data(), s.att.data(), n, pool());  // (n, hidden)
    kernels::add(x, s.proj.data(), n * h);
    mlp(w, x, n, products);
  }

  // x(n, hidden) += down(silu(gate(xn)) * up(xn)), xn = RMSNorm_post_attention(x).
  void mlp(const LlamaLayerWeights& w, float* x, std::size_t n,
           Products products = Products::matmul) {
    const LlamaConfig& c = config();
    const std::size_t h = c.hidden_size;
    Scratch& s = scratch_;
    for (std::size_t t = 0; t < n; ++t)
      kernels::rmsnorm(s.xn.data() + t * h, x + t * h, w.post_attention_norm.data(), h,
                       c.rms_norm_eps);
    if (n == 1) {
      apply_shared_input({{w.gate, s.gate.data()}, {w.up, s.up.data()}}, s.xn.data(), pool());
      kernels::swiglu(s.gate.data(), s.up.data(), c.intermediate_size);
      w.down.apply(s.proj.data(), s.gate.data(), pool());
    } else if (products == Products::matvec) {
      w.gate.apply_rows(s.gate.data(), s.xn.data(), n, pool());
      w.up.apply_rows(s.up.data(), s.xn.data(), n, pool());
      // Per token, as decoding calls it: a SIMD kernel's tail may round apart from its lanes.
      const std::size_t inter = c.intermediate_size;
      for (std::size_t t = 0; t < n; ++t)
        kernels::swiglu(s.gate.data() + t * inter, s.up.data() + t * inter, inter);
      w.down.apply_rows(s.proj.data(), s.gate.data(), n, pool());
    } else {
      w.gate.apply_batch(s.gate.data(), s.xn.data(), n, pool());
      w.up.apply_batch(s.up.data(), s.xn.data(), n, pool());
      kernels::swiglu(s.gate.data(), s.up.data(), n * c.intermediate_size);
      w.down.apply_batch(s.proj.data(), s.gate.data(), n, pool());
    }
    kernels::add(x, s.proj.data(), n * h);
  }

  // Layer `layer` is about to write positions [pos, pos + n): they must follow what is cached,
  // and become its end.
  void begin_write(std::size_t layer, std::size_t pos, std::size_t n) {
    if (layer >= filled_.size())
      throw Error("layer " + std::to_string(layer) + " is outside the model's " +
                  std::to_string(filled_.size()) + " layers");
    if (pos + n > max_context_)
      throw Error("position " + std::to_string(pos + n - 1) + " is past the context length " +
                  std::to_string(max_context_));
    if (pos > filled_[layer])
      throw Error("layer " + std::to_string(layer) + " holds " + std::to_string(filled_[layer]) +
                  " positions; position " + std::to_string(pos) + " would leave a gap");
    filled_[layer] = pos + n;
  }
  void check_layers(std::size_t first, std::size_t last) const {
    if (first >= last || last > filled_.size())
      throw Error("layers [" + std::to_string(first) + ", " + std::to_string(last) +
                  ") are not a non-empty range of the model's " + std::to_string(filled_.size()) +
                  " layers");
  }
  void check_cached(std::size_t layer, std::size_t pos) const {
    if (layer >= filled_.size() || pos >= filled_[layer])
      throw Error("no cache entry for layer " + std::to_string(layer) + " at position " +
                  std::to_string(pos));
  }

  std::shared_ptr<const LlamaModel> model_;
  std::shared_ptr<ThreadPool> pool_;
  std::size_t max_context_ = 0;
  KvCache cache_;
  std::vector<std::size_t> filled_;  // (layers) positions cached per layer
  Scratch scratch_;
};

}  // namespace calm
