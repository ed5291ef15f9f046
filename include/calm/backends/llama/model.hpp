// calm::LlamaModel — what every sequence of a Llama-family checkpoint shares: the config, the
// weights (memory-mapped, or copied into huge-page memory) and the RoPE tables. It is immutable
// once loaded, so any number of sessions on any number of threads may read it at once; it is
// held through std::shared_ptr<const LlamaModel>, and each LlamaSession keeps its model alive.
#pragma once

#include <calm/backends/llama/weights.hpp>
#include <calm/core/error.hpp>
#include <calm/io/hf_config.hpp>
#include <calm/io/safetensors.hpp>
#include <calm/kernels/rope.hpp>

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

namespace calm {

// The rotary frequencies of the model: the base ones of rope_theta, rescaled as config.json's
// rope_scaling says (docs/design.md §10). With f_j the base frequency and w_j = 2π / f_j its
// wavelength:
//  - linear (factor s): f_j / s;
//  - llama3 (s, low_freq_factor a, high_freq_factor b, original context C): wavelengths shorter
//    than C / b keep f_j, longer than C / a get f_j / s, and in between the two blend with
//    μ = (C / w_j − a) / (b − a): (1 − μ) f_j / s + μ f_j.
// Computed in double from HF's float32 base frequencies and rounded once to float.
inline std::vector<float> rope_frequencies(const LlamaConfig& c) {
  std::vector<float> f = kernels::rope_inv_freq(c.head_dim, c.rope_theta);
  const RopeScaling& r = c.rope_scaling;
  const double s = r.factor;
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (float& fj : f) {
    const double base = fj;
    double scaled = base;
    if (r.type == RopeScaling::Type::linear) {
      scaled = base / s;
    } else if (r.type == RopeScaling::Type::llama3) {
      const double context = static_cast<double>(r.original_max_position_embeddings);
      const double wavelength = kTwoPi / base;
      const double short_wavelength = context / r.high_freq_factor;
      const double long_wavelength = context / r.low_freq_factor;
      if (wavelength > long_wavelength) {
        scaled = base / s;
      } else if (wavelength >= short_wavelength) {
        const double mu = (context / wavelength - r.low_freq_factor) /
                          (static_cast<double>(r.high_freq_factor) - r.low_freq_factor);
        scaled = (1 - mu) * base / s + mu * base;
      }
    }
    fj = static_cast<float>(scaled);
  }
  return f;
}

struct LlamaOptions {
  // Longest sequence any session may hold (RoPE tables are built for it); 0 = min(config's
  // max_position_embeddings, 4096).
  std::size_t max_context = 0;
  // Copy the weights out of the file mapping into huge-page memory (faster decode; costs the
  // copy at load and the weights' size in anonymous memory). false: use the mapping in place.
  bool copy_weights = true;
  // Scan every weight for NaN and infinities at load (one read of the whole checkpoint). Off,
  // only the norms and the head are scanned; a non-finite value elsewhere is then caught when
  // it reaches the logits (docs/design.md §11).
  bool check_all_weights = false;
  // How the linear weights are held: as the file stores them, quantized at load to q8_0
  // (1.125 bytes per weight) or q4_0 (0.625), as bf16 on the bf16 dot product (bf16_dot,
  // docs/design.md §15), or as q8_0 on the int8 dot product (q8_0_dot, docs/design.md §16):
  // the layers' matrices and an untied head (docs/design.md §13). All need every such
  // matrix's cols % 32 == 0.
  WeightFormat weights = WeightFormat::file;
};

class LlamaModel {
  struct Private {};  // construction goes through load()/create(): the model is always shared

 public:
  // Reads dir/config.json and the safetensors checkpoint (single file or sharded) of dir.
  static std::shared_ptr<const LlamaModel> load(const std::filesystem::path& dir,
                                                LlamaOptions opts = {}) {
    LlamaConfig config = load_llama_config(dir / "config.json");
    return create(std::move(config), io::Checkpoint::open(dir), opts);
  }
  static std::shared_ptr<const LlamaModel> create(LlamaConfig config, io::Checkpoint ckpt,
                                                  LlamaOptions opts = {}) {
    return std::make_shared<const LlamaModel>(Private{}, std::move(config), std::move(ckpt), opts);
  }

