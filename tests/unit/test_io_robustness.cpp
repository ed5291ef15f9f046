// Hostile inputs to every file calm reads: deeply nested JSON, FIFOs and other non-regular files,
// NUL bytes, duplicate keys inside a tensor entry, tensors the model would need but calm does not
// read, non-finite weights and misaligned tensor data. Each must give a calm::Error naming the
// file (and key or tensor), without crashing, blocking or being accepted in silence.
#include "test_support.hpp"

#include <calm/backends/llama/llama.hpp>
#include <calm/calibrate/calibration_json.hpp>
#include <calm/confidence/exit_classifier.hpp>
#include <calm/decoder.hpp>
#include <calm/io/hf_config.hpp>
#include <calm/io/json.hpp>
#include <calm/io/mapped_file.hpp>
#include <calm/io/prompts.hpp>
#include <calm/io/safetensors.hpp>
#include <calm/io/tokenizer.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using calm::test::contains;
using calm::test::error_of;
using calm::test::ScratchDir;

namespace {

const fs::path kFixtures = fs::path(CALM_FIXTURES);

// Deep enough that rendering the value recursively overflows an 8 MiB stack.
constexpr std::size_t kDeep = 200000;

std::string deep_array(std::size_t depth) {
  return std::string(depth, '[') + "1" + std::string(depth, ']');
}

using calm::test::le64;
using calm::test::safetensors_bytes;
using calm::test::write_file;

std::string read_file(const fs::path& p) { return calm::test::read_text(p); }

// The header (as ordered JSON) and data section of a safetensors file.
struct SafeTensorsParts {
  nlohmann::ordered_json header;
  std::string data;
};

SafeTensorsParts read_parts(const fs::path& p) {
  const std::string bytes = read_file(p);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  return {nlohmann::ordered_json::parse(bytes.substr(8, n)), bytes.substr(8 + n)};
}

void write_parts(const fs::path& p, const SafeTensorsParts& parts, std::size_t misalign = 0) {
  write_file(p, safetensors_bytes(parts.header.dump(), parts.data, misalign));
}

// Appends an F32 tensor to a safetensors file.
void add_f32_tensor(const fs::path& p, const std::string& name, std::vector<std::size_t> shape,
                    const std::vector<float>& values) {
  SafeTensorsParts parts = read_parts(p);
  const std::size_t begin = parts.data.size();
  parts.data.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  parts.header[name] = {
      {"dtype", "F32"}, {"shape", shape}, {"data_offsets", {begin, parts.data.size()}}};
  write_parts(p, parts);
}

// Overwrites element `index` of an F32 tensor.
void set_f32(const fs::path& p, const std::string& name, std::size_t index, float value) {
  SafeTensorsParts parts = read_parts(p);
  REQUIRE(parts.header.at(name).at("dtype") == "F32");
  const std::size_t begin = parts.header.at(name).at("data_offsets")[0].get<std::size_t>();
  std::memcpy(parts.data.data() + begin + 4 * index, &value, 4);
  write_parts(p, parts);
}

// A copy of a fixture model directory.
fs::path copy_fixture(const ScratchDir& dir, const std::string& name) {
  const fs::path to = dir.path / name;
  fs::copy(kFixtures / name, to, fs::copy_options::recursive);
  return to;
}

void set_config_key(const fs::path& model, const std::string& key, const nlohmann::json& value) {
  nlohmann::ordered_json c = nlohmann::ordered_json::parse(read_file(model / "config.json"));
  c[key] = value;
  write_file(model / "config.json", c.dump(2));
}

// The calm::Error message of f(), run on a thread. If f blocks (opening a FIFO without a
// writer), the check fails and the FIFO is opened for writing to release it.
template <class F>
std::string error_without_blocking(const fs::path& fifo, F f) {
  auto result = std::async(std::launch::async, [f] { return error_of(f); });
  if (result.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    FAIL_CHECK("blocked opening the FIFO " << fifo);
    while (result.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
      const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
      if (fd >= 0) ::close(fd);  // the reader's open returns, then reads end of file
    }
  }
  return result.get();
}

void make_fifo(const fs::path& p) {
  fs::remove(p);
  REQUIRE(::mkfifo(p.c_str(), 0600) == 0);
}

}  // namespace

