// Random-weight Llama checkpoints at named real shapes, for benchmarks whose speed does not
// depend on the weights' values (only on their shapes and dtype), and prompts to decode.
//
//   const auto dir = calm::bench::random_checkpoint(calm::bench::kTinyLlama);  // written once
//   const auto model = calm::LlamaModel::load(dir);
//
// Checkpoints are bf16 Hugging Face folders (config.json + model.safetensors) written once to
// $CALM_BENCH_DIR (default /tmp/calm-bench) and reused while their config.json is the one this
// header writes. Exits of a random model mean nothing: benchmark measures and thresholds on a
// trained model (the bundled models/shakespeare-8l), and use these for what a layer, a check,
// a propagation or the head costs at a real size, or for fixed exits (StaticExit).
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "calm/confidence/exit_classifier.hpp"
#include "calm/core/dtype.hpp"
#include "calm/core/error.hpp"
#include "calm/io/atomic_file.hpp"
#include "calm/io/prompts.hpp"
#include "calm/io/safetensors_writer.hpp"

namespace calm::bench {

// A Llama model's shape: what config.json says, minus what does not change the cost.
struct ModelShape {
  std::string name;  // the fixture's folder name (with "-bf16")
  std::size_t hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0;
  std::size_t head_dim = 0;  // 0: hidden / heads (config.json then has no "head_dim")
  bool tied = false;         // tie_word_embeddings: no lm_head.weight
  double rope_theta = 10000.0;
  std::size_t max_position_embeddings = 2048;
  nlohmann::json rope_scaling = nullptr;  // config.json's object, or null (none)

