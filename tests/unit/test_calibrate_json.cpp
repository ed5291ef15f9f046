// calm_calibration.json (write, read, validation, atomic replacement) and the model fingerprint.
#include "test_support.hpp"
#include <doctest/doctest.h>

#include <calm/calibrate/calibration_json.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace cc = calm::calibrate;
namespace fs = std::filesystem;

namespace {

using calm::test::error_of;
using calm::test::contains;

using calm::test::ScratchDir;

void write_text(const fs::path& file, const std::string& text) {
  std::ofstream out(file, std::ios::binary);
  out << text;
}

using calm::test::read_text;

// Names in `dir` other than `keep`: leftovers such as temp files.
std::vector<std::string> other_entries(const fs::path& dir, const std::string& keep) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename() != keep) names.push_back(entry.path().filename().string());
  }
  return names;
}

// A record from a real fixed-sequence run: Hoeffding, n = 10, δ = 0.5, ε = 0.1 (pass iff mean
// <= 0.16); by default means 0, 0.1, 0.3 at λ = 1.0, 0.9, 0.8 -> λ* = 0.9, 0.7 and 0.6 untested.
cc::CalibrationRecord sample_record(std::vector<double> means = {0.0, 0.1, 0.3, 0.0, 0.0}) {
  cc::LearnThenTestOptions options;
  options.delta = 0.5;
  options.epsilon = 0.1;
  options.method = cc::PValueMethod::hoeffding;
  options.grid = {1.0, 0.9, 0.8, 0.7, 0.6};
  std::size_t j = 0;
  cc::CalibrationRecord record;
  record.result =
      cc::calibrate([&](double) { return std::vector<double>(10, means[j++]); }, options);
  record.measure = "softmax-response";
  record.schedule = {{"schedule", "decaying"}, {"tau", 4.0}, {"first_exit", 1}, {"interval", 1}};
  record.consistency = cc::Consistency::textual;
  record.distance = cc::Distance::rouge_l;
  record.model_fingerprint = "fnv1a64:0123456789abcdef";
  record.decoding = cc::DecodingRecord{.max_new_tokens = 24};  // greedy
  return record;
}

// A sampled decoding record.
cc::DecodingRecord sampled() {
  return {.temperature = 0.8, .top_k = 40, .top_p = 0.95, .seed = 7, .max_new_tokens = 32};
}

// The sample record's JSON with one key replaced, written to `file`.
void write_modified(const fs::path& file, const std::string& key, const nlohmann::json& value) {
  nlohmann::json document = cc::to_json(sample_record());
  document[key] = value;
  write_text(file, document.dump());
}

}  // namespace

TEST_CASE("calibration JSON round-trips every field") {
  ScratchDir dir("roundtrip");
  const fs::path file = dir.path / "calm_calibration.json";
  const cc::CalibrationRecord written = sample_record();
  REQUIRE(written.result.lambda_star == 0.9);
  cc::write_calibration_json(file, written);
  const cc::CalibrationRecord read = cc::read_calibration_json(file);

  CHECK(read.measure == written.measure);
  CHECK(read.schedule == written.schedule);
  CHECK(read.consistency == written.consistency);
  CHECK(read.distance == written.distance);
  CHECK(read.model_fingerprint == written.model_fingerprint);
  CHECK(read.result.delta == written.result.delta);
  CHECK(read.result.epsilon == written.result.epsilon);
  CHECK(read.result.n == 10);
  CHECK(read.result.method == cc::PValueMethod::hoeffding);
  CHECK(read.result.lambda_star == written.result.lambda_star);
  CHECK(read.decoding == written.decoding);
  REQUIRE(read.result.table.size() == written.result.table.size());
  for (std::size_t j = 0; j < read.result.table.size(); ++j) {
    CAPTURE(j);
    const cc::GridRow &a = read.result.table[j], &b = written.result.table[j];
    CHECK(a.lambda == b.lambda);  // nlohmann writes shortest round-trip decimals: exact
    CHECK(a.mean_loss == b.mean_loss);
    CHECK(a.p_value == b.p_value);
    CHECK(a.tested == b.tested);
    CHECK(a.passed == b.passed);
  }
  // The file itself: untested rows and the names are as documented.
  const nlohmann::json document = nlohmann::json::parse(read_text(file));
  CHECK(document["distance"] == "rouge-l");
  CHECK(document["method"] == "hoeffding");
  CHECK(document["table"][3]["p_value"].is_null());
  CHECK(document["lambda_star"] == 0.9);
  CHECK(document["version"] == 2);
  CHECK(document["decoding"] ==
        nlohmann::json{{"mode", "greedy"}, {"max_new_tokens", 24}, {"stop", "eos"}});
  CHECK(other_entries(dir.path, "calm_calibration.json").empty());

  // No certified threshold: lambda_star is null and reads back empty; schedule as a string.
  cc::CalibrationRecord none = sample_record({0.5, 0.0, 0.0, 0.0, 0.0});
  REQUIRE(!none.result.lambda_star.has_value());
  none.schedule = "constant";
  cc::write_calibration_json(file, none);  // replaces the first file
  const cc::CalibrationRecord none_read = cc::read_calibration_json(file);
  CHECK(!none_read.result.lambda_star.has_value());
  CHECK(none_read.schedule == "constant");
  CHECK(nlohmann::json::parse(read_text(file))["lambda_star"].is_null());
}