// --- Deep nesting --------------------------------------------------------------------------

TEST_CASE("deeply nested JSON gives an error naming the file, not a stack overflow") {
  ScratchDir dir("deep");
  const std::string deep = deep_array(kDeep);

  SUBCASE("a safetensors tensor entry and __metadata__") {
    const fs::path p = dir.path / "deep.safetensors";
    write_file(p, safetensors_bytes("{\"w\":" + deep + "}", ""));
    CHECK_ERROR_NAMES(calm::io::SafeTensorsFile::open(p), p.string(), "deeper than 64");
    write_file(p, safetensors_bytes("{\"__metadata__\":" + deep + "}", ""));
    CHECK_ERROR_NAMES(calm::io::SafeTensorsFile::open(p), p.string(), "deeper than 64");
    write_file(p, safetensors_bytes("{\"__metadata__\":{\"k\":" + deep + "}}", ""));
    CHECK_ERROR_NAMES(calm::io::SafeTensorsFile::open(p), p.string(), "deeper than 64");
  }
  SUBCASE("a weight_map value of model.safetensors.index.json") {
    const fs::path model = copy_fixture(dir, "tiny-mha-f16-sharded");
    const fs::path index = model / "model.safetensors.index.json";
    write_file(index, "{\"weight_map\": {\"model.norm.weight\": " + deep + "}}");
    CHECK_ERROR_NAMES(calm::io::Checkpoint::open(model), index.string(), "deeper than 64");
    // The model fingerprint reads the index on its own.
    CHECK_ERROR_NAMES(calm::calibrate::model_fingerprint(model), index.string(), "deeper than 64");
  }
  SUBCASE("config.json's rope_scaling") {
    const fs::path model = copy_fixture(dir, "tiny-gqa-f32-untied");
    std::string text = read_file(model / "config.json");
    text.replace(text.find("\"rope_scaling\": null"), 20, "\"rope_scaling\": " + deep);
    write_file(model / "config.json", text);
    CHECK_ERROR_NAMES(calm::load_llama_config(model / "config.json"),
                      (model / "config.json").string(), "deeper than 64");
  }
  SUBCASE("a calm.safetensors header") {
    const fs::path p = dir.path / "calm.safetensors";
    write_file(p, safetensors_bytes("{\"calm.exit_classifier.bias\":" + deep + "}", ""));
    CHECK_ERROR_NAMES(calm::ExitClassifier::load(p, 4), p.string(), "deeper than 64");
  }
  SUBCASE("calm_calibration.json's version and n") {
    const fs::path p = dir.path / "calm_calibration.json";
    // Every key before "n" valid, so that the reader gets as far as quoting it.
    const std::string valid =
        R"({"format": "calm-calibration", "measure": "softmax-response", "schedule": "x",)"
        R"( "consistency": "textual", "distance": "token-mismatch", "model_fingerprint": "f",)"
        R"( "method": "hoeffding", "delta": 0.1, "epsilon": 0.1, )";
    write_file(p, valid + "\"version\": " + deep + "}");
    CHECK_ERROR_NAMES(calm::calibrate::read_calibration_json(p), p.string(), "deeper than 64");
    write_file(p, valid + "\"version\": 1, \"n\": " + deep + "}");
    CHECK_ERROR_NAMES(calm::calibrate::read_calibration_json(p), p.string(), "deeper than 64");
  }
  SUBCASE("a JSON prompt line") {
    const fs::path p = dir.path / "prompts.jsonl";
    write_file(p, "{\"prompt\": \"a\"}\n{\"prompt\": " + deep + "}\n");
    CHECK_ERROR_NAMES(calm::io::read_prompt_file(p), p.string() + ":2", "deeper than 64");
  }
}