  std::size_t head_size() const noexcept { return head_dim ? head_dim : hidden / heads; }
  // The same shape with another number of layers (and folder name): a check or one layer costs
  // the same in a 1-layer copy, which is much cheaper to write.
  ModelShape with_layers(std::size_t n) const {
    ModelShape s = *this;
    s.layers = n;
    s.name += "-" + std::to_string(n) + "l";
    return s;
  }
  // Bytes of bf16 weights one decoded token reads: every layer, the final norm and the head.
  double weight_bytes_per_token() const noexcept {
    const double d = double(hidden), q = double(heads * head_size()),
                 kv = double(kv_heads * head_size()), f = double(intermediate);
    const double layer = d * q * 2 + 2 * d * kv + 3 * d * f + 2 * d;
    return 2.0 * (double(layers) * layer + d + double(vocab) * d);
  }
};

// The bundled model's shape (models/shakespeare-8l: 8 layers, 7 MB of bf16, in cache).
inline const ModelShape kShakespeare8l{.name = "shakespeare-8l", .hidden = 192,
                                       .intermediate = 512, .layers = 8, .heads = 6,
                                       .kv_heads = 2, .vocab = 1024,
                                       .max_position_embeddings = 256};
// A small model whose weights (~49 MB) fit in the last-level cache of larger machines.
inline const ModelShape kSmall{.name = "small", .hidden = 512, .intermediate = 1408, .layers = 8,
                               .heads = 8, .kv_heads = 4, .vocab = 2048};
// TinyLlama-1.1B: 2.2 GB of bf16 weights read per token, memory-bound on a CPU.
inline const ModelShape kTinyLlama{.name = "tinyllama", .hidden = 2048, .intermediate = 5632,
                                   .layers = 22, .heads = 32, .kv_heads = 4, .vocab = 32000};
// Llama-3.2-1B: tied embeddings, a 128256-token vocabulary (the head alone is 0.5 GB of bf16,
// more than four layers) and llama3 RoPE scaling (docs/design.md §10).
inline const ModelShape kLlama32_1B{
    .name = "llama-3.2-1b", .hidden = 2048, .intermediate = 8192, .layers = 16, .heads = 32,
    .kv_heads = 8, .vocab = 128256, .head_dim = 64, .tied = true, .rope_theta = 500000.0,
    .max_position_embeddings = 131072,
    .rope_scaling = {{"rope_type", "llama3"},
                     {"factor", 32.0},
                     {"low_freq_factor", 1.0},
                     {"high_freq_factor", 4.0},
                     {"original_max_position_embeddings", 8192}}};

// Llama-2-7B: 13.5 GB of bf16 weights, the largest shape a 24 GB machine decodes from memory.
inline const ModelShape kLlama2_7B{.name = "llama-2-7b", .hidden = 4096, .intermediate = 11008,
                                   .layers = 32, .heads = 32, .kv_heads = 32, .vocab = 32000,
                                   .max_position_embeddings = 4096};

// Every named shape, for programs that take a shape by name.
inline std::span<const ModelShape* const> named_shapes() {
  static const ModelShape* const all[] = {&kShakespeare8l, &kSmall, &kTinyLlama, &kLlama32_1B,
                                          &kLlama2_7B};
  return all;
}
inline const ModelShape& named_shape(std::string_view name) {
  for (const ModelShape* s : named_shapes())
    if (s->name == name) return *s;
  std::string known;
  for (const ModelShape* s : named_shapes()) known += (known.empty() ? "" : ", ") + s->name;
  throw Error("calm::bench::named_shape: no shape '" + std::string(name) + "' (known: " + known +
              ")");
}

// config.json of a random checkpoint of this shape.
inline nlohmann::json checkpoint_config(const ModelShape& s) {
  nlohmann::json c = {
      {"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
      {"hidden_size", s.hidden},               {"intermediate_size", s.intermediate},
      {"num_hidden_layers", s.layers},         {"num_attention_heads", s.heads},
      {"num_key_value_heads", s.kv_heads},     {"vocab_size", s.vocab},
      {"rms_norm_eps", 1e-5},                  {"rope_theta", s.rope_theta},
      {"max_position_embeddings", s.max_position_embeddings},
      {"tie_word_embeddings", s.tied},         {"bos_token_id", 1},
      {"eos_token_id", 2},                     {"hidden_act", "silu"},
      {"torch_dtype", "bfloat16"}};
  if (s.head_dim) c["head_dim"] = s.head_dim;
  if (!s.rope_scaling.is_null()) c["rope_scaling"] = s.rope_scaling;
  return c;
}

// Where random checkpoints are kept: $CALM_BENCH_DIR, default /tmp/calm-bench.
inline std::filesystem::path fixture_root() {
  const char* env = std::getenv("CALM_BENCH_DIR");
  return env && *env ? std::filesystem::path(env) : std::filesystem::path("/tmp/calm-bench");
}

// The folder of a random bf16 checkpoint of `shape` under `root`, written on first use
// (model.safetensors, then config.json: a folder whose config.json is this shape's is complete).
// Deterministic weights (xorshift), uniform with the scales of a trained model's order of
// magnitude so activations stay finite; norms are 1.
inline std::filesystem::path random_checkpoint(const ModelShape& s,
                                               const std::filesystem::path& root = fixture_root()) {
  if (s.hidden == 0 || s.layers == 0 || s.heads == 0 || s.kv_heads == 0 || s.vocab < 2 ||
      s.intermediate == 0 || s.heads % s.kv_heads != 0)
    throw Error("calm::bench::random_checkpoint: shape '" + s.name + "' is not a Llama shape");
  const std::filesystem::path dir = root / (s.name + "-bf16");
  const std::string config = checkpoint_config(s).dump(2);
  {
    std::ifstream in(dir / "config.json", std::ios::binary);
    const std::string existing{std::istreambuf_iterator<char>(in), {}};
    if (in && existing == config && std::filesystem::exists(dir / "model.safetensors")) return dir;
  }
  std::filesystem::create_directories(dir);
  std::filesystem::remove(dir / "config.json");  // until the weights are complete

  std::uint64_t state = 0x9E3779B97F4A7C15ull;
  const auto random_bf16 = [&](std::size_t n, float scale) {  // xorshift: fast, deterministic
    std::vector<bf16> v(n);
    for (auto& x : v) {
      state ^= state << 13, state ^= state >> 7, state ^= state << 17;
      const float u = static_cast<float>(state >> 40) * 0x1.0p-24f * 2.0f - 1.0f;
      x = to_bf16(u * scale);
    }
    return v;
  };
  const std::size_t q = s.heads * s.head_size(), kv = s.kv_heads * s.head_size();
  std::vector<std::vector<bf16>> storage;
  std::vector<io::TensorToWrite> tensors;
  const auto add = [&](std::string name, std::vector<std::size_t> shape, float scale,
                       bool norm = false) {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    storage.push_back(norm ? std::vector<bf16>(n, to_bf16(1.0f)) : random_bf16(n, scale));
    tensors.push_back({std::move(name), DType::bf16, std::move(shape),
                       std::as_bytes(std::span(storage.back()))});
  };
  storage.reserve(3 + 9 * s.layers);  // the spans above point into storage: no reallocation
  add("model.embed_tokens.weight", {s.vocab, s.hidden}, 0.05f);
  for (std::size_t i = 0; i < s.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "input_layernorm.weight", {s.hidden}, 0, true);
    add(p + "self_attn.q_proj.weight", {q, s.hidden}, 0.03f);
    add(p + "self_attn.k_proj.weight", {kv, s.hidden}, 0.03f);
    add(p + "self_attn.v_proj.weight", {kv, s.hidden}, 0.03f);
    add(p + "self_attn.o_proj.weight", {s.hidden, q}, 0.03f);
    add(p + "post_attention_layernorm.weight", {s.hidden}, 0, true);
    add(p + "mlp.gate_proj.weight", {s.intermediate, s.hidden}, 0.03f);
    add(p + "mlp.up_proj.weight", {s.intermediate, s.hidden}, 0.03f);
    add(p + "mlp.down_proj.weight", {s.hidden, s.intermediate}, 0.02f);
  }
  add("model.norm.weight", {s.hidden}, 0, true);
  if (!s.tied) add("lm_head.weight", {s.vocab, s.hidden}, 0.03f);
  io::write_safetensors(dir / "model.safetensors", tensors);
  io::write_atomically(dir / "config.json", [&](std::FILE* f) {
    io::write_all(f, config.data(), config.size(), dir / "config.json");
  });
  return dir;
}

// An exit classifier with random weights for hidden size `hidden`, of either kind (the mlp with
// `units` hidden units): what a check of calm::ExitClassifier costs does not depend on its values.
inline ExitClassifier random_exit_classifier(std::size_t hidden, std::uint32_t seed = 7,
                                             ExitClassifierKind kind = ExitClassifierKind::linear,
                                             std::size_t units = 32) {
  const auto values = [&](std::size_t n) {
    std::vector<float> v(n);
    for (float& x : v) {
      seed = seed * 1664525u + 1013904223u;
      x = (static_cast<float>(seed >> 8) * 0x1.0p-24f - 0.5f) * 0.1f;
    }
    return v;
  };
  if (kind == ExitClassifierKind::mlp)
    return ExitClassifier::mlp(hidden, values(units * (hidden + kExitClassifierExtras)),
                               values(units), values(units), 0.0f);
  const float bias[2] = {0.0f, 0.0f};
  return ExitClassifier(values(2 * hidden), std::span<const float, 2>(bias));
}

// The first `count` prompts of a prompt file (calm/io/prompts.hpp: *.jsonl {"prompt": ...} or
// one per line), tokenized by any `encode(text, add_bos) -> std::vector<int>` (calm::Tokenizer),
// each leaving room for max_new_tokens within max_context.
template <class TokenizerT>
std::vector<std::vector<int>> encode_prompt_file(const std::filesystem::path& file,
                                                 const TokenizerT& tokenizer, std::size_t count,
                                                 std::size_t max_new_tokens,
                                                 std::size_t max_context) {
  io::PromptFile prompts = io::read_prompt_file(file);
  if (prompts.prompts.size() > count) prompts.prompts.resize(count);
  return io::encode_prompts(prompts, tokenizer, max_new_tokens, max_context).prompts;
}

// Copy-heavy prompts for n-gram drafts (calm::PromptLookup): each passage of a prompt file
// (prompt + reference + a blank line) written `copies` times, so that a model that learnt the
// text may continue by copying it once more. The first `count` that leave room for
// max_new_tokens within max_context, with BOS.
template <class TokenizerT>
std::vector<std::vector<int>> copy_heavy_prompts(const std::filesystem::path& file,
                                                 const TokenizerT& tokenizer, std::size_t count,
                                                 std::size_t copies, std::size_t max_new_tokens,
                                                 std::size_t max_context) {
  std::vector<std::vector<int>> out;
  for (const io::PromptRecord& r : io::read_prompt_file(file).prompts) {
    if (out.size() == count) break;
    const std::string passage = r.prompt + r.reference.value_or("") + "\n\n";
    std::string text;
    for (std::size_t i = 0; i < copies; ++i) text += passage;
    std::vector<int> tokens = tokenizer.encode(text, /*add_bos=*/true);
    if (tokens.size() + max_new_tokens <= max_context) out.push_back(std::move(tokens));
  }
  return out;
}

// `count` prompts of `length` token ids in [3, vocab), deterministic: for random checkpoints,
// whose speed does not depend on which tokens are fed.
inline std::vector<std::vector<int>> synthetic_prompts(std::size_t count, std::size_t length,
                                                       std::size_t vocab,
                                                       std::uint32_t seed = 1) {
  if (vocab <= 3) throw Error("calm::bench::synthetic_prompts: vocab must exceed 3");
  std::vector<std::vector<int>> out(count, std::vector<int>(length));
  for (auto& p : out)
    for (int& t : p) {
      seed = seed * 1664525u + 1013904223u;
      t = 3 + static_cast<int>((seed >> 8) % (vocab - 3));
    }
  return out;
}

}  // namespace calm::bench