  LlamaModel(Private, LlamaConfig config, io::Checkpoint ckpt, LlamaOptions opts)
      : config_(std::move(config)),
        ckpt_(std::move(ckpt)),
        weights_(LlamaWeights::load(ckpt_, config_)) {
    if (opts.check_all_weights) LlamaWeights::check_all_finite(ckpt_);
    if (opts.weights == WeightFormat::q8_0)
      arena_ = weights_.quantize_to_arena<formats::Q8_0>(ckpt_, opts.copy_weights);
    else if (opts.weights == WeightFormat::q4_0)
      arena_ = weights_.quantize_to_arena<formats::Q4_0>(ckpt_, opts.copy_weights);
    else if (opts.weights == WeightFormat::bf16_dot)
      arena_ = weights_.quantize_to_arena<formats::BF16Dot>(ckpt_, opts.copy_weights);
    else if (opts.weights == WeightFormat::q8_0_dot)
      arena_ = weights_.quantize_to_arena<formats::Q8_0Dot>(ckpt_, opts.copy_weights);
    else if (opts.weights == WeightFormat::q4_0_dot)
      arena_ = weights_.quantize_to_arena<formats::Q4_0Dot>(ckpt_, opts.copy_weights);
    else if (opts.copy_weights)
      arena_ = weights_.copy_to_arena(ckpt_);
    const std::size_t cfg_max = config_.max_position_embeddings;
    max_context_ = opts.max_context ? opts.max_context : std::min<std::size_t>(cfg_max, 4096);
    if (max_context_ > cfg_max)
      throw Error("max_context " + std::to_string(max_context_) +
                  " exceeds the model's max_position_embeddings " + std::to_string(cfg_max));
    {
      // RoPE tables and one session's KV cache and attention scores at max_context, checked
      // against the machine's memory before the tables are allocated.
      const LlamaConfig& c = config_;
      std::size_t per_pos = 0, total = 0;
      const bool overflow =
          __builtin_mul_overflow(c.num_hidden_layers, 2 * c.num_key_value_heads * c.head_dim,
                                 &per_pos) ||
          __builtin_add_overflow(per_pos, c.head_dim + c.num_attention_heads, &per_pos) ||
          __builtin_mul_overflow(per_pos, sizeof(float), &per_pos) ||
          __builtin_mul_overflow(per_pos, max_context_, &total);
      const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
      const double memory = pages > 0 && page > 0 ? double(pages) * double(page) : 0.0;
      if (overflow || (memory > 0 && double(total) > memory))
        throw Error("max_context " + std::to_string(max_context_) + " needs " +
                    (overflow ? std::string("more bytes than size_t holds")
                              : std::to_string(total / (1 << 20)) + " MiB") +
                    " (RoPE tables, KV cache and attention scores: " + std::to_string(per_pos) +
                    " bytes per position), more than this machine's " +
                    std::to_string(static_cast<unsigned long long>(memory) / (1 << 20)) +
                    " MiB of memory; lower LlamaOptions::max_context (--context)");
    }
    const std::size_t half = config_.head_dim / 2;
    rope_cos_.resize(max_context_ * half);
    rope_sin_.resize(rope_cos_.size());
    const std::vector<float> inv_freq = rope_frequencies(config_);
    for (std::size_t p = 0; p < max_context_; ++p)
      kernels::rope_table(rope_cos_.data() + p * half, rope_sin_.data() + p * half,
                          inv_freq.data(), half, p);
  }
  // The weights point into ckpt_'s mappings or arena_: the object never moves.
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  const LlamaConfig& config() const noexcept { return config_; }
  const LlamaWeights& weights() const noexcept { return weights_; }
  std::size_t num_layers() const noexcept { return config_.num_hidden_layers; }
  std::size_t hidden_size() const noexcept { return config_.hidden_size; }
  std::size_t vocab_size() const noexcept { return config_.vocab_size; }
  std::size_t max_context() const noexcept { return max_context_; }
  std::size_t q_dim() const noexcept { return config_.num_attention_heads * config_.head_dim; }
  std::size_t kv_dim() const noexcept { return config_.num_key_value_heads * config_.head_dim; }

  // RoPE cos/sin of position pos (head_dim/2 each).
  const float* cos_at(std::size_t pos) const noexcept {
    return rope_cos_.data() + pos * (config_.head_dim / 2);
  }
  const float* sin_at(std::size_t pos) const noexcept {
    return rope_sin_.data() + pos * (config_.head_dim / 2);
  }

  // x(hidden) := embedding row of token.
  void embed(int token, float* x) const {
    check_token(token);
    weights_.embed.row(static_cast<std::size_t>(token), x);
  }
  void check_token(int token) const {
    if (token < 0 || static_cast<std::size_t>(token) >= config_.vocab_size)
      throw Error("token id " + std::to_string(token) + " is outside the vocabulary [0, " +
                  std::to_string(config_.vocab_size) + ")");
  }

  // Bytes of weights one generated token reads with the full model (the memory-bound cost).
  std::size_t weight_bytes_per_token() const noexcept { return weights_.bytes_per_token(); }
  // Bytes the weights occupy in memory (the copy, the q8_0 arena, or the mapped tensors in place).
  std::size_t resident_weight_bytes() const { return weights_.bytes_in_memory(); }

 private:
  LlamaConfig config_;
  io::Checkpoint ckpt_;  // owns the mmaps the weights point into
  LlamaWeights weights_;
  WeightArena arena_;    // the weights' copy (copy_weights) and their q8_0 quantization
  std::size_t max_context_ = 0;
  std::vector<float> rope_cos_, rope_sin_;  // (max_context, head_dim/2)
};

}  // namespace calm