// A grid of 400,001 lambdas (calm-calibrate writes a million-row one in seconds): an array of
// that many objects took nlohmann's callback parser minutes (quadratic in the rows); ctest's
// TIMEOUT for this case (tests/CMakeLists.txt) fails a parse that is not linear. Under the
// sanitizers, which check memory rather than time, a quarter of the rows.
TEST_CASE("a certificate with 400,001 rows reads back in linear time") {
  ScratchDir dir("rows");
  const fs::path file = dir.path / "calm_calibration.json";
  constexpr std::size_t kRows = calm::test::kSanitized ? 100001 : 400001;
  nlohmann::json document = cc::to_json(sample_record());
  nlohmann::json table = nlohmann::json::array();
  for (std::size_t j = 0; j < kRows; ++j) {
    table.push_back({{"lambda", static_cast<double>(kRows - 1 - j) / (kRows - 1)},
                     {"mean_loss", nullptr},
                     {"p_value", nullptr},
                     {"tested", false},
                     {"passed", false}});
  }
  document["table"] = std::move(table);
  document["lambda_star"] = nullptr;
  write_text(file, document.dump(2));
  const cc::CalibrationRecord read = cc::read_calibration_json(file);
  CHECK(read.result.table.size() == kRows);
  CHECK(read.result.table.back().lambda == 0.0);
}

TEST_CASE("a failing write leaves neither a new file nor a temp file") {
  ScratchDir dir("atomic");
  // 1. The rename fails (the target is a directory): the temp file is removed again.
  const fs::path blocked = dir.path / "calm_calibration.json";
  fs::create_directory(blocked);
  CHECK(!error_of([&] { cc::write_calibration_json(blocked, sample_record()); }).empty());
  CHECK(fs::is_directory(blocked));
  CHECK(other_entries(dir.path, "calm_calibration.json").empty());

  // 2. An invalid record is refused before any file is touched; the old file stays intact.
  const fs::path file = dir.path / "calibration.json";
  cc::write_calibration_json(file, sample_record());
  const std::string before = read_text(file);
  cc::CalibrationRecord bad = sample_record();
  bad.result.delta = 1.5;
  const std::string message = error_of([&] { cc::write_calibration_json(file, bad); });
  CHECK(contains(message, "key 'delta'"));
  CHECK(read_text(file) == before);
  const auto leftovers = other_entries(dir.path, "calibration.json");
  CHECK(leftovers == std::vector<std::string>{"calm_calibration.json"});  // only the directory

  // 3. A directory that does not exist: error, nothing created.
  CHECK(!error_of([&] {
           cc::write_calibration_json(dir.path / "missing" / "c.json", sample_record());
         }).empty());
  CHECK(!fs::exists(dir.path / "missing"));
}

