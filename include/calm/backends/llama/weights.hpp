// Typed views of the Llama weights inside the memory-mapped checkpoint. Linear weights stay in
// their file dtype (F32/F16/BF16) and are widened inside the kernels, or are quantized at load
// to a block format (WeightFormat::q8_0; formats/); the small norm vectors are widened to f32
// once at load.
#pragma once

#include <calm/core/compiled.hpp>
#include <calm/core/dtype.hpp>
#include <calm/core/error.hpp>
#include <calm/core/thread_pool.hpp>
#include <calm/io/hf_config.hpp>
#include <calm/io/safetensors.hpp>
#include <calm/formats/formats.hpp>

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
// quantized at load to a block format -- q8_0 (blocks of 32 int8 with one scale each,
// kernels/q8_0.hpp) or q4_0 (32 4-bit integers and a scale, kernels/q4_0.hpp) -- or held as bf16
// and multiplied on the bf16 dot product (bf16_dot: activations rounded to bf16, one arithmetic
// for every batch size, kernels/bf16_dot.hpp) or as q8_0 on the int8 dot product (q8_0_dot:
// activations quantized to int8 blocks, one arithmetic for every batch size,
// kernels/q8_0_dot.hpp) or as q4_0 on the same int8 dot product (q4_0_dot,
// kernels/q4_0_dot.hpp) -- the layers' matrices and an untied head; the embedding and a tied
// head stay in the file dtype.
enum class WeightFormat : std::uint8_t { file, q8_0, q4_0, bf16_dot, q8_0_dot, q4_0_dot };

// Every WeightFormat by the name programs take (`--weights`), in enum order.
inline constexpr std::pair<std::string_view, WeightFormat> kWeightFormatNames[] = {
    {"file", WeightFormat::file},         {"q8_0", WeightFormat::q8_0},
    {"q4_0", WeightFormat::q4_0},         {"bf16_dot", WeightFormat::bf16_dot},
    {"q8_0_dot", WeightFormat::q8_0_dot}, {"q4_0_dot", WeightFormat::q4_0_dot}};

// The WeightFormat named `name` (kWeightFormatNames), or none.
inline std::optional<WeightFormat> weight_format_named(std::string_view name) {
  for (const auto& [n, w] : kWeightFormatNames)
    if (n == name) return w;
  return std::nullopt;
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
  const formats::Id format = formats::dense_id(t.dtype);
  if (t.aligned()) return Linear{{t.data, nullptr, rows, cols}, format};
  // operator new aligns to at least alignof(std::max_align_t), enough for every dtype.
  std::shared_ptr<std::byte[]> copy(new std::byte[t.nbytes]);
  std::memcpy(copy.get(), t.data, t.nbytes);
  realigned.push_back(copy);
  return Linear{{copy.get(), nullptr, rows, cols}, format};
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
  static LlamaWeights load(const io::Checkpoint& ckpt, const LlamaConfig& c);

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

  // Quantizes the layers' matrices and an untied head to the block format F into one arena
  // (each matrix's data, then its scales, each 64-byte aligned) and points at it; with
  // copy_dense the embedding (and a tied head) is copied there too in its file dtype, else it
  // stays where it is. Refuses, naming the tensor, a matrix whose cols is not a multiple of
  // F::block or that holds a non-finite weight or one beyond F's range. As in copy_to_arena,
  // each source tensor's file pages are dropped once it is quantized or copied.
  template <formats::QuantizedFormat F>
  WeightArena quantize_to_arena(const io::Checkpoint& source, bool copy_dense);

  // Bytes the weights occupy in memory: every linear once (with its scales) and the norms.
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
    std::size_t b = lm_head.bytes() + embed.row_bytes();
    for (const auto& l : layers)
      b += l.q.bytes() + l.k.bytes() + l.v.bytes() + l.o.bytes() + l.gate.bytes() + l.up.bytes() +
           l.down.bytes();
    return b;
  }
};