TEST_CASE("nesting just past the bound is refused, the formats' own nesting is not") {
  ScratchDir dir("depth");
  const fs::path p = dir.path / "d.safetensors";
  write_file(p, safetensors_bytes("{\"__metadata__\":{\"k\":" + deep_array(63) + "}}", ""));
  CHECK_ERROR_NAMES(calm::io::SafeTensorsFile::open(p), p.string(), "deeper than 64", "offset 83");
  // 64 levels in all: the parser sees it, and __metadata__'s own check names the key.
  write_file(p, safetensors_bytes("{\"__metadata__\":{\"k\":" + deep_array(62) + "}}", ""));
  CHECK_ERROR_NAMES(calm::io::SafeTensorsFile::open(p), p.string(), "__metadata__ key 'k'");
  // Brackets inside strings are text, not nesting.
  write_file(
      p, safetensors_bytes("{\"__metadata__\":{\"k\":\"" + std::string(1000, '[') + "\"}}", ""));
  CHECK(calm::io::SafeTensorsFile::open(p).metadata().at("k") == std::string(1000, '['));
}

TEST_CASE("error messages quote a bounded excerpt of a JSON value, at any depth") {
  nlohmann::json v = 1;
  for (std::size_t i = 0; i < kDeep; ++i) {
    nlohmann::json outer = nlohmann::json::array();
    outer.push_back(std::move(v));
    v = std::move(outer);
  }
  const std::string text = calm::io::describe_json(v);
  CHECK(text.size() <= 50);
  CHECK(contains(text, "array [[[["));
  CHECK(contains(text, "..."));
  // Short values are quoted whole, as before.
  CHECK(calm::io::describe_json(nlohmann::json::parse(R"({"a":[1,2],"b":"x"})")) ==
        R"(object {"a":[1,2],"b":"x"})");
  CHECK(calm::io::json_excerpt(std::string(1000, 'x')).size() == 40);
}

// --- FIFOs and other non-regular files -------------------------------------------------------

TEST_CASE("a FIFO in place of any file calm reads is refused at once, naming it") {
  ScratchDir dir("fifo");
  const fs::path single = copy_fixture(dir, "tiny-gqa-f32-untied");
  const fs::path sharded = copy_fixture(dir, "tiny-mha-f16-sharded");
  const auto refused = [](const std::string& message, const fs::path& fifo) {
    CAPTURE(message);
    CHECK(contains(message, fifo.string()));
    CHECK(contains(message, "not a regular file (it is a FIFO)"));
  };

  SUBCASE("config.json") {
    const fs::path f = single / "config.json";
    make_fifo(f);
    refused(error_without_blocking(f, [&] { calm::load_llama_config(f); }), f);
  }
  SUBCASE("model.safetensors") {
    const fs::path f = single / "model.safetensors";
    make_fifo(f);
    refused(error_without_blocking(f, [&] { calm::io::Checkpoint::open(single); }), f);
  }
  SUBCASE("a shard") {
    const fs::path f = sharded / "model-00002-of-00002.safetensors";
    make_fifo(f);
    refused(error_without_blocking(f, [&] { calm::io::Checkpoint::open(sharded); }), f);
  }
  SUBCASE("model.safetensors.index.json") {
    const fs::path f = sharded / "model.safetensors.index.json";
    make_fifo(f);
    refused(error_without_blocking(f, [&] { calm::io::Checkpoint::open(sharded); }), f);
    refused(error_without_blocking(f, [&] { calm::calibrate::model_fingerprint(sharded); }), f);
  }
  SUBCASE("tokenizer.model") {
    const fs::path f = single / "tokenizer.model";
    make_fifo(f);
    refused(error_without_blocking(f, [&] { calm::Tokenizer::load(f); }), f);
  }
  SUBCASE("calm.safetensors") {
    const fs::path f = single / "calm.safetensors";
    make_fifo(f);
    refused(error_without_blocking(f, [&] { calm::ExitClassifier::load(f, 64); }), f);
  }
  SUBCASE("calm_calibration.json") {
    const fs::path f = single / "calm_calibration.json";
    make_fifo(f);
    refused(error_without_blocking(f, [&] { calm::calibrate::read_calibration_json(f); }), f);
  }
  SUBCASE("a prompt file and a references file") {
    const fs::path f = dir.path / "prompts.jsonl";
    make_fifo(f);
    refused(error_without_blocking(f, [&] { calm::io::read_prompt_file(f); }), f);
    const fs::path prompts = dir.path / "prompts.txt";
    write_file(prompts, "a\nb\n");
    calm::io::PromptFile file = calm::io::read_prompt_file(prompts);
    const fs::path refs = dir.path / "refs.txt";
    make_fifo(refs);
    refused(error_without_blocking(refs, [&] { calm::io::attach_references(file, refs); }), refs);
  }
}

