// LlamaConfig: the model's blueprint, read from a Hugging Face config.json.
//
// Defaults follow transformers' LlamaConfig. calm refuses what it does not implement: every
// key of config.json is either read and checked here or on an explicit list of metadata that
// does not change the computation; any other key is an error naming it (docs/design.md §1).
#pragma once

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "calm/core/error.hpp"
#include "calm/io/json.hpp"
#include "calm/io/mapped_file.hpp"

namespace calm {

// config.json's rope_scaling: how the rotary frequencies are rescaled for contexts longer than
// the model was pre-trained for (docs/design.md §10).
struct RopeScaling {
  enum class Type { none, linear, llama3 };
  Type type = Type::none;
  float factor = 1.0f;            // s: linear divides every frequency by s; llama3 the low ones
  float low_freq_factor = 1.0f;   // llama3 only (a)
  float high_freq_factor = 4.0f;  // llama3 only (b)
  std::size_t original_max_position_embeddings = 0;  // llama3 only (C)
};

struct LlamaConfig {
  std::size_t hidden_size;          // d: width of the residual stream
  std::size_t intermediate_size;    // width of the SwiGLU MLP
  std::size_t num_hidden_layers;    // L
  std::size_t num_attention_heads;  // query heads
  std::size_t num_key_value_heads;  // key/value heads (GQA); divides num_attention_heads
  std::size_t head_dim;             // per head; q_proj is [heads * head_dim, hidden]
  std::size_t vocab_size;
  std::size_t max_position_embeddings;  // longest sequence the model was trained for
  float rms_norm_eps;
  float rope_theta;
  RopeScaling rope_scaling;  // type none: plain RoPE
  bool tie_word_embeddings;  // lm_head.weight absent, the embedding is reused
  int bos_token_id;
  int eos_token_id;                // the first of eos_token_ids
  std::vector<int> eos_token_ids;  // HF allows a list; generation stops at any of them
};

// The most decoder layers a config.json may declare (the largest published Llama models have
// about 130); also the largest first_exit / interval a calibration file may name.
inline constexpr std::size_t kMaxConfigLayers = std::size_t{1} << 16;

namespace detail {

// Keys that describe the file, training or other frameworks, and leave inference unchanged.
inline constexpr std::string_view kHarmlessConfigKeys[] = {
    "_name_or_path",
    "transformers_version",
    "torch_dtype",
    "initializer_range",
    "use_cache",
    "pad_token_id",
    "attention_dropout",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "torchscript",
    "tokenizer_class",
};
// Keys that parse_llama_config reads and checks.
inline constexpr std::string_view kReadConfigKeys[] = {
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "hidden_act",
    "rope_scaling",
    "attention_bias",
    "mlp_bias",
    "pretraining_tp",
    "model_type",
    "architectures",
};

class ConfigReader {
 public:
  // prefix: the path of an inner object's keys in messages (e.g. "rope_scaling.").
  ConfigReader(const nlohmann::json& j, std::string_view source, std::string_view prefix = "")
      : j_(j), source_(source), prefix_(prefix) {}

  [[noreturn]] void fail(std::string_view key, const std::string& what) const {
    throw Error("'" + source_ + "': key '" + prefix_ + std::string(key) + "' " + what);
  }
  [[noreturn]] void fail_type(std::string_view key, const char* expected,
                              const nlohmann::json& v) const {
    fail(key, std::string("must be ") + expected + ", found " + io::describe_json(v));
  }

  bool has(std::string_view key) const { return j_.contains(key); }
  const nlohmann::json& at(std::string_view key) const { return j_.find(key).value(); }

  // A JSON integer >= 1 (a float such as 4096.0 is refused: sizes are counts).
  std::size_t positive_size(std::string_view key) const {
    if (!has(key)) fail(key, "is required");
    return positive_size_value(key, at(key));
  }
  std::size_t positive_size(std::string_view key, std::size_t fallback) const {
    return has(key) ? positive_size_value(key, at(key)) : fallback;
  }
  std::size_t positive_size_value(std::string_view key, const nlohmann::json& v) const {
    if (v.is_number_unsigned()) {
      const auto n = v.get<std::uint64_t>();
      if (n >= 1) return static_cast<std::size_t>(n);
    } else if (v.is_number_integer()) {
      const auto n = v.get<std::int64_t>();
      if (n >= 1) return static_cast<std::size_t>(n);
    } else {
      fail_type(key, "a positive integer", v);
    }
    fail(key, "must be positive, found " + io::json_excerpt(v));
  }