// The bodies of load and quantize_to_arena: ~80 KB of code in every unit that loads a model, so
// calm's own build compiles them once (CALM_COMPILED: src/backends/llama_weights.cpp defines
// CALM_COMPILE_LLAMA_WEIGHTS; core/compiled.hpp); header-only builds get them here as before.
#if !defined(CALM_COMPILED) || defined(CALM_COMPILE_LLAMA_WEIGHTS)
CALM_COMPILED_INLINE LlamaWeights LlamaWeights::load(const io::Checkpoint& ckpt,
                                                     const LlamaConfig& c) {
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
#endif

template <formats::QuantizedFormat F>
WeightArena LlamaWeights::quantize_to_arena(const io::Checkpoint& source, bool copy_dense) {
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
    if (n.w->cols % F::block != 0)
      throw Error("tensor '" + n.name + "' has " + std::to_string(n.w->cols) +
                  " columns, not a multiple of " + std::to_string(F::block) + "; " +
                  std::string(F::name) + " weights need whole blocks of " +
                  std::to_string(F::block) + " (load with WeightFormat::file)");
  const auto padded = [](std::size_t b) { return (b + 63) / 64 * 64; };
  const auto quantized_bytes = [&](const Linear& w) {
    return padded(w.rows * F::data_bytes(w.cols)) + padded(w.rows * F::scale_bytes(w.cols));
  };
  std::size_t total = copy_dense ? padded(embed.bytes()) : 0;
  for (const Named& n : quantized) total += quantized_bytes(*n.w);
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
    std::byte* data = arena.data() + offset;
    auto* scales = reinterpret_cast<float*>(data + padded(w.rows * F::data_bytes(w.cols)));
    const std::size_t row_bytes = w.row_bytes();  // of the source
    const std::size_t data_row = F::data_bytes(w.cols), scale_row = F::scale_bytes(w.cols) / 4;
    formats::visit(w.format, [&](auto source_format) {
      using S = decltype(source_format);
      if constexpr (S::block == 1) {
        const auto* src = reinterpret_cast<const typename S::element*>(w.data);
        std::size_t released = 0;  // source rows [0, released) are dropped
        for (std::size_t r = 0; r < w.rows; ++r) {
          if (!F::quantize_row(data + r * data_row, scales + r * scale_row, src + r * w.cols,
                               w.cols))
            throw Error("tensor '" + n.name + "' row " + std::to_string(r) +
                        " holds a non-finite weight or one beyond " + std::string(F::name) +
                        "'s range (" + std::string(F::range) + "); calm cannot quantize it");
          if ((r + 1 - released) * row_bytes >= kReleaseChunk || r + 1 == w.rows) {
            source.release_pages({w.data + released * row_bytes, (r + 1 - released) * row_bytes});
            released = r + 1;
          }
        }
      } else {
        throw Error("tensor '" + n.name + "' is already quantized; calm quantizes only " +
                    "f32/f16/bf16 weights");
      }
    });
    offset += quantized_bytes(w);
    w.format = F::id;
    w.data = data;
    w.scales = scales;
  }
  if (copy_dense) realigned.clear();
  return arena;
}

#ifdef CALM_COMPILED
extern template WeightArena LlamaWeights::quantize_to_arena<formats::Q8_0>(const io::Checkpoint&,
                                                                           bool);
extern template WeightArena LlamaWeights::quantize_to_arena<formats::Q4_0>(const io::Checkpoint&,
                                                                           bool);
extern template WeightArena LlamaWeights::quantize_to_arena<formats::BF16Dot>(
    const io::Checkpoint&, bool);
extern template WeightArena LlamaWeights::quantize_to_arena<formats::Q8_0Dot>(
    const io::Checkpoint&, bool);
extern template WeightArena LlamaWeights::quantize_to_arena<formats::Q4_0Dot>(
    const io::Checkpoint&, bool);
#endif

}  // namespace calm