TEST_CASE("a character device in place of model.safetensors is refused, naming its kind") {
  ScratchDir dir("chardev");
  const fs::path model = copy_fixture(dir, "tiny-gqa-f32-untied");
  fs::remove(model / "model.safetensors");
  fs::create_symlink("/dev/zero", model / "model.safetensors");
  CHECK_ERROR_NAMES(calm::io::Checkpoint::open(model), (model / "model.safetensors").string(),
                    "a character device");
}

// --- NUL bytes -------------------------------------------------------------------------------

TEST_CASE("a NUL byte does not end JSON parsing: the rest is read and refused, naming where") {
  ScratchDir dir("nul");
  const std::string nul(1, '\0');

  SUBCASE("config.json") {
    const fs::path model = copy_fixture(dir, "tiny-gqa-f32-untied");
    const fs::path p = model / "config.json";
    const std::string good = read_file(p);
    // Everything after the NUL used to be ignored: here, a setting calm refuses.
    write_file(p, good + nul + "{\"rope_scaling\": {\"type\": \"linear\"}}");
    CHECK_ERROR_NAMES(calm::load_llama_config(p), p.string(), "NUL byte",
                      "at offset " + std::to_string(good.size()));
  }
  SUBCASE("a safetensors header") {
    const fs::path p = dir.path / "nul.safetensors";
    const std::string entry = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
    const float one = 1.0f;
    write_file(p, safetensors_bytes(entry + nul + "garbage",
                                    std::string_view(reinterpret_cast<const char*>(&one), 4)));
    CHECK_ERROR_NAMES(calm::io::SafeTensorsFile::open(p), p.string(), "NUL byte",
                      "at offset " + std::to_string(entry.size()));
  }
  SUBCASE("a JSON prompt line") {
    const fs::path p = dir.path / "prompts.jsonl";
    write_file(p, "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}" + nul + "{\"prompt\": \"c\"}\n");
    CHECK_ERROR_NAMES(calm::io::read_prompt_file(p), p.string() + ":2", "NUL byte", "at offset 15");
  }
  // Found by fuzz_prompts: a number past double's range escaped as a bare nlohmann
  // out_of_range exception. Duplicate keys in a line were taken silently (the last won).
  SUBCASE("a JSON prompt line with a number out of range, or a key twice") {
    const fs::path p = dir.path / "prompts.jsonl";
    write_file(p, "{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"n\": 1e999}\n");
    CHECK_ERROR_NAMES(calm::io::read_prompt_file(p), p.string() + ":2", "not valid JSON");
    write_file(p, "{\"prompt\": \"a\", \"prompt\": \"b\"}\n");
    CHECK_ERROR_NAMES(calm::io::read_prompt_file(p), p.string() + ":1", "'prompt' twice");
  }
  SUBCASE("calm_calibration.json") {
    const fs::path p = dir.path / "calm_calibration.json";
    write_file(p, "{}" + nul + "x");
    CHECK_ERROR_NAMES(calm::calibrate::read_calibration_json(p), p.string(), "NUL byte");
  }
}

// --- Duplicate keys --------------------------------------------------------------------------