TEST_CASE("reading rejects unreadable, malformed and invalid files, naming file and key") {
  ScratchDir dir("read");
  const fs::path file = dir.path / "calm_calibration.json";
  const std::string name = file.string();

  std::string message = error_of([&] { cc::read_calibration_json(dir.path / "absent.json"); });
  CHECK(contains(message, "absent.json"));
  CHECK(contains(message, "cannot open"));

  write_text(file, "{ \"measure\": ");
  message = error_of([&] { cc::read_calibration_json(file); });
  CHECK(contains(message, name));
  CHECK(contains(message, "not valid JSON"));

  write_text(file, "[1, 2]");
  CHECK(contains(error_of([&] { cc::read_calibration_json(file); }), "expected an object"));

  nlohmann::json document = cc::to_json(sample_record());
  document.erase("epsilon");
  write_text(file, document.dump());
  message = error_of([&] { cc::read_calibration_json(file); });
  CHECK(contains(message, name));
  CHECK(contains(message, "key 'epsilon': missing"));

  struct Case {
    std::string key;
    nlohmann::json value;
    std::string expected;
  };
  const Case cases[] = {
      {"delta", "0.1", "key 'delta': expected a number, got string"},
      {"delta", 0.0, "key 'delta': value 0 is outside (0, 1)"},
      {"epsilon", 1.0, "key 'epsilon': value 1 is outside (0, 1)"},
      {"n", 0, "key 'n': expected a positive integer"},
      {"n", -3, "key 'n'"},
      {"distance", "levenshtein", "key 'distance': unknown distance 'levenshtein'"},
      {"method", "clopper-pearson", "key 'method': unknown p-value method 'clopper-pearson'"},
      {"consistency", "global", "key 'consistency'"},
      {"schedule", 3, "key 'schedule': expected a string or an object"},
      {"measure", "", "key 'measure': is empty"},
      {"lambda_star", 0.8, "key 'lambda_star': must be the lambda of the last passing table row"},
      {"lambda_star", nullptr, "key 'lambda_star'"},
      {"version", 3, "key 'version': expected 1 or 2, got 3"},
      {"version", 0, "key 'version'"},
      {"decoding", "greedy", "key 'decoding': expected an object, got string"},
      {"format", "other", "key 'format'"},
      {"table", nlohmann::json::array(), "key 'table': expected a non-empty array"},
      {"model_fingerprint", 42, "key 'model_fingerprint': expected a string"},
      // A misspelt or foreign key is refused, not ignored (lambda_star would be silently absent).
      {"lambda_start", 0.9, "key 'lambda_start': unknown key"},
      {"comment", "ok", "key 'comment': unknown key"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.key);
    write_modified(file, c.key, c.value);
    message = error_of([&] { cc::read_calibration_json(file); });
    CAPTURE(message);
    CHECK(contains(message, name));
    CHECK(contains(message, c.expected));
  }

  // Table rows: each inconsistency names the row.
  auto with_row = [&](std::size_t j, const std::string& key, const nlohmann::json& value) {
    nlohmann::json doc = cc::to_json(sample_record());
    doc["table"][j][key] = value;
    write_text(file, doc.dump());
    return error_of([&] { cc::read_calibration_json(file); });
  };
  CHECK(contains(with_row(1, "p_value", nullptr), "table[1]"));
  CHECK(contains(with_row(1, "p_value", 0.5), "key 'table[1].passed': disagrees"));
  CHECK(contains(with_row(1, "mean_loss", 1.5), "key 'table[1].mean_loss': value 1.5"));
  CHECK(contains(with_row(1, "lambda", 1.0), "key 'table[1].lambda': lambdas must be strictly"));
  CHECK(contains(with_row(3, "passed", true), "key 'table[3].passed'"));
  CHECK(contains(with_row(0, "tested", "yes"), "key 'table[0].tested': expected true/false"));
}

