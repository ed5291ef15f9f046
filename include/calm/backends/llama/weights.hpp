// Typed views of the Llama weights inside the memory-mapped checkpoint. Linear weights stay in
// their file dtype (F32/F16/BF16) and are widened inside the kernels; the small norm vectors are
// widened to f32 once at load.
#pragma once

#include <calm/core/dtype.hpp>
#include <calm/core/error.hpp>
#include <calm/core/thread_pool.hpp>
#include <calm/io/hf_config.hpp>
#include <calm/io/safetensors.hpp>
#include <calm/kernels/elementwise.hpp>
#include <calm/kernels/matmul.hpp>
#include <calm/kernels/matvec.hpp>

#include <array>
#include <cstddef>
#include <cstring>
#include <initializer_list>
#include <utility>

#include <span>
#include <string>
#include <type_traits>

#include <sys/mman.h>
#include <vector>

namespace calm {

// A linear layer's weight W (rows, cols), row-major, in its file dtype.
struct Linear {
  DType dtype = DType::f32;
  const std::byte* data = nullptr;
  std::size_t rows = 0, cols = 0;

  std::size_t bytes() const noexcept { return rows * cols * dtype_size(dtype); }

  template <class F>
  decltype(auto) visit(F&& f) const {  // calls f(const T*) with the weight's element type
    switch (dtype) {
      case DType::f32: return f(reinterpret_cast<const float*>(data));
      case DType::f16: return f(reinterpret_cast<const f16*>(data));
      case DType::bf16: break;
    }
    return f(reinterpret_cast<const bf16*>(data));
  }