TEST_CASE("a key twice inside a tensor entry or the weight map is refused, naming both") {
  ScratchDir dir("dup");
  const fs::path p = dir.path / "dup.safetensors";
  const float values[2] = {1.0f, 2.0f};
  const std::string data(reinterpret_cast<const char*>(values), sizeof values);
  write_file(p,
             safetensors_bytes(
                 R"({"w":{"dtype":"F16","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data));
  CHECK_ERROR_NAMES(calm::io::SafeTensorsFile::open(p), p.string(), "'dtype' twice", "\"w\"");
  write_file(p, safetensors_bytes(
                    R"({"w":{"dtype":"F32","shape":[1],"shape":[2],"data_offsets":[0,8]}})", data));
  CHECK_ERROR_NAMES(calm::io::SafeTensorsFile::open(p), p.string(), "'shape' twice", "\"w\"");
  write_file(p, safetensors_bytes(R"({"__metadata__":{"k":"a","k":"b"}})", ""));
  CHECK_ERROR_NAMES(calm::io::SafeTensorsFile::open(p), p.string(), "'k' twice", "__metadata__");

  const fs::path model = copy_fixture(dir, "tiny-mha-f16-sharded");
  const fs::path index = model / "model.safetensors.index.json";
  std::string text = read_file(index);
  const std::size_t at = text.find("\"model.norm.weight\"");
  REQUIRE(at != std::string::npos);
  text.insert(at, "\"model.norm.weight\": \"model-00001-of-00002.safetensors\", ");
  write_file(index, text);
  CHECK_ERROR_NAMES(calm::io::Checkpoint::open(model), index.string(), "'model.norm.weight' twice",
                    "weight_map");
}

// --- Many members ---------------------------------------------------------------------------

// kManyMembers entries in one object: nlohmann's callback parser walked the parent object at each
// member's end (40,000 entries took 25 s, this many would take minutes); the parse is linear, and
// ctest's TIMEOUT for this case (tests/CMakeLists.txt) fails a quadratic one. Under the
// sanitizers, which check memory rather than time, a quarter of them.
constexpr std::size_t kManyMembers = calm::test::kSanitized ? 50000 : 200000;

TEST_CASE("parse_json builds the value nlohmann::json::parse builds") {
  for (const char* text : {R"({"a":[1,{"b":[[],{}]},-2,3.5e3],"c":{"d":null,"e":[true,false]},"f":"x"})",
                           R"([[1,[2,[3]]],{"k":[{"l":{}},[]]},"s"])", "[]", "{}", "7", "\"s\"",
                           "null", R"({"a":{"a":{"a":1}},"b":[{"a":2},{"a":3}]})"}) {
    CAPTURE(text);
    CHECK(calm::io::parse_json(text, "test", "here") == nlohmann::json::parse(text));
  }
  // A key twice names the object it is in, by its path from the top.
  CHECK_ERROR_NAMES(calm::io::parse_json(R"({"a":[{"b":{"c":1,"c":2}}]})", "test", "here"),
                    "'c' twice", R"((in "a[].b"))");
  CHECK_ERROR_NAMES(calm::io::parse_json(R"({"a":1,"a":2})", "test", "here"), "'a' twice");
  CHECK_ERROR_NAMES(calm::io::parse_json(R"({"a":[1,2})", "test", "here"), "not valid JSON");
}

TEST_CASE("a safetensors header with 200,000 entries is read in linear time") {
  ScratchDir dir("many");
  const fs::path p = dir.path / "many.safetensors";
  std::string header = "{";
  for (std::size_t i = 0; i < kManyMembers; ++i) {
    if (i > 0) header += ',';
    header += "\"t" + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" +
              std::to_string(4 * i) + "," + std::to_string(4 * i + 4) + "]}";
  }
  const std::string data(4 * kManyMembers, '\0');
  write_file(p, safetensors_bytes(header + "}", data));
  CHECK(calm::io::SafeTensorsFile::open(p).tensors().size() == kManyMembers);
  // The same header with its first key again at the end: refused, naming the key.
  write_file(p, safetensors_bytes(
                    header + R"(,"t0":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", data));
  CHECK_ERROR_NAMES(calm::io::SafeTensorsFile::open(p), p.string(), "'t0' twice");
}

// --- Tensors the model would need but calm does not read ----------------------------------