TEST_CASE("decoding record: sampled round trip, version 1 read as not recorded, bad fields named") {
  ScratchDir dir("decoding");
  const fs::path file = dir.path / "calm_calibration.json";
  const std::string name = file.string();

  cc::CalibrationRecord record = sample_record();
  record.decoding = sampled();
  cc::write_calibration_json(file, record);
  const nlohmann::json document = nlohmann::json::parse(read_text(file));
  CHECK(document["version"] == 2);
  CHECK(document["decoding"] == nlohmann::json{{"mode", "sample"}, {"temperature", 0.8},
                                               {"top_k", 40}, {"top_p", 0.95}, {"seed", 7},
                                               {"seed_rule", std::string(cc::kSeedRule)},
                                               {"max_new_tokens", 32}, {"stop", "eos"}});
  const cc::CalibrationRecord read = cc::read_calibration_json(file);
  REQUIRE(read.decoding.has_value());
  CHECK(*read.decoding == sampled());
  // The sampler options of prompt i: the record's parameters, prompt i's own seed.
  const calm::SamplingOptions s3 = read.decoding->sampling(3);
  CHECK(s3.temperature == 0.8f);
  CHECK(s3.top_k == 40);
  CHECK(s3.top_p == 0.95f);
  CHECK(s3.seed == cc::prompt_seed(7, 3));
  CHECK(cc::DecodingRecord{}.sampling(3).temperature == 0.0f);  // greedy

  // Version 1 (the committed models/shakespeare-8l file has this layout): no "decoding"; it reads
  // with the record empty and is written back as version 1, unchanged.
  nlohmann::json v1 = cc::to_json(sample_record());
  v1.erase("decoding");
  v1["version"] = 1;
  write_text(file, v1.dump());
  const cc::CalibrationRecord old = cc::read_calibration_json(file);
  CHECK_FALSE(old.decoding.has_value());
  CHECK(cc::to_json(old) == v1);
  CHECK(contains(cc::version1_decoding_note(), "greedy"));
  // A version-1 file with a decoding record, or version 2 without one, is refused.
  nlohmann::json v1_with = v1;
  v1_with["decoding"] = cc::to_json(sampled());
  write_text(file, v1_with.dump());
  CHECK(contains(error_of([&] { cc::read_calibration_json(file); }),
                 name + ": key 'decoding': not part of format version 1"));
  nlohmann::json v2_without = v1;
  v2_without["version"] = 2;
  write_text(file, v2_without.dump());
  CHECK(contains(error_of([&] { cc::read_calibration_json(file); }),
                 name + ": key 'decoding': missing"));

  struct Case {
    std::string key;
    nlohmann::json value;  // null: the key is erased
    std::string expected;
    bool greedy = false;   // modify the greedy record instead of the sampled one
  };
  const std::vector<Case> cases = {
      {"mode", "beam", "key 'decoding.mode': expected \"greedy\" or \"sample\", got \"beam\""},
      {"mode", nullptr, "key 'decoding.mode': missing"},
      {"temperature", 0.0, "key 'decoding.temperature': value 0 is outside (0, 100]"},
      {"temperature", "hot", "key 'decoding.temperature': expected a number, got string"},
      {"temperature", nullptr, "key 'decoding.temperature': missing"},
      {"top_k", -1, "key 'decoding.top_k': expected an integer"},
      {"top_k", 2.5, "key 'decoding.top_k': expected an integer"},
      {"top_p", 0.0, "key 'decoding.top_p': value 0 is outside (0, 1]"},
      {"top_p", 1.5, "key 'decoding.top_p': value 1.5 is outside (0, 1]"},
      {"seed", "7", "key 'decoding.seed': expected an integer"},
      {"seed_rule", "mt19937(seed)", "key 'decoding.seed_rule': expected \"splitmix64"},
      {"seed_rule", nullptr, "key 'decoding.seed_rule': missing"},
      {"max_new_tokens", 0, "key 'decoding.max_new_tokens': expected an integer in [1, 1048576]"},
      {"max_new_tokens", nullptr, "key 'decoding.max_new_tokens': missing"},
      {"stop", "length", "key 'decoding.stop': expected \"eos\""},
      {"beams", 4, "key 'decoding.beams': unknown key"},
      {"temperature", 0.8, "key 'decoding.temperature': not used with \"mode\": \"greedy\"", true},
      {"max_new_tokens", "32", "key 'decoding.max_new_tokens'", true},
  };
  for (const Case& c : cases) {
    CAPTURE(c.key);
    CAPTURE(c.value.dump());
    nlohmann::json doc = cc::to_json(sample_record());
    if (!c.greedy) doc["decoding"] = cc::to_json(sampled());
    if (c.value.is_null()) doc["decoding"].erase(c.key);
    else doc["decoding"][c.key] = c.value;
    write_text(file, doc.dump());
    const std::string message = error_of([&] { cc::read_calibration_json(file); });
    CAPTURE(message);
    CHECK(contains(message, name + ": "));
    CHECK(contains(message, c.expected));
  }
}