  // A finite positive number that stays finite and positive as a float.
  float positive_float(std::string_view key, float fallback) const {
    if (!has(key)) return fallback;
    const nlohmann::json& v = at(key);
    if (!v.is_number()) fail_type(key, "a positive number", v);
    const double d = v.get<double>();
    const auto f = static_cast<float>(d);
    if (!std::isfinite(d) || !(d > 0) || !std::isfinite(f) || !(f > 0)) {
      fail(key,
           "must be a finite positive number representable as float, found " + io::json_excerpt(v));
    }
    return f;
  }

  bool boolean(std::string_view key, bool fallback) const {
    if (!has(key)) return fallback;
    const nlohmann::json& v = at(key);
    if (!v.is_boolean()) fail_type(key, "true or false", v);
    return v.get<bool>();
  }

  int token_id_value(std::string_view key, const nlohmann::json& v, std::size_t vocab) const {
    if (!v.is_number_integer()) fail_type(key, "a token id (integer)", v);
    if (v.is_number_unsigned() ? v.get<std::uint64_t>() >= vocab
                               : (v.get<std::int64_t>() < 0 ||
                                  static_cast<std::uint64_t>(v.get<std::int64_t>()) >= vocab)) {
      fail(key, "must be a token id in [0, vocab_size = " + std::to_string(vocab) + "), found " +
                    io::json_excerpt(v));
    }
    return static_cast<int>(v.get<std::int64_t>());
  }