TEST_CASE("every tensor of the checkpoint is read or refused by name") {
  ScratchDir dir("unread");

  SUBCASE("a bias calm does not implement") {
    const fs::path model = copy_fixture(dir, "tiny-gqa-f32-untied");
    add_f32_tensor(model / "model.safetensors", "model.layers.0.self_attn.q_proj.bias", {64},
                   std::vector<float>(64, 0.5f));
    CHECK_ERROR_NAMES(calm::LlamaSession::load(model), "'model.layers.0.self_attn.q_proj.bias'",
                      (model / "model.safetensors").string(), "refuses to ignore");
  }
  SUBCASE("config.json saying fewer layers than the checkpoint has") {
    const fs::path model = copy_fixture(dir, "tiny-gqa-bf16-tied");  // 3 layers
    set_config_key(model, "num_hidden_layers", 2);
    CHECK_ERROR_NAMES(calm::LlamaSession::load(model), "'model.layers.2.", "num_hidden_layers = 2",
                      "8 more");
  }
  SUBCASE("a tensor in a shard") {
    const fs::path model = copy_fixture(dir, "tiny-mha-f16-sharded");
    const fs::path shard = model / "model-00002-of-00002.safetensors";
    add_f32_tensor(shard, "model.layers.1.mlp.down_proj.bias", {64}, std::vector<float>(64, 0.0f));
    nlohmann::ordered_json index =
        nlohmann::ordered_json::parse(read_file(model / "model.safetensors.index.json"));
    index["weight_map"]["model.layers.1.mlp.down_proj.bias"] = "model-00002-of-00002.safetensors";
    write_file(model / "model.safetensors.index.json", index.dump());
    CHECK_ERROR_NAMES(calm::LlamaSession::load(model), "'model.layers.1.mlp.down_proj.bias'",
                      shard.string());
  }
  SUBCASE("rotary_emb.inv_freq is a harmless extra, and loads") {
    const fs::path model = copy_fixture(dir, "tiny-gqa-f32-untied");
    std::vector<float> inv_freq(8);
    for (std::size_t j = 0; j < inv_freq.size(); ++j)
      inv_freq[j] = float(1.0 / std::pow(10000.0, 2.0 * double(j) / 16.0));
    for (int layer = 0; layer < 2; ++layer) {
      add_f32_tensor(model / "model.safetensors",
                     "model.layers." + std::to_string(layer) + ".self_attn.rotary_emb.inv_freq",
                     {8}, inv_freq);
    }
    CHECK_NOTHROW(calm::LlamaSession::load(model));
    // ... but not for a layer the config does not have.
    add_f32_tensor(model / "model.safetensors", "model.layers.2.self_attn.rotary_emb.inv_freq", {8},
                   inv_freq);
    CHECK_ERROR_NAMES(calm::LlamaSession::load(model),
                      "'model.layers.2.self_attn.rotary_emb.inv_freq'", "num_hidden_layers = 2");
  }
}

TEST_CASE("the committed fixtures and the bundled model hold no tensor calm ignores") {
  for (const std::string name :
       {"tiny-gqa-bf16-tied", "tiny-gqa-f32-untied", "tiny-mha-f16-sharded"}) {
    CAPTURE(name);
    CHECK_NOTHROW(calm::LlamaSession::load(kFixtures / name));
  }
  CHECK_NOTHROW(calm::LlamaSession::load(fs::path(CALM_MODELS) / "shakespeare-8l"));
}

// --- Non-finite weights ------------------------------------------------------------------------

