// parse_llama_config / load_llama_config: Hugging Face defaults, and every refused setting gives
// a calm::Error naming the file and the key.
#include "test_support.hpp"
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <string>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "calm/io/hf_config.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using calm::test::error_of;
using calm::test::contains;

// The smallest valid config: only the required keys.
json minimal() {
  return json{{"hidden_size", 64},
              {"intermediate_size", 172},
              {"num_hidden_layers", 4},
              {"num_attention_heads", 8},
              {"vocab_size", 320}};
}

// Parses minimal() with `key` set to `value`.
calm::LlamaConfig with(const std::string& key, const json& value) {
  json j = minimal();
  j[key] = value;
  return calm::parse_llama_config(j, "cfg.json");
}

}  // namespace

TEST_CASE("config: Hugging Face LlamaConfig defaults") {
  const calm::LlamaConfig c = calm::parse_llama_config(minimal(), "cfg.json");
  CHECK(c.hidden_size == 64);
  CHECK(c.intermediate_size == 172);
  CHECK(c.num_hidden_layers == 4);
  CHECK(c.num_attention_heads == 8);
  CHECK(c.num_key_value_heads == 8);  // defaults to num_attention_heads
  CHECK(c.head_dim == 8);             // hidden / heads
  CHECK(c.vocab_size == 320);
  CHECK(c.max_position_embeddings == 2048);
  CHECK(c.rms_norm_eps == 1e-6f);
  CHECK(c.rope_theta == 10000.0f);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK(c.bos_token_id == 1);
  CHECK(c.eos_token_id == 2);
  CHECK(c.eos_token_ids == std::vector<int>{2});
}

TEST_CASE("config: a full TinyLlama-style file") {
  const fs::path p =
      fs::temp_directory_path() / ("calm_test_config_" + std::to_string(::getpid()) + ".json");
  {
    std::ofstream out(p);
    out << R"({
      "_name_or_path": "x", "architectures": ["LlamaForCausalLM"], "attention_bias": false,
      "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": [2, 7], "hidden_act": "silu",
      "hidden_size": 128, "head_dim": 32, "initializer_range": 0.02, "intermediate_size": 344,
      "max_position_embeddings": 512, "mlp_bias": false, "model_type": "llama",
      "num_attention_heads": 4, "num_hidden_layers": 6, "num_key_value_heads": 2,
      "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 500000,
      "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.40.0",
      "use_cache": true, "vocab_size": 32000, "pad_token_id": null})";
  }
  const calm::LlamaConfig c = calm::load_llama_config(p);
  fs::remove(p);
  CHECK(c.num_key_value_heads == 2);
  CHECK(c.head_dim == 32);
  CHECK(c.max_position_embeddings == 512);
  CHECK(c.rms_norm_eps == 1e-5f);
  CHECK(c.rope_theta == 500000.0f);
  CHECK(c.tie_word_embeddings);
  CHECK(c.eos_token_id == 2);
  CHECK(c.eos_token_ids == std::vector<int>{2, 7});
}

