// Typed views of the Llama weights inside the memory-mapped checkpoint. Linear weights stay in
// their file dtype (F32/F16/BF16) and are widened inside the kernels, or are quantized to q8_0
// at load (WeightFormat::q8_0, kernels/q8_0.hpp); the small norm vectors are widened to f32 once
// at load.
#pragma once

#include <calm/core/dtype.hpp>
#include <calm/core/error.hpp>
#include <calm/core/thread_pool.hpp>
#include <calm/io/hf_config.hpp>
#include <calm/io/safetensors.hpp>
#include <calm/kernels/elementwise.hpp>
#include <calm/kernels/matmul.hpp>
#include <calm/kernels/matvec.hpp>
#include <calm/kernels/q8_0.hpp>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

#include <span>
#include <string>
#include <type_traits>

#include <sys/mman.h>
#include <vector>

namespace calm {

// How the linear weights are held in memory: as the file stores them (F32/F16/BF16), or
// quantized at load to q8_0 (blocks of 32 int8 with one scale each, kernels/q8_0.hpp; the
// layers' matrices and an untied head; the embedding and a tied head stay in the file dtype).
enum class WeightFormat : std::uint8_t { file, q8_0 };

// A linear layer's weight W (rows, cols), row-major, in its file dtype, or in q8_0: then data
// holds the int8 quants (rows, cols) and scales the f32 block scales (rows, cols / 32); dtype
// stays the file's.
struct Linear {
  DType dtype = DType::f32;
  const std::byte* data = nullptr;
  std::size_t rows = 0, cols = 0;
  WeightFormat format = WeightFormat::file;
  const float* scales = nullptr;  // (rows, cols / kQ8Block) when format == q8_0