 private:
  const nlohmann::json& j_;
  std::string source_;
  std::string prefix_;
};

// rope_scaling as transformers reads it: the type under "rope_type" (or the older "type"), and
// exactly the parameters that type uses; anything else is refused by name.
inline RopeScaling parse_rope_scaling(const nlohmann::json& v, std::string_view source) {
  std::string where = "'";  // appended, not "'" + ...: g++ 12 warns falsely (-Wrestrict) there
  where.append(source).append("': key 'rope_scaling'");
  if (!v.is_object())
    throw Error(where + " must be an object or null, found " + io::describe_json(v));
  const ConfigReader r(v, source, "rope_scaling.");
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    if (!r.has(key)) continue;
    const nlohmann::json& t = r.at(key);
    if (!t.is_string()) r.fail_type(key, "a string", t);
    if (!type.empty() && type != t.get<std::string>())
      throw Error(where + " names two types, " + io::json_excerpt(v));
    type = t.get<std::string>();
  }
  if (type.empty()) throw Error(where + " has no \"rope_type\"");
  RopeScaling s;
  std::vector<std::string_view> used = {"rope_type", "type", "factor"};
  if (type == "linear") {
    s.type = RopeScaling::Type::linear;
  } else if (type == "llama3") {
    s.type = RopeScaling::Type::llama3;
    used.insert(used.end(),
                {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"});
  } else {
    throw Error(where + ": rope_type \"" + type +
                "\" is not supported (calm implements \"linear\" and \"llama3\")");
  }
  for (const auto& [key, value] : v.items()) {
    if (std::find(used.begin(), used.end(), key) == used.end())
      r.fail(key, "is not a parameter of rope_type \"" + type + "\" that calm implements");
  }
  if (!r.has("factor")) r.fail("factor", "is required");
  s.factor = r.positive_float("factor", 1.0f);
  // A stretch of the wavelengths: transformers (rope_config_validation) warns below 1 too.
  // A smaller one multiplies the frequencies; 1e-45 makes them infinite at the first token.
  if (!(s.factor >= 1.0f))
    r.fail("factor", "must be at least 1, found " + io::json_excerpt(r.at("factor")));
  if (s.type == RopeScaling::Type::llama3) {
    for (const char* key : {"low_freq_factor", "high_freq_factor"})
      if (!r.has(key)) r.fail(key, "is required");
    s.low_freq_factor = r.positive_float("low_freq_factor", 1.0f);
    s.high_freq_factor = r.positive_float("high_freq_factor", 4.0f);
    s.original_max_position_embeddings = r.positive_size("original_max_position_embeddings");
    if (!(s.low_freq_factor < s.high_freq_factor)) {
      r.fail("high_freq_factor", "must exceed low_freq_factor (" +
                                     io::json_excerpt(r.at("low_freq_factor")) +
                                     "): the blend between them divides by their difference");
    }
  }
  return s;
}

}  // namespace detail

inline LlamaConfig parse_llama_config(const nlohmann::json& j, std::string_view source) {
  if (!j.is_object()) {
    throw Error("'" + std::string(source) + "' is not a JSON object (found " +
                io::describe_json(j) + ")");
  }
  const detail::ConfigReader r(j, source);
  for (const auto& item : j.items()) {
    const std::string& key = item.key();  // a named variable: clang 14 cannot capture bindings
    const auto known = [&](const auto& list) {
      for (std::string_view k : list) {
        if (k == key) return true;
      }
      return false;
    };
    if (!known(detail::kReadConfigKeys) && !known(detail::kHarmlessConfigKeys)) {
      r.fail(key,
             "is not a setting calm implements or knows to be harmless; refusing to ignore it");
    }
  }

  // Settings that would change the computation in ways calm does not implement.
  if (r.has("model_type")) {
    const nlohmann::json& v = r.at("model_type");
    if (!v.is_string()) r.fail_type("model_type", "a string", v);
    if (v.get<std::string>() != "llama")
      r.fail("model_type", "must be \"llama\", found " + io::json_excerpt(v));
  }
  if (r.has("architectures")) {
    const nlohmann::json& v = r.at("architectures");
    if (!v.is_array()) r.fail_type("architectures", "an array of strings", v);
    bool llama = false;
    for (const nlohmann::json& a : v) {
      if (!a.is_string()) r.fail_type("architectures", "an array of strings", v);
      llama = llama || a.get<std::string>() == "LlamaForCausalLM";
    }
    if (!llama)
      r.fail("architectures", "must contain \"LlamaForCausalLM\", found " + io::json_excerpt(v));
  }
  if (r.has("hidden_act")) {
    const nlohmann::json& v = r.at("hidden_act");
    if (!v.is_string()) r.fail_type("hidden_act", "a string", v);
    if (v.get<std::string>() != "silu") {
      r.fail("hidden_act",
             "must be \"silu\" (calm implements SwiGLU only), found " + io::json_excerpt(v));
    }
  }
  if (r.boolean("attention_bias", false)) r.fail("attention_bias", "= true is not supported");
  if (r.boolean("mlp_bias", false)) r.fail("mlp_bias", "= true is not supported");
  if (r.positive_size("pretraining_tp", 1) != 1) {
    r.fail("pretraining_tp", "must be 1 (sliced tensor-parallel matmuls are not implemented)");
  }

  LlamaConfig c{};
  c.hidden_size = r.positive_size("hidden_size");
  c.intermediate_size = r.positive_size("intermediate_size");
  c.num_hidden_layers = r.positive_size("num_hidden_layers");
  c.num_attention_heads = r.positive_size("num_attention_heads");
  c.vocab_size = r.positive_size("vocab_size");
  c.num_key_value_heads = r.positive_size("num_key_value_heads", c.num_attention_heads);
  c.max_position_embeddings = r.positive_size("max_position_embeddings", 2048);
  c.rms_norm_eps = r.positive_float("rms_norm_eps", 1e-6f);
  c.rope_theta = r.positive_float("rope_theta", 10000.0f);
  // The base frequencies theta^(-2j/head_dim) (docs/design.md §10) fall from 1 with j only for
  // theta > 1; a tiny theta makes them overflow, which would surface at the first token.
  if (!(c.rope_theta > 1.0f))
    r.fail("rope_theta", "must be greater than 1, found " + io::json_excerpt(r.at("rope_theta")));
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  if (r.has("rope_scaling") && !r.at("rope_scaling").is_null())
    c.rope_scaling = detail::parse_rope_scaling(r.at("rope_scaling"), source);

  // Per-layer tables are sized by the layer count before the checkpoint is searched for the
  // layers' tensors: a count no model has is refused here, not by a failed allocation.
  if (c.num_hidden_layers > kMaxConfigLayers) {
    r.fail("num_hidden_layers", "= " + std::to_string(c.num_hidden_layers) +
                                    " exceeds calm's limit of " + std::to_string(kMaxConfigLayers) +
                                    " layers");
  }
  if (c.vocab_size > static_cast<std::size_t>(INT_MAX)) {
    r.fail("vocab_size", "is too large for int token ids");
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    r.fail("num_key_value_heads", "(" + std::to_string(c.num_key_value_heads) +
                                      ") must divide num_attention_heads (" +
                                      std::to_string(c.num_attention_heads) + ")");
  }
  if (r.has("head_dim")) {
    c.head_dim = r.positive_size("head_dim");
    if (c.head_dim % 2 != 0) {
      r.fail("head_dim", "(" + std::to_string(c.head_dim) + ") must be even for rotary embeddings");
    }
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      r.fail("hidden_size", "(" + std::to_string(c.hidden_size) +
                                ") must be divisible by num_attention_heads (" +
                                std::to_string(c.num_attention_heads) + ")");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
    if (c.head_dim % 2 != 0) {
      r.fail("hidden_size", "/ num_attention_heads = " + std::to_string(c.head_dim) +
                                " is the head dimension and must be even for rotary embeddings");
    }
  }

  // Weight sizes are computed from these numbers; a product that wraps around could match a
  // small tensor in the file, so every matrix size must fit in size_t.
  const auto fits = [](std::size_t a, std::size_t b, std::size_t c2 = 1) {
    std::size_t ab, abc;
    return !__builtin_mul_overflow(a, b, &ab) && !__builtin_mul_overflow(ab, c2, &abc) &&
           !__builtin_mul_overflow(abc, sizeof(float), &abc);
  };
  if (!fits(c.num_attention_heads, c.head_dim, c.hidden_size)) {
    r.fail("num_attention_heads", "* head_dim * hidden_size overflows the address space");
  }
  if (!fits(c.intermediate_size, c.hidden_size)) {
    r.fail("intermediate_size", "* hidden_size overflows the address space");
  }
  if (!fits(c.vocab_size, c.hidden_size))
    r.fail("vocab_size", "* hidden_size overflows the address space");
  if (!fits(c.max_position_embeddings, c.num_key_value_heads, c.head_dim)) {
    r.fail("max_position_embeddings",
           "* num_key_value_heads * head_dim overflows the address space");
  }

  c.bos_token_id = r.has("bos_token_id")
                       ? r.token_id_value("bos_token_id", r.at("bos_token_id"), c.vocab_size)
                       : 1;
  if (r.has("eos_token_id") && r.at("eos_token_id").is_array()) {
    const nlohmann::json& list = r.at("eos_token_id");
    if (list.empty()) r.fail("eos_token_id", "is an empty list");
    for (const nlohmann::json& id : list) {
      c.eos_token_ids.push_back(r.token_id_value("eos_token_id", id, c.vocab_size));
    }
  } else {
    c.eos_token_ids.push_back(
        r.has("eos_token_id") ? r.token_id_value("eos_token_id", r.at("eos_token_id"), c.vocab_size)
                              : 2);
  }
  c.eos_token_id = c.eos_token_ids.front();
  if (c.bos_token_id >= static_cast<int>(c.vocab_size) ||
      c.eos_token_id >= static_cast<int>(c.vocab_size)) {
    // Only reachable through the defaults (1 and 2) with a vocabulary of 1 or 2.
    r.fail(c.bos_token_id >= static_cast<int>(c.vocab_size) ? "bos_token_id" : "eos_token_id",
           "defaults past vocab_size = " + std::to_string(c.vocab_size));
  }
  return c;
}

// Reads and checks a config.json; errors name the file (and the key).
inline LlamaConfig load_llama_config(const std::filesystem::path& config_json) {
  const io::MappedFile file(config_json);
  const nlohmann::json j =
      io::parse_json_object(io::as_text(file.bytes()), "config", config_json.string());
  return parse_llama_config(j, config_json.string());
}

}  // namespace calm