  // y(rows) = W x(cols)
  void apply(float* y, const float* x, ThreadPool* pool) const {
    visit([&](const auto* w) { kernels::matvec(y, w, x, rows, cols, pool); });
  }
  // Y(n, rows) = X(n, cols) W^T
  void apply_batch(float* y, const float* x, std::size_t n, ThreadPool* pool) const {
    visit([&](const auto* w) { kernels::matmul(y, w, x, n, rows, cols, pool); });
  }
  // Y(n, rows) = X(n, cols) W^T, each row bitwise what apply() gives for it; every weight is
  // still read from memory once (kernels::matvec_batch).
  void apply_rows(float* y, const float* x, std::size_t n, ThreadPool* pool) const {
    visit([&](const auto* w) { kernels::matvec_batch(y, w, x, n, rows, cols, pool); });
  }
  // out(cols) := row r of W, widened to f32 (the embedding lookup).
  void row(std::size_t r, float* out) const {
    visit([&](const auto* w) { kernels::widen(out, w + r * cols, cols); });
  }
};

// One output of apply_shared_input: y(w.rows) = w x.
struct LinearOutput {
  const Linear& w;
  float* y;
};

// Every y = W x for linears that multiply the same x(cols) (q/k/v, gate/up): one matvec pass over
// all their rows when they share dtype and cols (one pool call; the prefetch stream runs from one
// matrix into the next), else one apply each. The results are the same bits either way.
inline void apply_shared_input(std::initializer_list<LinearOutput> outputs, const float* x,
                               ThreadPool* pool) {
  constexpr std::size_t kMaxSegments = 4;
  const LinearOutput& first = *outputs.begin();
  bool together = outputs.size() <= kMaxSegments;
  for (const LinearOutput& o : outputs)
    together = together && o.w.dtype == first.w.dtype && o.w.cols == first.w.cols;
  if (!together) {
    for (const LinearOutput& o : outputs) o.w.apply(o.y, x, pool);
    return;
  }
  first.w.visit([&](const auto* first_w) {
    using T = std::remove_cv_t<std::remove_pointer_t<decltype(first_w)>>;
    std::array<kernels::MatvecSegment<T>, kMaxSegments> segments{};
    std::size_t n = 0;
    for (const LinearOutput& o : outputs)
      segments[n++] = {o.y, reinterpret_cast<const T*>(o.w.data), o.w.rows};
    kernels::matvec(std::span<const kernels::MatvecSegment<T>>(segments.data(), n), x,
                    first.w.cols, pool);
  });
}

inline Linear linear_from(const io::Checkpoint& ckpt, const std::string& name, std::size_t rows,
                          std::size_t cols) {
  const io::TensorView& t = ckpt.get(name, {rows, cols});
  return Linear{t.dtype, t.data, rows, cols};
}

inline std::vector<float> vector_from(const io::Checkpoint& ckpt, const std::string& name,
                                      std::size_t n) {
  const io::TensorView& t = ckpt.get(name, {n});
  std::vector<float> out(n);
  Linear{t.dtype, t.data, 1, n}.row(0, out.data());
  return out;
}

struct LlamaLayerWeights {
  std::vector<float> input_norm;          // (hidden)
  Linear q, k, v;                         // (heads*head_dim, hidden), (kv_heads*head_dim, hidden) x2
  Linear o;                               // (hidden, heads*head_dim)
  std::vector<float> post_attention_norm; // (hidden)
  Linear gate, up;                        // (intermediate, hidden)
  Linear down;                            // (hidden, intermediate)
};

// Anonymous memory that holds a copy of the linear weights, advised to use transparent huge
// pages: decode streams every weight once per token, and with 4 KiB pages of the file mapping a
// TLB miss interrupts each row's stream every 4 KiB (measured: see bench/README.md).
class WeightArena {
 public:
  WeightArena() = default;
  explicit WeightArena(std::size_t bytes) : size_(bytes) {
    if (bytes == 0) return;
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw Error("cannot allocate " + std::to_string(bytes) + " bytes for the weights");
    ::madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without THP it is plain memory
    data_ = static_cast<std::byte*>(p);
  }
  WeightArena(WeightArena&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(o.size_) {}
  WeightArena& operator=(WeightArena&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  ~WeightArena() {
    if (data_) ::munmap(data_, size_);
  }
  std::byte* data() const noexcept { return data_; }

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

struct LlamaWeights {
  Linear embed;                     // (vocab, hidden)
  std::vector<LlamaLayerWeights> layers;
  std::vector<float> final_norm;    // (hidden)
  Linear lm_head;                   // (vocab, hidden); the embedding when tied

  // Every tensor the config implies, with its shape checked against the file (errors name it).
  static LlamaWeights load(const io::Checkpoint& ckpt, const LlamaConfig& c) {
    const std::size_t h = c.hidden_size, q_dim = c.num_attention_heads * c.head_dim,
                      kv_dim = c.num_key_value_heads * c.head_dim, inter = c.intermediate_size;
    LlamaWeights w;
    w.embed = linear_from(ckpt, "model.embed_tokens.weight", c.vocab_size, h);
    w.layers.reserve(c.num_hidden_layers);
    for (std::size_t i = 0; i < c.num_hidden_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      LlamaLayerWeights l;
      l.input_norm = vector_from(ckpt, p + "input_layernorm.weight", h);
      l.q = linear_from(ckpt, p + "self_attn.q_proj.weight", q_dim, h);
      l.k = linear_from(ckpt, p + "self_attn.k_proj.weight", kv_dim, h);
      l.v = linear_from(ckpt, p + "self_attn.v_proj.weight", kv_dim, h);
      l.o = linear_from(ckpt, p + "self_attn.o_proj.weight", h, q_dim);
      l.post_attention_norm = vector_from(ckpt, p + "post_attention_layernorm.weight", h);
      l.gate = linear_from(ckpt, p + "mlp.gate_proj.weight", inter, h);
      l.up = linear_from(ckpt, p + "mlp.up_proj.weight", inter, h);
      l.down = linear_from(ckpt, p + "mlp.down_proj.weight", h, inter);
      w.layers.push_back(std::move(l));
    }
    w.final_norm = vector_from(ckpt, "model.norm.weight", h);
    if (c.tie_word_embeddings) {
      if (ckpt.contains("lm_head.weight"))
        throw Error("config says tie_word_embeddings = true but the checkpoint also has "
                    "'lm_head.weight'; refusing to guess which head is meant");
      w.lm_head = w.embed;
    } else {
      w.lm_head = linear_from(ckpt, "lm_head.weight", c.vocab_size, h);
    }
    return w;
  }

  // Every linear weight, once (a tied head is the embedding).
  std::vector<Linear*> linears() {
    std::vector<Linear*> out{&embed};
    for (auto& l : layers)
      for (Linear* w : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) out.push_back(w);
    if (lm_head.data != embed.data) out.push_back(&lm_head);
    return out;
  }

  // Copies every linear weight into one arena (64-byte aligned each) and points at the copies.
  WeightArena copy_to_arena() {
    const auto all = linears();
    const auto padded = [](std::size_t b) { return (b + 63) / 64 * 64; };
    std::size_t total = 0;
    for (const Linear* w : all) total += padded(w->bytes());
    WeightArena arena(total);
    std::size_t offset = 0;
    const std::byte* old_embed = embed.data;
    for (Linear* w : all) {
      std::memcpy(arena.data() + offset, w->data, w->bytes());
      w->data = arena.data() + offset;
      offset += padded(w->bytes());
    }
    if (lm_head.data == old_embed) lm_head.data = embed.data;
    return arena;
  }

  // Bytes of weights one decode step reads through all layers and the head (memory-bound cost).
  std::size_t bytes_per_token() const noexcept {
    std::size_t b = lm_head.bytes() + embed.cols * dtype_size(embed.dtype);
    for (const auto& l : layers)
      b += l.q.bytes() + l.k.bytes() + l.v.bytes() + l.o.bytes() + l.gate.bytes() + l.up.bytes() +
           l.down.bytes();
    return b;
  }
};

}  // namespace calm
