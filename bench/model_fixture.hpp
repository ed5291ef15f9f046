// Random-weight Llama checkpoints for benchmarks, written once to a cache directory
// ($CALM_BENCH_DIR, default /tmp/calm-bench) and reused. The weights are random: decode speed
// does not depend on their values, only on their shapes and dtype. Never committed.
#pragma once

#include <calm/core/dtype.hpp>
#include <calm/io/atomic_file.hpp>
#include <calm/io/safetensors_writer.hpp>
#include <calm/io/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace calm::bench {

struct ModelShape {
  std::string name;
  std::size_t hidden, intermediate, layers, heads, kv_heads, vocab;
  bool tied = false;
};

// TinyLlama-1.1B's shape: memory-bound on this machine (2.2 GB of bf16 weights per token).
inline const ModelShape kTinyLlama{"tinyllama", 2048, 5632, 22, 32, 4, 32000};
// A small model whose weights (~20 MB) fit in the last-level cache of larger machines.
inline const ModelShape kSmall{"small", 512, 1408, 8, 8, 4, 2048};

inline std::filesystem::path bench_model_dir(const ModelShape& s) {
  const char* env = std::getenv("CALM_BENCH_DIR");
  const std::filesystem::path root = env ? env : "/tmp/calm-bench";
  const std::filesystem::path dir = root / (s.name + "-bf16");
  if (std::filesystem::exists(dir / "model.safetensors")) return dir;
  std::filesystem::create_directories(dir);

  std::uint64_t state = 0x9E3779B97F4A7C15ull;
  auto random_bf16 = [&](std::size_t n, float scale) {  // xorshift: fast, deterministic
    std::vector<bf16> v(n);
    for (auto& x : v) {
      state ^= state << 13, state ^= state >> 7, state ^= state << 17;
      const float u = static_cast<float>(state >> 40) * 0x1.0p-24f * 2.0f - 1.0f;
      x = to_bf16(u * scale);
    }
    return v;
  };
  const std::size_t hd = s.hidden / s.heads, kv = s.kv_heads * hd;
  std::vector<std::vector<bf16>> storage;
  std::vector<io::TensorToWrite> tensors;
  auto add = [&](std::string name, std::vector<std::size_t> shape, float scale, bool norm = false) {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    storage.push_back(norm ? std::vector<bf16>(n, to_bf16(1.0f)) : random_bf16(n, scale));
    tensors.push_back({std::move(name), DType::bf16, std::move(shape),
                       std::as_bytes(std::span(storage.back()))});
  };
  storage.reserve(4 + 9 * s.layers);
  add("model.embed_tokens.weight", {s.vocab, s.hidden}, 0.05f);
  for (std::size_t i = 0; i < s.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(p + "input_layernorm.weight", {s.hidden}, 0, true);
    add(p + "self_attn.q_proj.weight", {s.hidden, s.hidden}, 0.03f);
    add(p + "self_attn.k_proj.weight", {kv, s.hidden}, 0.03f);
    add(p + "self_attn.v_proj.weight", {kv, s.hidden}, 0.03f);
    add(p + "self_attn.o_proj.weight", {s.hidden, s.hidden}, 0.03f);
    add(p + "post_attention_layernorm.weight", {s.hidden}, 0, true);
    add(p + "mlp.gate_proj.weight", {s.intermediate, s.hidden}, 0.03f);
    add(p + "mlp.up_proj.weight", {s.intermediate, s.hidden}, 0.03f);
    add(p + "mlp.down_proj.weight", {s.hidden, s.intermediate}, 0.02f);
  }
  add("model.norm.weight", {s.hidden}, 0, true);
  if (!s.tied) add("lm_head.weight", {s.vocab, s.hidden}, 0.03f);
  io::write_safetensors(dir / "model.safetensors", tensors);

  const nlohmann::json config = {
      {"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
      {"hidden_size", s.hidden},               {"intermediate_size", s.intermediate},
      {"num_hidden_layers", s.layers},         {"num_attention_heads", s.heads},
      {"num_key_value_heads", s.kv_heads},     {"vocab_size", s.vocab},
      {"rms_norm_eps", 1e-5},                  {"rope_theta", 10000.0},
      {"max_position_embeddings", 2048},       {"tie_word_embeddings", s.tied},
      {"bos_token_id", 1},                     {"eos_token_id", 2},
      {"hidden_act", "silu"},                  {"torch_dtype", "bfloat16"}};
  const std::string text = config.dump(2);
  io::write_atomically(dir / "config.json", [&](std::FILE* f) {
    io::write_all(f, text.data(), text.size(), dir / "config.json");
  });
  return dir;
}

// The bundled model (models/shakespeare-8l) and the first `count` prompts of its test split,
// tokenized: the real prompts for benchmarks whose exits depend on trained weights.
inline const std::filesystem::path kBundled = std::filesystem::path(CALM_MODELS) / "shakespeare-8l";

inline std::vector<std::vector<int>> bundled_test_prompts(std::size_t count) {
  const calm::Tokenizer tok = calm::Tokenizer::load(kBundled / "tokenizer.model");
  std::ifstream in(kBundled / "data" / "test.jsonl");
  std::vector<std::vector<int>> out;
  for (std::string line; out.size() < count && std::getline(in, line);)
    if (!line.empty())
      out.push_back(tok.encode(nlohmann::json::parse(line).at("prompt").get<std::string>()));
  return out;
}

}  // namespace calm::bench