  std::size_t bytes() const noexcept {
    if (format == WeightFormat::q8_0)
      return rows * cols + rows * (cols / kernels::kQ8Block) * sizeof(float);
    return rows * cols * dtype_size(dtype);
  }
  const std::int8_t* quants() const noexcept { return reinterpret_cast<const std::int8_t*>(data); }

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
    if (format == WeightFormat::q8_0)
      return kernels::matvec_q8_0(y, quants(), scales, x, rows, cols, pool);
    visit([&](const auto* w) { kernels::matvec(y, w, x, rows, cols, pool); });
  }
  // Y(n, rows) = X(n, cols) W^T
  void apply_batch(float* y, const float* x, std::size_t n, ThreadPool* pool) const {
    if (format == WeightFormat::q8_0)
      return kernels::matmul_q8_0(y, quants(), scales, x, n, rows, cols, pool);
    visit([&](const auto* w) { kernels::matmul(y, w, x, n, rows, cols, pool); });
  }
  // Y(n, rows) = X(n, cols) W^T, each row bitwise what apply() gives for it; every weight is
  // still read from memory once (kernels::matvec_batch).
  void apply_rows(float* y, const float* x, std::size_t n, ThreadPool* pool) const {
    if (format == WeightFormat::q8_0)
      return kernels::matvec_batch_q8_0(y, quants(), scales, x, n, rows, cols, pool);
    visit([&](const auto* w) { kernels::matvec_batch(y, w, x, n, rows, cols, pool); });
  }
  // y(k) = row rows[k] of W x(cols), each bitwise what apply() gives for that row: a few rows
  // of a large matrix (the exit check over a candidate set). One thread.
  void apply_gather(float* y, const float* x, std::span<const std::uint32_t> rows_to) const {
    if (format == WeightFormat::q8_0)
      return kernels::matvec_gather_q8_0(y, quants(), scales, x, rows_to, cols);
    visit([&](const auto* w) { kernels::matvec_gather(y, w, x, rows_to, cols); });
  }
  // out(cols) := row r of W, widened to f32 (the embedding lookup).
  void row(std::size_t r, float* out) const {
    if (format == WeightFormat::q8_0)
      return kernels::dequantize_row_q8_0(out, quants() + r * cols,
                                          scales + r * (cols / kernels::kQ8Block), cols);
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
    together = together && o.w.format == first.w.format &&
               (o.w.format == WeightFormat::q8_0 || o.w.dtype == first.w.dtype) &&
               o.w.cols == first.w.cols;
  if (!together) {
    for (const LinearOutput& o : outputs) o.w.apply(o.y, x, pool);
    return;
  }
  if (first.w.format == WeightFormat::q8_0) {
    std::array<kernels::Q8Segment, kMaxSegments> segments{};
    std::size_t n = 0;
    for (const LinearOutput& o : outputs) segments[n++] = {o.y, o.w.quants(), o.w.scales, o.w.rows};
    kernels::matvec_q8_0(std::span<const kernels::Q8Segment>(segments.data(), n), x,
                         first.w.cols, pool);
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

// Refuses a tensor holding a NaN or an infinity, naming it, its file and the first bad element.
// `role` says which check this is ("norm", "head").
inline void check_finite(const io::TensorView& t, const char* role) {
  const std::optional<std::size_t> bad = t.first_non_finite();
  if (!bad) return;
  std::string at;
  if (t.shape.size() == 2 && t.shape[1] > 0) {
    at = "row " + std::to_string(*bad / t.shape[1]) + ", column " +
         std::to_string(*bad % t.shape[1]);
  } else {
    at = "index " + std::to_string(*bad);
  }
  const float v = t.value(*bad);
  throw Error("tensor '" + t.name + "' in '" + t.file.string() + "' holds " +
              (std::isnan(v) ? std::string("NaN") : std::string(v > 0 ? "+inf" : "-inf")) + " at " +
              at + "; calm refuses non-finite " + (*role ? std::string(role) + " " : "") +
              "weights");
}

// Copies of tensors whose data is not aligned for their dtype (io/safetensors.hpp: such data is
// accepted and read through a copy). Shared, so that copies of LlamaWeights stay valid.
using RealignedBuffers = std::vector<std::shared_ptr<std::byte[]>>;

inline Linear linear_from(const io::Checkpoint& ckpt, const std::string& name, std::size_t rows,
                          std::size_t cols, RealignedBuffers& realigned) {
  const io::TensorView& t = ckpt.get(name, {rows, cols});
  if (t.aligned()) return Linear{t.dtype, t.data, rows, cols};
  // operator new aligns to at least alignof(std::max_align_t), enough for every dtype.
  std::shared_ptr<std::byte[]> copy(new std::byte[t.nbytes]);
  std::memcpy(copy.get(), t.data, t.nbytes);
  realigned.push_back(copy);
  return Linear{t.dtype, copy.get(), rows, cols};
}

// Norm weights: widened to f32 (through a copy, so at any alignment) and required to be finite.
inline std::vector<float> vector_from(const io::Checkpoint& ckpt, const std::string& name,
                                      std::size_t n) {
  const io::TensorView& t = ckpt.get(name, {n});
  check_finite(t, "norm");
  return t.to_floats();
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

// Tensors a Llama checkpoint may hold that calm does not read because they cannot change what
// it computes. Any other tensor the config does not account for is an error (docs/design.md §1:
// nothing is ignored silently).
namespace detail {

// model.layers.{i}.self_attn.rotary_emb.inv_freq: a buffer older transformers versions saved
// with the weights; it is 1 / rope_theta^(2j / head_dim), which calm computes from config.json.
inline bool harmless_extra_tensor(std::string_view name, std::size_t num_layers) {
  constexpr std::string_view prefix = "model.layers.";
  constexpr std::string_view suffix = ".self_attn.rotary_emb.inv_freq";
  if (!name.starts_with(prefix) || !name.ends_with(suffix)) return false;
  const std::string_view index =
      name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (index.empty() || index.size() > 9 || (index.size() > 1 && index[0] == '0')) return false;
  std::size_t i = 0;
  for (char c : index) {
    if (c < '0' || c > '9') return false;
    i = i * 10 + static_cast<std::size_t>(c - '0');
  }
  return i < num_layers;
}

}  // namespace detail

struct LlamaWeights {
  Linear embed;                     // (vocab, hidden)
  std::vector<LlamaLayerWeights> layers;
  std::vector<float> final_norm;    // (hidden)
  Linear lm_head;                   // (vocab, hidden); the embedding when tied
  RealignedBuffers realigned;       // aligned copies of misaligned matrices (usually none)

  // Every tensor the config implies, with its shape checked against the file (errors name it);
  // every other tensor of the checkpoint is refused by name, except the harmless extras above.
  // Non-finite values: the norms and the head (the embedding when tied) are scanned and
  // refused here, which costs one read of vocab * hidden values; the other matrices are streamed
  // only when decoding (check_all_finite scans them on request).
  static LlamaWeights load(const io::Checkpoint& ckpt, const LlamaConfig& c) {
    const std::size_t h = c.hidden_size, q_dim = c.num_attention_heads * c.head_dim,
                      kv_dim = c.num_key_value_heads * c.head_dim, inter = c.intermediate_size;
    LlamaWeights w;
    std::set<std::string, std::less<>> used;
    const auto linear = [&](const std::string& name, std::size_t rows, std::size_t cols) {
      used.insert(name);
      return linear_from(ckpt, name, rows, cols, w.realigned);
    };
    const auto vector = [&](const std::string& name, std::size_t n) {
      used.insert(name);
      return vector_from(ckpt, name, n);
    };
    w.embed = linear("model.embed_tokens.weight", c.vocab_size, h);
    w.layers.reserve(c.num_hidden_layers);
    for (std::size_t i = 0; i < c.num_hidden_layers; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      LlamaLayerWeights l;
      l.input_norm = vector(p + "input_layernorm.weight", h);
      l.q = linear(p + "self_attn.q_proj.weight", q_dim, h);
      l.k = linear(p + "self_attn.k_proj.weight", kv_dim, h);
      l.v = linear(p + "self_attn.v_proj.weight", kv_dim, h);
      l.o = linear(p + "self_attn.o_proj.weight", h, q_dim);
      l.post_attention_norm = vector(p + "post_attention_layernorm.weight", h);
      l.gate = linear(p + "mlp.gate_proj.weight", inter, h);
      l.up = linear(p + "mlp.up_proj.weight", inter, h);
      l.down = linear(p + "mlp.down_proj.weight", h, inter);
      w.layers.push_back(std::move(l));
    }
    w.final_norm = vector("model.norm.weight", h);
    if (c.tie_word_embeddings) {
      if (ckpt.contains("lm_head.weight"))
        throw Error("config says tie_word_embeddings = true but the checkpoint also has "
                    "'lm_head.weight'; refusing to guess which head is meant");
      w.lm_head = w.embed;
      check_finite(ckpt.get("model.embed_tokens.weight"), "head");
    } else {
      w.lm_head = linear("lm_head.weight", c.vocab_size, h);
      check_finite(ckpt.get("lm_head.weight"), "head");
    }
    refuse_unread_tensors(ckpt, c, used);
    return w;
  }

  // Scans every tensor of the checkpoint for NaN and infinities (a full read of the weights:
  // seconds for a 7B model); throws naming the first bad tensor and element.
  static void check_all_finite(const io::Checkpoint& ckpt) {
    for (std::string_view name : ckpt.names()) check_finite(ckpt.get(name), "");
  }

 private:
  static void refuse_unread_tensors(const io::Checkpoint& ckpt, const LlamaConfig& c,
                                    const std::set<std::string, std::less<>>& used) {
    std::vector<std::string_view> unread;
    for (std::string_view name : ckpt.names()) {
      if (!used.contains(name) && !detail::harmless_extra_tensor(name, c.num_hidden_layers))
        unread.push_back(name);
    }
    if (unread.empty()) return;
    const io::TensorView& first = ckpt.get(unread.front());
    std::string why = "calm's Llama model reads no such tensor";
    constexpr std::string_view layers = "model.layers.";
    if (first.name.starts_with(layers)) {
      const std::size_t layer = std::strtoull(first.name.c_str() + layers.size(), nullptr, 10);
      if (layer >= c.num_hidden_layers)
        why = "config.json says num_hidden_layers = " + std::to_string(c.num_hidden_layers) +
              ", so layer " + std::to_string(layer) + " would not run";
    }
    std::string more;
    if (unread.size() > 1) {
      more = " (and " + std::to_string(unread.size() - 1) + " more: '" + std::string(unread[1]) +
             "'" + (unread.size() > 2 ? ", ...)" : ")");
    }
    throw Error("tensor '" + first.name + "' in '" + first.file.string() +
                "' is not used by the model config.json describes (" + why + ")" + more +
                "; calm refuses to ignore a tensor of the checkpoint (the model may need it)");
  }

 public:
  // Every linear weight, once (a tied head is the embedding).
  std::vector<Linear*> linears() {
    std::vector<Linear*> out{&embed};
    for (auto& l : layers)
      for (Linear* w : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) out.push_back(w);
    if (lm_head.data != embed.data) out.push_back(&lm_head);
    return out;
  }

  // The source pages are dropped behind a copy every kReleaseChunk bytes, so no tensor (the head
  // alone is 0.5 GB in Llama 3) is ever resident twice.
  static constexpr std::size_t kReleaseChunk = std::size_t{8} << 20;

  // memcpy that drops the source's pages of the checkpoint behind it, a chunk at a time.
  static void copy_releasing(std::byte* dst, const std::byte* src, std::size_t bytes,
                             const io::Checkpoint& source) {
    for (std::size_t done = 0; done < bytes; done += kReleaseChunk) {
      const std::size_t n = std::min(kReleaseChunk, bytes - done);
      std::memcpy(dst + done, src + done, n);
      source.release_pages({src + done, n});
    }
  }

  // Copies every linear weight into one arena (64-byte aligned each) and points at the copies
  // (realigned copies are then no longer needed). The file mapping's pages are dropped behind
  // the copy (io::Checkpoint::release_pages), so the checkpoint is never resident twice: peak
  // memory is the arena plus a chunk (measured: bench/bench_load.cpp).
  WeightArena copy_to_arena(const io::Checkpoint& source) {
    const auto all = linears();
    const auto padded = [](std::size_t b) { return (b + 63) / 64 * 64; };
    std::size_t total = 0;
    for (const Linear* w : all) total += padded(w->bytes());
    WeightArena arena(total);
    std::size_t offset = 0;
    const std::byte* old_embed = embed.data;
    for (Linear* w : all) {
      copy_releasing(arena.data() + offset, w->data, w->bytes(), source);
      w->data = arena.data() + offset;
      offset += padded(w->bytes());
    }
    if (lm_head.data == old_embed) lm_head.data = embed.data;
    realigned.clear();
    return arena;
  }

  // Quantizes the layers' matrices and an untied head to q8_0 into one arena (quants, then
  // scales, each 64-byte aligned) and points at it; with copy_dense the embedding (and a tied
  // head) is copied there too in its file dtype, else it stays where it is. Refuses, naming
  // the tensor, a matrix whose cols is not a multiple of 32 (q8_0 keeps whole blocks) or that
  // holds a non-finite weight or one beyond q8_0's range (|w| > 127 * 65504). As in
  // copy_to_arena, each source tensor's file pages are dropped once it is quantized or copied.
  WeightArena quantize_to_arena(const io::Checkpoint& source, bool copy_dense) {
    struct Named {
      std::string name;
      Linear* w;
    };
    std::vector<Named> quantized;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      LlamaLayerWeights& l = layers[i];
      const std::string p = "model.layers." + std::to_string(i) + ".";
      quantized.insert(quantized.end(), {{p + "self_attn.q_proj.weight", &l.q},
                                         {p + "self_attn.k_proj.weight", &l.k},
                                         {p + "self_attn.v_proj.weight", &l.v},
                                         {p + "self_attn.o_proj.weight", &l.o},
                                         {p + "mlp.gate_proj.weight", &l.gate},
                                         {p + "mlp.up_proj.weight", &l.up},
                                         {p + "mlp.down_proj.weight", &l.down}});
    }
    const bool tied = lm_head.data == embed.data;
    if (!tied) quantized.push_back({"lm_head.weight", &lm_head});
    for (const Named& n : quantized)
      if (n.w->cols % kernels::kQ8Block != 0)
        throw Error("tensor '" + n.name + "' has " + std::to_string(n.w->cols) +
                    " columns, not a multiple of " + std::to_string(kernels::kQ8Block) +
                    "; q8_0 weights need whole blocks of 32 (load with WeightFormat::file)");
    const auto padded = [](std::size_t b) { return (b + 63) / 64 * 64; };
    const auto q8_bytes = [&](const Linear& w) {
      return padded(w.rows * w.cols) + padded(w.rows * (w.cols / kernels::kQ8Block) * sizeof(float));
    };
    std::size_t total = copy_dense ? padded(embed.bytes()) : 0;
    for (const Named& n : quantized) total += q8_bytes(*n.w);
    WeightArena arena(total);
    std::size_t offset = 0;
    if (copy_dense) {
      copy_releasing(arena.data(), embed.data, embed.bytes(), source);
      embed.data = arena.data();
      offset = padded(embed.bytes());
      if (tied) lm_head.data = embed.data;
    }
    for (const Named& n : quantized) {
      Linear& w = *n.w;
      auto* q = reinterpret_cast<std::int8_t*>(arena.data() + offset);
      auto* d = reinterpret_cast<float*>(arena.data() + offset + padded(w.rows * w.cols));
      const std::size_t nb = w.cols / kernels::kQ8Block;
      const std::size_t row_bytes = w.cols * dtype_size(w.dtype);
      w.visit([&](const auto* src) {
        std::size_t released = 0;  // source rows [0, released) are dropped
        for (std::size_t r = 0; r < w.rows; ++r) {
          if (!kernels::quantize_row_q8_0(q + r * w.cols, d + r * nb, src + r * w.cols, w.cols))
            throw Error("tensor '" + n.name + "' row " + std::to_string(r) +
                        " holds a non-finite weight or one beyond q8_0's range (|w| > 127 * "
                        "65504); calm cannot quantize it");
          if ((r + 1 - released) * row_bytes >= kReleaseChunk || r + 1 == w.rows) {
            source.release_pages({w.data + released * row_bytes, (r + 1 - released) * row_bytes});
            released = r + 1;
          }
        }
      });
      offset += q8_bytes(w);
      w.format = WeightFormat::q8_0;
      w.data = reinterpret_cast<const std::byte*>(q);
      w.scales = d;
    }
    if (copy_dense) realigned.clear();
    return arena;
  }

  // Bytes the weights occupy in memory: every linear once (q8_0 with its scales) and the norms.
  std::size_t bytes_in_memory() const {
    std::size_t b = final_norm.size() * sizeof(float) + embed.bytes();
    if (lm_head.data != embed.data) b += lm_head.bytes();
    for (const auto& l : layers) {
      for (const Linear* w : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) b += w->bytes();
      b += (l.input_norm.size() + l.post_attention_norm.size()) * sizeof(float);
    }
    return b;
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