TEST_CASE("measure fingerprint: the classifier's file is recorded, checked and content-only") {
  ScratchDir dir("measure_fingerprint");
  const fs::path a = dir.path / "calm.safetensors", b = dir.path / "copy.safetensors";
  write_text(a, std::string(300, '\x05'));
  write_text(b, std::string(300, '\x05'));
  const std::string fa = cc::file_fingerprint(a);
  CHECK(fa.rfind("fnv1a64:", 0) == 0);
  CHECK(fa.size() == 24);
  CHECK(cc::file_fingerprint(b) == fa);  // the name does not count, the bytes do
  write_text(b, std::string(299, '\x05') + "\x06");
  CHECK(cc::file_fingerprint(b) != fa);
  CHECK(error_of([&] { cc::file_fingerprint(dir.path / "absent"); }).find("absent") != std::string::npos);

  const fs::path file = dir.path / "calm_calibration.json";
  cc::CalibrationRecord record = sample_record();
  record.decoding = cc::DecodingRecord{};
  record.measure_fingerprint = fa;
  cc::write_calibration_json(file, record);
  CHECK(cc::read_calibration_json(file).measure_fingerprint == fa);
  nlohmann::json doc = nlohmann::json::parse(read_text(file));
  doc["measure_fingerprint"] = "fnv1a64:12";
  write_text(file, doc.dump());
  CHECK(error_of([&] { cc::read_calibration_json(file); }).find("key 'measure_fingerprint'") !=
        std::string::npos);
  doc.erase("decoding");
  doc["version"] = 1;
  doc["measure_fingerprint"] = fa;
  write_text(file, doc.dump());
  CHECK(error_of([&] { cc::read_calibration_json(file); }).find("not part of format version 1") !=
        std::string::npos);
}

TEST_CASE("prompt_seed: SplitMix64's outputs, one per prompt") {
  // SplitMix64 seeded with 0: its first outputs (the published reference sequence).
  CHECK(cc::prompt_seed(0, 0) == 0xe220a8397b1dcdafULL);
  CHECK(cc::prompt_seed(0, 1) == 0x6e789e6aa1b965f4ULL);
  CHECK(cc::prompt_seed(0, 2) == 0x06c45d188009454fULL);
  CHECK(cc::prompt_seed(7, 5) == cc::prompt_seed(7, 5));
  CHECK(cc::prompt_seed(7, 5) != cc::prompt_seed(7, 6));
  CHECK(cc::prompt_seed(7, 5) != cc::prompt_seed(8, 5));
}

TEST_CASE("compare_decoding: every difference named, the seed not compared, v1 read as greedy") {
  const cc::DecodingRecord greedy{.max_new_tokens = 32};
  CHECK(cc::compare_decoding(greedy, greedy).differences.empty());
  CHECK(cc::compare_decoding(greedy, greedy).unchecked.empty());
  CHECK(cc::compare_decoding(sampled(), sampled()).differences.empty());
  cc::DecodingRecord other_seed = sampled();
  other_seed.seed = 99;  // one more draw of the randomness the guarantee averages over
  CHECK(cc::compare_decoding(sampled(), other_seed).differences.empty());
  // A run's float flag (0.8f) against the record's double (0.8): equal at the sampler's precision.
  cc::DecodingRecord from_float = sampled();
  from_float.temperature = static_cast<double>(0.8f);
  CHECK(cc::compare_decoding(sampled(), from_float).differences.empty());

  cc::DecodingRecord run = sampled();
  run.max_new_tokens = 120;
  auto c = cc::compare_decoding(greedy, run);
  REQUIRE(c.differences.size() == 2);
  CHECK(c.differences[0] == "decoding: sampling (temperature 0.8, top-k 40, top-p 0.95) here, "
                            "greedy in the certificate");
  CHECK(c.differences[1] == "max new tokens 120 here, 32 in the certificate");

  run = sampled();
  run.temperature = 0.7;
  run.top_k = 0;
  run.top_p = 1.0;
  c = cc::compare_decoding(sampled(), run);
  REQUIRE(c.differences.size() == 3);
  CHECK(c.differences[0] == "temperature 0.7 here, 0.8 in the certificate");
  CHECK(c.differences[1] == "top-k 0 here, 40 in the certificate");
  CHECK(c.differences[2] == "top-p 1 here, 0.95 in the certificate");
  CHECK(cc::compare_decoding(sampled(), greedy).differences[0] ==
        "decoding: greedy here, sampling (temperature 0.8, top-k 40, top-p 0.95) in the "
        "certificate");

  // Version 1: read as greedy; the length is not recorded, so not compared but listed.
  c = cc::compare_decoding(std::nullopt, cc::DecodingRecord{.max_new_tokens = 120});
  CHECK(c.differences.empty());
  REQUIRE(c.unchecked.size() == 1);
  CHECK(contains(c.unchecked[0], "max new tokens"));
  c = cc::compare_decoding(std::nullopt, sampled());
  REQUIRE(c.differences.size() == 1);
  CHECK(contains(c.differences[0], "greedy in the certificate"));
  CHECK(cc::decoding_description(greedy) == "greedy, up to 32 new tokens, stopping after EOS");
}