TEST_CASE("config: rope_scaling linear and llama3 are read with every parameter checked") {
  const json llama3 = {{"factor", 32.0},
                       {"high_freq_factor", 4.0},
                       {"low_freq_factor", 1.0},
                       {"original_max_position_embeddings", 8192},
                       {"rope_type", "llama3"}};
  const calm::RopeScaling s = with("rope_scaling", llama3).rope_scaling;
  CHECK(s.type == calm::RopeScaling::Type::llama3);
  CHECK(s.factor == 32.0f);
  CHECK(s.low_freq_factor == 1.0f);
  CHECK(s.high_freq_factor == 4.0f);
  CHECK(s.original_max_position_embeddings == 8192);
  // Older configs name the type under "type".
  const calm::RopeScaling lin =
      with("rope_scaling", json{{"type", "linear"}, {"factor", 2.0}}).rope_scaling;
  CHECK(lin.type == calm::RopeScaling::Type::linear);
  CHECK(lin.factor == 2.0f);
  CHECK(with("rope_scaling", json{{"type", "linear"}, {"rope_type", "linear"}, {"factor", 2}})
            .rope_scaling.factor == 2.0f);

  const auto without = [&](const char* key) {
    json j = llama3;
    j.erase(key);
    return j;
  };
  const auto changed = [&](const char* key, const json& v) {
    json j = llama3;
    j[key] = v;
    return j;
  };
  CHECK_ERROR_NAMES(with("rope_scaling", without("rope_type")), "'rope_scaling'", "rope_type");
  CHECK_ERROR_NAMES(with("rope_scaling", without("factor")), "'rope_scaling.factor'",
                    "is required");
  CHECK_ERROR_NAMES(with("rope_scaling", without("low_freq_factor")),
                    "'rope_scaling.low_freq_factor'", "is required");
  CHECK_ERROR_NAMES(with("rope_scaling", without("original_max_position_embeddings")),
                    "'rope_scaling.original_max_position_embeddings'", "is required");
  CHECK_ERROR_NAMES(with("rope_scaling", changed("factor", -2.0)), "cfg.json",
                    "'rope_scaling.factor'", "positive");
  CHECK_ERROR_NAMES(with("rope_scaling", changed("factor", "32")), "'rope_scaling.factor'",
                    "number");
  CHECK_ERROR_NAMES(with("rope_scaling", changed("high_freq_factor", 1.0)),
                    "'rope_scaling.high_freq_factor'", "must exceed low_freq_factor");
  CHECK_ERROR_NAMES(with("rope_scaling", changed("original_max_position_embeddings", 8192.5)),
                    "'rope_scaling.original_max_position_embeddings'", "positive integer");
  CHECK_ERROR_NAMES(with("rope_scaling", changed("attention_factor", 1.0)),
                    "'rope_scaling.attention_factor'", "not a parameter", "llama3");
  CHECK_ERROR_NAMES(with("rope_scaling", json{{"type", "linear"}, {"factor", 2.0},
                                              {"low_freq_factor", 1.0}}),
                    "'rope_scaling.low_freq_factor'", "not a parameter", "linear");
  CHECK_ERROR_NAMES(with("rope_scaling", json{{"type", "linear"}, {"rope_type", "llama3"},
                                              {"factor", 2.0}}),
                    "'rope_scaling'", "two types");
  CHECK_ERROR_NAMES(with("rope_scaling", json::array({1, 2})), "'rope_scaling'",
                    "an object or null");
}