TEST_CASE("non-finite norm and head weights are refused at load, naming tensor and element") {
  ScratchDir dir("nonfinite");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const fs::path model = copy_fixture(dir, "tiny-gqa-f32-untied");
  const fs::path weights = model / "model.safetensors";
  const std::string good = read_file(weights);

  set_f32(weights, "model.norm.weight", 3, nan);
  CHECK_ERROR_NAMES(calm::LlamaSession::load(model), "'model.norm.weight'", weights.string(),
                    "NaN at index 3");
  write_file(weights, good);
  set_f32(weights, "model.layers.1.input_layernorm.weight", 0, -inf);
  CHECK_ERROR_NAMES(calm::LlamaSession::load(model), "'model.layers.1.input_layernorm.weight'",
                    "-inf at index 0");
  write_file(weights, good);
  set_f32(weights, "lm_head.weight", 64 * 5 + 7, inf);
  CHECK_ERROR_NAMES(calm::LlamaSession::load(model), "'lm_head.weight'", "+inf at row 5, column 7");
  // A matrix inside a layer is not scanned at load (that is a full read of the weights), but
  // check_all_finite finds it.
  write_file(weights, good);
  set_f32(weights, "model.layers.0.mlp.up_proj.weight", 11, nan);
  CHECK_NOTHROW(calm::LlamaSession::load(model));
  CHECK_ERROR_NAMES(calm::LlamaWeights::check_all_finite(calm::io::Checkpoint::open(model)),
                    "'model.layers.0.mlp.up_proj.weight'", "NaN at row 0, column 11");
  CHECK_ERROR_NAMES(calm::LlamaSession::load(model, 1, {.check_all_weights = true}),
                    "'model.layers.0.mlp.up_proj.weight'", "NaN at row 0, column 11");
  // Left to decoding, the NaN reaches the logits of the prompt: an error, not <unk> tokens.
  calm::FullDecoder<calm::LlamaSession> full(calm::LlamaSession::load(model));
  const std::vector<int> prompt = {1, 20, 30};
  CHECK_ERROR_NAMES(full.generate(prompt, 4), "position 2 (the prompt's last)",
                    "after layer 2 of 2", "not finite", "NaN");
}

TEST_CASE("the tied embedding is the head: a NaN in it is refused at load") {
  ScratchDir dir("nonfinite_tied");
  const fs::path model = copy_fixture(dir, "tiny-gqa-bf16-tied");
  const fs::path weights = model / "model.safetensors";
  SafeTensorsParts parts = read_parts(weights);
  const std::size_t begin =
      parts.header.at("model.embed_tokens.weight").at("data_offsets")[0].get<std::size_t>();
  parts.data[begin + 2 * 70 + 1] = '\x7f';  // bf16 0x7fc0: NaN at element 70 = row 1, column 6
  parts.data[begin + 2 * 70] = '\xc0';
  write_parts(weights, parts);
  CHECK_ERROR_NAMES(calm::LlamaSession::load(model), "'model.embed_tokens.weight'",
                    "NaN at row 1, column 6", "head");
}

// --- Misaligned tensor data: one rule for every safetensors file ------------------------------

TEST_CASE("misaligned tensor data is read through an aligned copy in model and classifier files") {
  ScratchDir dir("misaligned");
  for (const std::string name :
       {"tiny-gqa-bf16-tied", "tiny-mha-f16-sharded", "tiny-gqa-f32-untied"}) {
    CAPTURE(name);
    const fs::path model = copy_fixture(dir, name);
    for (const auto& entry : fs::directory_iterator(model)) {
      const std::string file = entry.path().filename().string();
      if (file.starts_with("model") && entry.path().extension() == ".safetensors")
        write_parts(entry.path(), read_parts(entry.path()), /*misalign=*/1);  // odd data start
    }
    calm::LlamaSession good =
        calm::LlamaSession::load(kFixtures / name, 1, {.copy_weights = false});
    for (const bool copy : {false, true}) {
      CAPTURE(copy);
      calm::LlamaSession odd = calm::LlamaSession::load(model, 1, {.copy_weights = copy});
      const calm::LlamaWeights& w = odd.model().weights();
      const std::size_t align = calm::formats::visit(
          w.embed.format, [](auto f) { return decltype(f)::alignment; });
      CHECK(reinterpret_cast<std::uintptr_t>(w.embed.data) % align == 0);
      CHECK(reinterpret_cast<std::uintptr_t>(w.lm_head.data) % align == 0);
      CHECK(reinterpret_cast<std::uintptr_t>(w.layers[0].q.data) % align == 0);
      std::vector<float> a(good.hidden_size()), b(a.size()), la(good.vocab_size()), lb(la.size());
      for (std::size_t pos = 0; pos < 3; ++pos) {
        good.embed(int(5 + pos), a);
        odd.embed(int(5 + pos), b);
        for (std::size_t i = 0; i < good.num_layers(); ++i) {
          good.run_layer(i, a, pos);
          odd.run_layer(i, b, pos);
        }
        good.exit_head(a, la);
        odd.exit_head(b, lb);
        CHECK(a == b);
        CHECK(la == lb);
      }
      good = calm::LlamaSession::load(kFixtures / name, 1, {.copy_weights = false});
    }
  }

  // calm.safetensors: the same rule (it used to be refused as "not aligned").
  const fs::path file = dir.path / "calm.safetensors";
  const float bias[2] = {-0.25f, 0.75f};
  calm::ExitClassifier({1.0f, -2.0f, 3.5f, 0.5f, 0.0f, -1.0f}, bias).save(file);
  write_parts(file, read_parts(file), /*misalign=*/2);
  const calm::ExitClassifier c = calm::ExitClassifier::load(file, 3);
  CHECK(c.weight()[2] == 3.5f);
  CHECK(c.bias()[1] == 0.75f);
}