TEST_CASE("FNV-1a 64 matches the published test vectors") {
  // Vectors from the FNV reference (Fowler/Noll/Vo): "", "a", "foobar".
  auto hash = [](const std::string& text) {
    cc::detail::Fnv1a64 h;
    h.update(text.data(), text.size());
    return h.value();
  };
  CHECK(hash("") == 0xcbf29ce484222325ULL);
  CHECK(hash("a") == 0xaf63dc4c8601ec8cULL);
  CHECK(hash("foobar") == 0x85944171f73967e8ULL);
}

TEST_CASE("model fingerprint depends on the content of config, weights and tokenizer") {
  ScratchDir dir("fingerprint");
  const fs::path model = dir.path;
  write_text(model / "config.json", "{\"hidden_size\": 8}");
  write_text(model / "model.safetensors", std::string(1000, '\x01'));
  write_text(model / "tokenizer.model", "spm");
  const std::string first = cc::model_fingerprint(model);
  CHECK(first.size() == 8 + 16);
  CHECK(first.rfind("fnv1a64:", 0) == 0);
  CHECK(cc::model_fingerprint(model) == first);  // deterministic

  // Unrelated files do not matter; a one-byte change in the weights does.
  write_text(model / "README.md", "notes");
  CHECK(cc::model_fingerprint(model) == first);
  std::string weights(1000, '\x01');
  weights[500] = '\x02';
  write_text(model / "model.safetensors", weights);
  const std::string changed = cc::model_fingerprint(model);
  CHECK(changed != first);
  write_text(model / "tokenizer.model", "spn");
  CHECK(cc::model_fingerprint(model) != changed);
  // A tokenizer.json is the folder's tokenizer when present (as for Tokenizer::load_folder).
  const std::string with_model = cc::model_fingerprint(model);
  write_text(model / "tokenizer.json", "{}");
  const std::string with_json = cc::model_fingerprint(model);
  CHECK(with_json != with_model);
  write_text(model / "tokenizer.model", "spo");
  CHECK(cc::model_fingerprint(model) == with_json);  // tokenizer.model no longer counts
  write_text(model / "tokenizer.json", "{ }");
  CHECK(cc::model_fingerprint(model) != with_json);
  fs::remove(model / "tokenizer.json");
  write_text(model / "tokenizer.model", "spn");
  CHECK(cc::model_fingerprint(model) == with_model);

  // Missing files are named.
  fs::remove(model / "tokenizer.model");
  CHECK(contains(error_of([&] { cc::model_fingerprint(model); }), "tokenizer.model"));
  write_text(model / "tokenizer.model", "spm");
  fs::remove(model / "model.safetensors");
  CHECK(contains(error_of([&] { cc::model_fingerprint(model); }), "model.safetensors.index.json"));

  // Sharded weights: the index and every shard it names.
  write_text(model / "model-00001-of-00002.safetensors", "shard one");
  write_text(model / "model-00002-of-00002.safetensors", "shard two");
  write_text(model / "model.safetensors.index.json",
             R"({"weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                "b.weight": "model-00002-of-00002.safetensors",
                                "c.weight": "model-00001-of-00002.safetensors"}})");
  const std::string sharded = cc::model_fingerprint(model);
  write_text(model / "model-00002-of-00002.safetensors", "shard 2");
  CHECK(cc::model_fingerprint(model) != sharded);
  fs::remove(model / "model-00001-of-00002.safetensors");
  CHECK(contains(error_of([&] { cc::model_fingerprint(model); }),
                 "model-00001-of-00002.safetensors"));
  write_text(model / "model.safetensors.index.json",
             R"({"weight_map": {"a": "../x.safetensors"}})");
  CHECK(contains(error_of([&] { cc::model_fingerprint(model); }), "weight_map.a"));
}