TEST_CASE("config: rope values outside a usable range are refused at load, naming the key") {
  // Such values pass as positive numbers but make the rotary frequencies overflow: the first
  // token then fails far from the cause.
  for (const double theta : {1e-45, 1e-3, 1.0}) {
    CAPTURE(theta);
    CHECK_ERROR_NAMES(with("rope_theta", theta), "cfg.json", "'rope_theta'", "greater than 1");
  }
  CHECK(with("rope_theta", 1e6).rope_theta == 1e6f);
  for (const char* type : {"linear", "llama3"})
    for (const double factor : {1e-45, 0.5}) {
      CAPTURE(type);
      CAPTURE(factor);
      json scaling = {{"rope_type", type}, {"factor", factor}};
      if (std::string(type) == "llama3")
        scaling.update({{"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 8192}});
      CHECK_ERROR_NAMES(with("rope_scaling", scaling), "cfg.json", "'rope_scaling.factor'",
                        "at least 1");
    }
}

// Llama-3.2-1B's config.json as published (every key it carries), and Llama-3.1-8B's.
TEST_CASE("config: the Llama 3.x configs load as published") {
  const json llama32_1b = json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
    "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256})");
  const calm::LlamaConfig c = calm::parse_llama_config(llama32_1b, "Llama-3.2-1B/config.json");
  CHECK(c.head_dim == 64);
  CHECK(c.num_key_value_heads == 8);
  CHECK(c.vocab_size == 128256);
  CHECK(c.tie_word_embeddings);
  CHECK(c.rope_scaling.type == calm::RopeScaling::Type::llama3);
  CHECK(c.bos_token_id == 128000);

  json llama31_8b = llama32_1b;
  llama31_8b.erase("head_dim");
  llama31_8b["hidden_size"] = 4096;
  llama31_8b["intermediate_size"] = 14336;
  llama31_8b["num_hidden_layers"] = 32;
  llama31_8b["tie_word_embeddings"] = false;
  llama31_8b["rope_scaling"]["factor"] = 8.0;
  llama31_8b["eos_token_id"] = {128001, 128008, 128009};  // the Instruct model's list
  const calm::LlamaConfig c8 = calm::parse_llama_config(llama31_8b, "Llama-3.1-8B/config.json");
  CHECK(c8.head_dim == 128);
  CHECK(c8.eos_token_ids == std::vector<int>{128001, 128008, 128009});
}

TEST_CASE("config: file errors name the file") {
  const fs::path dir =
      fs::temp_directory_path() / ("calm_test_config_dir_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path p = dir / "config.json";
  const auto write = [&](const std::string& text) {
    std::ofstream out(p);
    out << text;
  };
  CHECK_ERROR_NAMES(calm::load_llama_config(dir / "absent.json"), "absent.json");
  write("");
  CHECK_ERROR_NAMES(calm::load_llama_config(p), p.string(), "empty");
  write("{\"hidden_size\": 64,");
  CHECK_ERROR_NAMES(calm::load_llama_config(p), p.string(), "not valid JSON");
  write("[64]");
  CHECK_ERROR_NAMES(calm::load_llama_config(p), p.string(), "not a JSON object");
  // JSON has no NaN or infinity literal; nlohmann refuses them and overflowing numbers.
  write(minimal().dump().substr(0, minimal().dump().size() - 1) + ", \"rope_theta\": NaN}");
  CHECK_ERROR_NAMES(calm::load_llama_config(p), p.string(), "not valid JSON");
  write(minimal().dump().substr(0, minimal().dump().size() - 1) + ", \"rope_theta\": 1e400}");
  CHECK_ERROR_NAMES(calm::load_llama_config(p), p.string(), "not valid JSON");
  // A repeated key would silently keep the last value.
  write(minimal().dump().substr(0, minimal().dump().size() - 1) + ", \"hidden_size\": 128}");
  CHECK_ERROR_NAMES(calm::load_llama_config(p), p.string(), "'hidden_size' twice");
  // Errors from the parse name the file too.
  write(R"({"hidden_size": 64})");
  CHECK_ERROR_NAMES(calm::load_llama_config(p), p.string(), "'intermediate_size'", "required");
  fs::remove_all(dir);
}

TEST_CASE("config: required keys") {
  for (const char* key : {"hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "vocab_size"}) {
    json j = minimal();
    j.erase(key);
    CHECK_ERROR_NAMES(calm::parse_llama_config(j, "cfg.json"), "cfg.json",
                      std::string("'") + key + "'", "required");
  }
  CHECK_ERROR_NAMES(calm::parse_llama_config(json::array(), "cfg.json"), "cfg.json",
                    "not a JSON object");
}

TEST_CASE("config: wrong types name the key and the type found") {
  for (const char* key :
       {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "vocab_size", "num_key_value_heads", "max_position_embeddings", "head_dim"}) {
    CAPTURE(key);
    CHECK_ERROR_NAMES(with(key, "64"), "cfg.json", std::string("'") + key + "'", "string");
    CHECK_ERROR_NAMES(with(key, nullptr), std::string("'") + key + "'", "null");
    CHECK_ERROR_NAMES(with(key, 64.0), std::string("'") + key + "'", "positive integer", "64.0");
    CHECK_ERROR_NAMES(with(key, true), std::string("'") + key + "'", "boolean");
    CHECK_ERROR_NAMES(with(key, 0), std::string("'") + key + "'", "positive");
    CHECK_ERROR_NAMES(with(key, -8), std::string("'") + key + "'", "positive");
  }
  for (const char* key : {"rms_norm_eps", "rope_theta"}) {
    CAPTURE(key);
    CHECK_ERROR_NAMES(with(key, "1e-5"), std::string("'") + key + "'", "string");
    CHECK_ERROR_NAMES(with(key, nullptr), std::string("'") + key + "'", "null");
    CHECK_ERROR_NAMES(with(key, 0.0), std::string("'") + key + "'", "positive");
    CHECK_ERROR_NAMES(with(key, -1.0), std::string("'") + key + "'", "positive");
    // Built in code rather than parsed, a json can hold NaN and infinity.
    CHECK_ERROR_NAMES(with(key, std::numeric_limits<double>::quiet_NaN()),
                      std::string("'") + key + "'");
    CHECK_ERROR_NAMES(with(key, std::numeric_limits<double>::infinity()),
                      std::string("'") + key + "'");
    CHECK_ERROR_NAMES(with(key, 1e300), std::string("'") + key + "'", "float");   // inf as float
    CHECK_ERROR_NAMES(with(key, 1e-300), std::string("'") + key + "'", "float");  // 0 as float
  }
  CHECK(with("rope_theta", 10000).rope_theta == 10000.0f);  // an integer is a number
  CHECK_ERROR_NAMES(with("tie_word_embeddings", 1), "'tie_word_embeddings'", "number");
  CHECK_ERROR_NAMES(with("tie_word_embeddings", "true"), "'tie_word_embeddings'", "string");
  CHECK_ERROR_NAMES(with("bos_token_id", "1"), "'bos_token_id'", "string");
  CHECK_ERROR_NAMES(with("bos_token_id", nullptr), "'bos_token_id'", "null");
  CHECK_ERROR_NAMES(with("bos_token_id", -1), "'bos_token_id'", "-1");
  CHECK_ERROR_NAMES(with("bos_token_id", 320), "'bos_token_id'", "vocab_size = 320");
  CHECK_ERROR_NAMES(with("eos_token_id", 1.5), "'eos_token_id'", "number");
  CHECK_ERROR_NAMES(with("eos_token_id", json::array()), "'eos_token_id'", "empty");
  CHECK_ERROR_NAMES(with("eos_token_id", json{2, "3"}), "'eos_token_id'", "string");
  CHECK_ERROR_NAMES(with("eos_token_id", json{2, 999}), "'eos_token_id'", "999");
  CHECK_ERROR_NAMES(with("model_type", 3), "'model_type'", "number");
  CHECK_ERROR_NAMES(with("architectures", "LlamaForCausalLM"), "'architectures'", "string");
  CHECK_ERROR_NAMES(with("hidden_act", nullptr), "'hidden_act'", "null");
  CHECK_ERROR_NAMES(with("attention_bias", "no"), "'attention_bias'", "string");
}

TEST_CASE("config: divisibility") {
  json j = minimal();
  j["num_key_value_heads"] = 3;
  CHECK_ERROR_NAMES(calm::parse_llama_config(j, "cfg.json"), "cfg.json", "'num_key_value_heads'",
                    "(3)", "(8)");
  j = minimal();
  j["hidden_size"] = 60;  // 60 / 8 is not whole
  CHECK_ERROR_NAMES(calm::parse_llama_config(j, "cfg.json"), "'hidden_size'", "(60)");
  j = minimal();
  j["hidden_size"] = 40;  // head_dim 5 is odd: RoPE pairs dimensions
  CHECK_ERROR_NAMES(calm::parse_llama_config(j, "cfg.json"), "'hidden_size'", "even");
  CHECK_ERROR_NAMES(with("head_dim", 7), "'head_dim'", "(7)", "even");
  // Products that wrap around size_t could match a small tensor: refused.
  CHECK_ERROR_NAMES(with("intermediate_size", std::uint64_t{1} << 60), "'intermediate_size'",
                    "overflows");
  CHECK_ERROR_NAMES(with("head_dim", std::uint64_t{1} << 58), "'num_attention_heads'", "overflows");
  CHECK(with("num_key_value_heads", 2).num_key_value_heads == 2);
  CHECK(with("head_dim", 16).head_dim == 16);  // HF allows head_dim != hidden / heads
}

TEST_CASE("config: a layer count no model has is refused before anything is sized by it") {
  CHECK_ERROR_NAMES(with("num_hidden_layers", 1000000000), "cfg.json", "'num_hidden_layers'",
                    "1000000000", "limit of 65536");
  CHECK_ERROR_NAMES(with("num_hidden_layers", 1e9), "cfg.json", "'num_hidden_layers'",
                    "positive integer");
  CHECK(with("num_hidden_layers", 65536).num_hidden_layers == 65536);
}

TEST_CASE("config: unsupported settings are refused, naming the key") {
  CHECK_ERROR_NAMES(with("model_type", "mistral"), "cfg.json", "'model_type'", "mistral");
  CHECK_ERROR_NAMES(with("architectures", json{"MistralForCausalLM"}), "'architectures'",
                    "MistralForCausalLM");
  CHECK(with("architectures", json{"Other", "LlamaForCausalLM"}).hidden_size == 64);
  CHECK_ERROR_NAMES(with("hidden_act", "gelu"), "'hidden_act'", "gelu");
  CHECK_ERROR_NAMES(with("rope_scaling", json{{"type", "dynamic"}, {"factor", 2.0}}),
                    "'rope_scaling'", "\"dynamic\" is not supported", "linear", "llama3");
  CHECK_ERROR_NAMES(with("rope_scaling", json{{"rope_type", "yarn"}, {"factor", 2.0}}),
                    "'rope_scaling'", "yarn");
  CHECK(with("rope_scaling", nullptr).rope_scaling.type == calm::RopeScaling::Type::none);
  CHECK_ERROR_NAMES(with("attention_bias", true), "'attention_bias'");
  CHECK_ERROR_NAMES(with("mlp_bias", true), "'mlp_bias'");
  CHECK_ERROR_NAMES(with("pretraining_tp", 2), "'pretraining_tp'");
  CHECK(with("pretraining_tp", 1).hidden_size == 64);
  // Unknown keys: neither read nor known to be harmless.
  CHECK_ERROR_NAMES(with("sliding_window", 4096), "cfg.json", "'sliding_window'");
  CHECK_ERROR_NAMES(with("rope_type", "llama3"), "'rope_type'");
  CHECK_ERROR_NAMES(with("hidden_sise", 64), "'hidden_sise'");  // a typo is not ignored either
  // Harmless metadata passes with any value.
  for (const char* key : {"transformers_version", "torch_dtype", "initializer_range", "use_cache",
                          "pad_token_id", "attention_dropout", "_name_or_path"}) {
    CHECK(with(key, "anything").hidden_size == 64);
  }
}