TEST_CASE("the atomic writer never replaces what is not a regular file") {
  ScratchDir dir("atomic_targets");
  const auto write = [](const fs::path& path, const std::string& text) {
    calm::io::write_atomically(path, [&](std::FILE* f) {
      calm::io::write_all(f, text.data(), text.size(), path);
    });
  };
  // A FIFO is written through: the reader gets the bytes and the FIFO stays a FIFO.
  const fs::path fifo = dir.path / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  REQUIRE(reader >= 0);
  write(fifo, "through the pipe");
  char buffer[64] = {};
  const ::ssize_t got = ::read(reader, buffer, sizeof buffer);
  ::close(reader);
  CHECK(fs::is_fifo(fifo));
  CHECK(std::string(buffer, got > 0 ? static_cast<std::size_t>(got) : 0) == "through the pipe");
  // With no reader, an error rather than a wait.
  CHECK(contains(error_of([&] { write(fifo, "nobody"); }), "a FIFO that nothing reads"));
  CHECK(fs::is_fifo(fifo));

  // A symlink to a regular file: the file it names is replaced, the link stays.
  const fs::path target = dir.path / "target.json", link = dir.path / "link.json";
  write(target, "old");
  fs::create_symlink(target.filename(), link);
  write(link, "new");
  CHECK(fs::is_symlink(link));
  CHECK(calm::test::read_text(target) == "new");
  // A link to a link to a missing file: the file is created where the links lead.
  const fs::path dangling = dir.path / "dangling", chain = dir.path / "chain";
  fs::create_symlink("created.json", dangling);
  fs::create_symlink(dangling.filename(), chain);
  write(chain, "made");
  CHECK(fs::is_symlink(chain));
  CHECK(fs::is_symlink(dangling));
  CHECK(calm::test::read_text(dir.path / "created.json") == "made");

  // Another kind (a socket, a folder) is refused by name; the checks before any work agree.
  fs::create_directory(dir.path / "folder");
  CHECK(contains(error_of([&] { write(dir.path / "folder", "x"); }), "folder"));
  CHECK(fs::is_directory(dir.path / "folder"));
  calm::io::check_writable_destination("/dev/null", "--report");
  calm::io::check_writable_destination(fifo, "--report");
  calm::io::check_writable_destination(link, "--report");
}

TEST_CASE("an output path that is one of the run's inputs, or empty, is refused by name") {
  ScratchDir dir("output_is_input");
  const fs::path config = dir.path / "config.json", prompts = dir.path / "prompts.txt";
  std::ofstream(config) << "{}";
  std::ofstream(prompts) << "a\n";
  fs::create_symlink(prompts.filename(), dir.path / "alias.txt");
  fs::create_hard_link(config, dir.path / "hard.json");
  const std::vector<fs::path> inputs = {config, prompts, dir.path / "absent.json"};
  for (const fs::path& out : {config, dir.path / "." / "prompts.txt", dir.path / "alias.txt",
                              dir.path / "hard.json"}) {
    CAPTURE(out);
    const std::string message =
        error_of([&] { calm::io::check_writable_destination(out, "--output", inputs); });
    CHECK(contains(message, "--output"));
    CHECK(contains(message, "is an input of this run"));
  }
  calm::io::check_writable_destination(dir.path / "absent.json", "--output", inputs);
  calm::io::check_writable_destination(dir.path / "new.json", "--output", inputs);
  CHECK(contains(error_of([&] { calm::io::check_writable_destination("", "--output"); }),
                 "--output is empty"));
}
