// calm_calibration.json: the outcome of a calibration, written next to the model
// (docs/design.md §6), and a content fingerprint of the model files it was computed for.
//
// Layout (version 2):
//   { "format": "calm-calibration", "version": 2,
//     "measure": "softmax", "schedule": "<string>" | { ... },
//     "consistency": "textual" | "risk", "distance": "token-mismatch" | "rouge-l" | "token-f1",
//     "method": "hoeffding" | "bentkus" | "hoeffding-bentkus",
//     "delta": 0.1, "epsilon": 0.05, "n": 500,
//     "table": [ { "lambda": 1.0, "mean_loss": 0.0 | null, "p_value": 1e-12 | null,
//                  "tested": true, "passed": true }, ... ],
//     "lambda_star": 0.85 | null,
//     "model_fingerprint": "fnv1a64:0123456789abcdef",
//     "decoding": { "mode": "greedy", "max_new_tokens": 32, "stop": "eos" }
//              | { "mode": "sample", "temperature": 0.8, "top_k": 40, "top_p": 1.0, "seed": 7,
//                  "seed_rule": "splitmix64(seed + prompt_index * 0x9e3779b97f4a7c15)",
//                  "max_new_tokens": 32, "stop": "eos" } }
// The guarantee holds for the decoding it was computed with only (docs/design.md §6): the
// "decoding" record says which. Version 1 is the same layout without "decoding"; it still reads,
// with CalibrationRecord::decoding empty: calm-calibrate then decoded greedily, stopping after EOS,
// and did not record how many tokens (version1_decoding_note()). A record without decoding
// settings is written as version 1.
// Writing is atomic (calm::io::write_atomically: temp file in the same directory, fsync, rename):
// readers see the old file or the new one, never half of one.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "calm/calibrate/distances.hpp"
#include "calm/calibrate/learn_then_test.hpp"
#include "calm/calibrate/pvalues.hpp"
#include "calm/core/error.hpp"
#include "calm/io/atomic_file.hpp"
#include "calm/io/json.hpp"
#include "calm/io/mapped_file.hpp"
#include "calm/io/tokenizer_file.hpp"
#include "calm/sampling/sampler.hpp"

namespace calm::calibrate {

inline constexpr std::string_view kCalibrationFileName = "calm_calibration.json";
inline constexpr std::string_view kCalibrationFormat = "calm-calibration";
inline constexpr int kCalibrationVersion = 2;  // 1: the same without "decoding"

// The per-prompt seed rule of sampled calibrations, as "decoding.seed_rule" names it.
inline constexpr std::string_view kSeedRule = "splitmix64(seed + prompt_index * 0x9e3779b97f4a7c15)";

// The seed that prompt `prompt_index` samples with, from the base seed: the first output of
// SplitMix64 (Steele, Lea and Flood 2014) started at seed + prompt_index * golden gamma, i.e. the
// prompt_index-th output of the generator seeded with `seed`. The full model and every lambda
// decode a prompt with this same seed, so their samples share the uniform draws step by step
// (common random numbers): the loss then measures the early exits, not sampling noise.
inline std::uint64_t prompt_seed(std::uint64_t seed, std::size_t prompt_index) noexcept {
  std::uint64_t z = seed + (static_cast<std::uint64_t>(prompt_index) + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The largest top-k "decoding.top_k" holds.
inline constexpr std::size_t kMaxTopK = std::numeric_limits<std::uint32_t>::max();

// How a calibration decoded each prompt. The stop rule is fixed: generation ends after the
// tokenizer's EOS, which is not part of the text compared ("stop": "eos").
struct DecodingRecord {
  double temperature = 0.0;  // 0: greedy (argmax); top_k, top_p and seed are then unused (0, 1, 0)
  std::size_t top_k = 0;     // 0: no top-k cut
  double top_p = 1.0;        // 1: no nucleus cut
  std::uint64_t seed = 0;    // base seed: prompt i samples with prompt_seed(seed, i)
  std::size_t max_new_tokens = 32;

  bool greedy() const noexcept { return temperature == 0.0; }
  // The sampler options of prompt `prompt_index`.
  SamplingOptions sampling(std::size_t prompt_index) const noexcept {
    if (greedy()) return {};
    return {.temperature = static_cast<float>(temperature), .top_k = top_k,
            .top_p = static_cast<float>(top_p), .seed = prompt_seed(seed, prompt_index)};
  }
  bool operator==(const DecodingRecord&) const = default;
};

// "greedy" or "sampling (temperature 0.8, top-k 40, top-p 1, seed 7 per prompt)" (no length).
inline std::string decoding_mode_description(const DecodingRecord& d) {
  if (d.greedy()) return "greedy";
  std::ostringstream text;
  text << "sampling (temperature " << d.temperature << ", top-k " << d.top_k << ", top-p "
       << d.top_p << ")";
  return text.str();
}

// "greedy, up to 32 new tokens, stopping after EOS".
inline std::string decoding_description(const DecodingRecord& d) {
  return decoding_mode_description(d) + ", up to " + std::to_string(d.max_new_tokens) +
         " new tokens, stopping after EOS";
}

// What a version-1 file (no "decoding") is read as.
inline std::string version1_decoding_note() {
  return "format version 1 records no decoding settings: read as greedy decoding stopping after "
         "EOS (the only decoding calm-calibrate had then); its max new tokens are not recorded "
         "and cannot be checked";
}

// A run's decoding against a certificate's. The seed is not compared: the calibration drew one
// seed per prompt, and the guarantee bounds the expected loss over that randomness, of which a
// run's seed is one more draw.
struct DecodingComparison {
  std::vector<std::string> differences;  // each names the setting, the run's and the certified value
  std::vector<std::string> unchecked;    // settings the certificate does not record
};

inline DecodingComparison compare_decoding(const std::optional<DecodingRecord>& certified,
                                           const DecodingRecord& run) {
  DecodingComparison out;
  const DecodingRecord cert = certified.value_or(DecodingRecord{});  // version 1: greedy
  const auto number = [](double v) {
    std::ostringstream text;
    text << v;
    return text.str();
  };
  if (run.greedy() != cert.greedy()) {
    out.differences.push_back("decoding: " + decoding_mode_description(run) + " here, " +
                              decoding_mode_description(cert) + " in the certificate");
  } else if (!run.greedy()) {
    // Compared at the precision the sampler uses (float).
    const auto differs = [](double a, double b) {
      return static_cast<float>(a) != static_cast<float>(b);
    };
    if (differs(run.temperature, cert.temperature))
      out.differences.push_back("temperature " + number(run.temperature) + " here, " +
                                number(cert.temperature) + " in the certificate");
    if (run.top_k != cert.top_k)
      out.differences.push_back("top-k " + std::to_string(run.top_k) + " here, " +
                                std::to_string(cert.top_k) + " in the certificate");
    if (differs(run.top_p, cert.top_p))
      out.differences.push_back("top-p " + number(run.top_p) + " here, " + number(cert.top_p) +
                                " in the certificate");
  }
  if (!certified) {
    out.unchecked.push_back("max new tokens (not recorded in format version 1)");
  } else if (run.max_new_tokens != cert.max_new_tokens) {
    // The decaying schedule's threshold depends on t / max new tokens (docs/design.md §4), and
    // the loss is measured over the whole generated text: another length is another test.
    out.differences.push_back("max new tokens " + std::to_string(run.max_new_tokens) + " here, " +
                              std::to_string(cert.max_new_tokens) + " in the certificate");
  }
  return out;
}

// Everything calm_calibration.json holds.
struct CalibrationRecord {
  std::string measure;           // confidence measure, its registry name, e.g. "softmax"
  nlohmann::json schedule = "";  // schedule description: a string or an object
  Consistency consistency = Consistency::textual;
  Distance distance = Distance::token_mismatch;  // D (textual) or R (risk)
  std::string model_fingerprint;                 // model_fingerprint(model_dir)
  CalibrationResult result;                      // delta, epsilon, n, method, table, lambda*
  std::optional<DecodingRecord> decoding;        // empty: not recorded (format version 1)
  // file_fingerprint of the file a measure reads (the exit classifier's calm.safetensors): a
  // certificate holds for that classifier only. Empty: the measure reads no file, or version 1.
  std::string measure_fingerprint;
};

namespace detail {

inline nlohmann::json optional_number(const std::optional<double>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

// Field access that names the file and key in every error.
class JsonReader {
 public:
  explicit JsonReader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    throw Error(source_ + ": key '" + key + "': " + problem);
  }

  const nlohmann::json& field(const nlohmann::json& object, const std::string& key,
                              const std::string& path) const {
    const auto it = object.find(key);
    if (it == object.end()) fail(path, "missing");
    return *it;
  }

  std::string string(const nlohmann::json& value, const std::string& path) const {
    if (!value.is_string()) fail(path, "expected a string, got " + std::string(value.type_name()));
    return value.get<std::string>();
  }

  bool boolean(const nlohmann::json& value, const std::string& path) const {
    if (!value.is_boolean())
      fail(path, "expected true/false, got " + std::string(value.type_name()));
    return value.get<bool>();
  }

  // A number in [low, high] (open ends when the flags say so).
  double number(const nlohmann::json& value, const std::string& path, double low, double high,
                bool open_low = false, bool open_high = false) const {
    if (!value.is_number()) fail(path, "expected a number, got " + std::string(value.type_name()));
    const double x = value.get<double>();
    const bool above = open_low ? x > low : x >= low;
    const bool below = open_high ? x < high : x <= high;
    if (!(above && below)) {
      std::ostringstream range;
      range.precision(17);
      range << "value " << x << " is outside " << (open_low ? "(" : "[") << low << ", " << high
            << (open_high ? ")" : "]");
      fail(path, range.str());
    }
    return x;
  }

  std::optional<double> optional_number(const nlohmann::json& value, const std::string& path,
                                        double low, double high) const {
    if (value.is_null()) return std::nullopt;
    return number(value, path, low, high);
  }

  template <class Parse>
  auto parsed(const nlohmann::json& value, const std::string& path, Parse parse) const {
    const std::string text = string(value, path);
    try {
      return parse(text);
    } catch (const Error& error) {
      fail(path, error.what());
    }
  }

 private:
  std::string source_;
};

}  // namespace detail

inline nlohmann::json to_json(const DecodingRecord& d) {
  nlohmann::json out = {{"mode", d.greedy() ? "greedy" : "sample"}};
  if (!d.greedy()) {
    out["temperature"] = d.temperature;
    out["top_k"] = d.top_k;
    out["top_p"] = d.top_p;
    out["seed"] = d.seed;
    out["seed_rule"] = kSeedRule;
  }
  out["max_new_tokens"] = d.max_new_tokens;
  out["stop"] = "eos";
  return out;
}

inline nlohmann::json to_json(const CalibrationRecord& record) {
  nlohmann::json table = nlohmann::json::array();
  for (const GridRow& row : record.result.table) {
    table.push_back({{"lambda", row.lambda},
                     {"mean_loss", detail::optional_number(row.mean_loss)},
                     {"p_value", detail::optional_number(row.p_value)},
                     {"tested", row.tested},
                     {"passed", row.passed}});
  }
  nlohmann::json document = {{"format", kCalibrationFormat},
          {"version", record.decoding ? kCalibrationVersion : 1},
          {"measure", record.measure},
          {"schedule", record.schedule},
          {"consistency", to_string(record.consistency)},
          {"distance", to_string(record.distance)},
          {"method", to_string(record.result.method)},
          {"delta", record.result.delta},
          {"epsilon", record.result.epsilon},
          {"n", record.result.n},
          {"table", std::move(table)},
          {"lambda_star", detail::optional_number(record.result.lambda_star)},
          {"model_fingerprint", record.model_fingerprint}};
  if (record.decoding) document["decoding"] = to_json(*record.decoding);
  if (!record.measure_fingerprint.empty()) document["measure_fingerprint"] = record.measure_fingerprint;
  return document;
}

namespace detail {

// The "decoding" object of a version-2 document; every key is checked, unknown ones refused.
inline DecodingRecord decoding_from_json(const JsonReader& read, const nlohmann::json& value) {
  if (!value.is_object())
    read.fail("decoding", "expected an object, got " + std::string(value.type_name()));
  const auto integer = [&](const std::string& key, std::uint64_t low, std::uint64_t high) {
    const auto& v = read.field(value, key, "decoding." + key);
    if (!v.is_number_unsigned() || v.get<std::uint64_t>() < low || v.get<std::uint64_t>() > high)
      read.fail("decoding." + key, "expected an integer in [" + std::to_string(low) + ", " +
                                       std::to_string(high) + "], got " + io::json_excerpt(v));
    return v.get<std::uint64_t>();
  };
  DecodingRecord d;
  const std::string mode = read.string(read.field(value, "mode", "decoding.mode"), "decoding.mode");
  if (mode != "greedy" && mode != "sample")
    read.fail("decoding.mode", "expected \"greedy\" or \"sample\", got \"" + mode + "\"");
  std::set<std::string> known = {"mode", "max_new_tokens", "stop"};
  if (mode == "sample") {
    known.insert({"temperature", "top_k", "top_p", "seed", "seed_rule"});
    d.temperature = read.number(read.field(value, "temperature", "decoding.temperature"),
                                "decoding.temperature", 0.0, 100.0, /*open_low=*/true);
    d.top_k = static_cast<std::size_t>(integer("top_k", 0, kMaxTopK));
    d.top_p = read.number(read.field(value, "top_p", "decoding.top_p"), "decoding.top_p", 0.0,
                          1.0, /*open_low=*/true);
    d.seed = integer("seed", 0, std::numeric_limits<std::uint64_t>::max());
    if (read.string(read.field(value, "seed_rule", "decoding.seed_rule"), "decoding.seed_rule") !=
        kSeedRule)
      read.fail("decoding.seed_rule", "expected \"" + std::string(kSeedRule) + "\"");
  }
  d.max_new_tokens = static_cast<std::size_t>(integer("max_new_tokens", 1, 1 << 20));
  if (read.string(read.field(value, "stop", "decoding.stop"), "decoding.stop") != "eos")
    read.fail("decoding.stop", "expected \"eos\" (generation ends after the tokenizer's EOS)");
  for (const auto& [key, unused] : value.items())
    if (!known.count(key))
      read.fail("decoding." + key, mode == "greedy" && (key == "temperature" || key == "top_k" ||
                                                        key == "top_p" || key == "seed" ||
                                                        key == "seed_rule")
                                       ? "not used with \"mode\": \"greedy\""
                                       : "unknown key");
  return d;
}

}  // namespace detail

// Parses and validates a calibration document; `source` (usually the file name) prefixes errors.
inline CalibrationRecord calibration_from_json(const nlohmann::json& document,
                                               const std::string& source) {
  const detail::JsonReader read(source);
  if (!document.is_object()) {
    read.fail("(top level)", "expected an object, got " + std::string(document.type_name()));
  }
  if (read.string(read.field(document, "format", "format"), "format") != kCalibrationFormat) {
    read.fail("format", "expected \"" + std::string(kCalibrationFormat) + "\"");
  }
  const auto& version = read.field(document, "version", "version");
  if (!version.is_number_integer() || version.get<std::int64_t>() < 1 ||
      version.get<std::int64_t>() > kCalibrationVersion) {
    read.fail("version", "expected 1 or " + std::to_string(kCalibrationVersion) + ", got " +
                             io::json_excerpt(version));
  }

  // Every key is one this format defines: a misspelt key would otherwise be silently ignored.
  for (const auto& [key, unused] : document.items())
    if (!std::set<std::string_view>{"format", "version", "measure", "schedule", "consistency",
                                    "distance", "method", "delta", "epsilon", "n", "table",
                                    "lambda_star", "model_fingerprint", "decoding",
                                    "measure_fingerprint"}
             .count(key))
      read.fail(key, "unknown key");

  CalibrationRecord record;
  if (version.get<std::int64_t>() >= 2) {
    record.decoding = detail::decoding_from_json(read, read.field(document, "decoding", "decoding"));
  } else if (document.contains("decoding")) {
    read.fail("decoding", "not part of format version 1 (a file with it is version 2)");
  }
  record.measure = read.string(read.field(document, "measure", "measure"), "measure");
  if (record.measure.empty()) read.fail("measure", "is empty");
  record.schedule = read.field(document, "schedule", "schedule");
  if (!record.schedule.is_string() && !record.schedule.is_object()) {
    read.fail("schedule",
              "expected a string or an object, got " + std::string(record.schedule.type_name()));
  }
  record.consistency =
      read.parsed(read.field(document, "consistency", "consistency"), "consistency",
                  [](const std::string& s) { return parse_consistency(s); });
  record.distance = read.parsed(read.field(document, "distance", "distance"), "distance",
                                [](const std::string& s) { return parse_distance(s); });
  record.model_fingerprint = read.string(
      read.field(document, "model_fingerprint", "model_fingerprint"), "model_fingerprint");
  if (document.contains("measure_fingerprint")) {
    if (!record.decoding)
      read.fail("measure_fingerprint", "not part of format version 1 (a file with it is version 2)");
    record.measure_fingerprint = read.string(document["measure_fingerprint"], "measure_fingerprint");
    if (record.measure_fingerprint.rfind("fnv1a64:", 0) != 0 || record.measure_fingerprint.size() != 24)
      read.fail("measure_fingerprint", "expected \"fnv1a64:\" and 16 hex digits, got " +
                                           io::json_excerpt(document["measure_fingerprint"]));
  }

  CalibrationResult& result = record.result;
  result.method = read.parsed(read.field(document, "method", "method"), "method",
                              [](const std::string& s) { return parse_p_value_method(s); });
  result.delta = read.number(read.field(document, "delta", "delta"), "delta", 0.0, 1.0, true, true);
  result.epsilon =
      read.number(read.field(document, "epsilon", "epsilon"), "epsilon", 0.0, 1.0, true, true);
  const auto& n = read.field(document, "n", "n");
  if (!n.is_number_unsigned() || n.get<std::uint64_t>() == 0) {
    read.fail("n", "expected a positive integer, got " + io::json_excerpt(n));
  }
  result.n = n.get<std::size_t>();

  const auto& table = read.field(document, "table", "table");
  if (!table.is_array() || table.empty()) read.fail("table", "expected a non-empty array");
  bool walk_ended = false;  // fixed sequence: once a row fails, no later row is tested
  std::optional<double> last_passed;
  for (std::size_t j = 0; j < table.size(); ++j) {
    const std::string at = "table[" + std::to_string(j) + "]";
    const auto& entry = table[j];
    if (!entry.is_object())
      read.fail(at, "expected an object, got " + std::string(entry.type_name()));
    GridRow row;
    row.lambda = read.number(read.field(entry, "lambda", at + ".lambda"), at + ".lambda", 0.0, 1.0);
    if (j > 0 && !(row.lambda < result.table.back().lambda)) {
      read.fail(at + ".lambda", "lambdas must be strictly descending");
    }
    row.tested = read.boolean(read.field(entry, "tested", at + ".tested"), at + ".tested");
    row.passed = read.boolean(read.field(entry, "passed", at + ".passed"), at + ".passed");
    row.mean_loss = read.optional_number(read.field(entry, "mean_loss", at + ".mean_loss"),
                                         at + ".mean_loss", 0.0, 1.0);
    row.p_value = read.optional_number(read.field(entry, "p_value", at + ".p_value"),
                                       at + ".p_value", 0.0, 1.0);
    if (row.tested != row.mean_loss.has_value() || row.tested != row.p_value.has_value()) {
      read.fail(at, "mean_loss and p_value must be numbers when tested and null when not");
    }
    if (row.tested && walk_ended) read.fail(at + ".tested", "tested after a failing lambda");
    if (row.tested && row.passed != (*row.p_value <= result.epsilon)) {
      read.fail(at + ".passed", "disagrees with p_value <= epsilon");
    }
    if (!row.tested && row.passed) read.fail(at + ".passed", "true for an untested lambda");
    if (row.tested && !row.passed) walk_ended = true;
    if (!row.tested) walk_ended = true;
    if (row.passed) last_passed = row.lambda;
    result.table.push_back(row);
  }
  const auto& star = read.field(document, "lambda_star", "lambda_star");
  result.lambda_star = read.optional_number(star, "lambda_star", 0.0, 1.0);
  if (result.lambda_star != last_passed) {
    read.fail("lambda_star", "must be the lambda of the last passing table row (" +
                                 (last_passed ? nlohmann::json(*last_passed).dump() : "null") +
                                 "), got " + io::json_excerpt(star));
  }
  return record;
}

// Writes the record as JSON (2-space indent), atomically. The document is first read back through
// calibration_from_json, so a file that calm could not read is never written.
inline void write_calibration_json(const std::filesystem::path& path,
                                   const CalibrationRecord& record) {
  const nlohmann::json document = to_json(record);
  calibration_from_json(document, path.string() + " (before writing)");
  const std::string text = document.dump(2) + "\n";
  io::write_atomically(
      path, [&](std::FILE* file) { io::write_all(file, text.data(), text.size(), path); });
}

// The whole file is parsed (calm::io::parse_json: a NUL byte, a key twice or deep nesting is an
// error naming the file); a FIFO or other non-regular file is refused without blocking.
inline CalibrationRecord read_calibration_json(const std::filesystem::path& path) {
  const io::MappedFile file(path);
  const nlohmann::json document =
      io::parse_json(io::as_text(file.bytes()), "calibration file", path.string());
  return calibration_from_json(document, path.string());
}

namespace detail {

// FNV-1a, 64-bit: one multiply per byte (~1 GB/s), no dependency; enough to tell model files
// apart, not a cryptographic hash.
class Fnv1a64 {
 public:
  void update(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < size; ++i) {
      state_ ^= bytes[i];
      state_ *= 0x100000001b3ULL;
    }
  }
  std::uint64_t value() const { return state_; }

 private:
  std::uint64_t state_ = 0xcbf29ce484222325ULL;
};

// Hashes the file's name, its size (8 bytes, little-endian) and its content.
inline void hash_file(Fnv1a64& hash, const std::filesystem::path& file, const std::string& name) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error("model fingerprint: cannot open " + file.string());
  hash.update(name.data(), name.size() + 1);  // with the terminating NUL as a separator
  std::error_code error;
  const std::uint64_t size = std::filesystem::file_size(file, error);
  if (error)
    throw Error("model fingerprint: cannot stat " + file.string() + ": " + error.message());
  unsigned char size_bytes[8];
  for (int b = 0; b < 8; ++b) size_bytes[b] = static_cast<unsigned char>(size >> (8 * b));
  hash.update(size_bytes, sizeof size_bytes);
  std::vector<char> buffer(1 << 20);
  std::uint64_t total = 0;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    hash.update(buffer.data(), static_cast<std::size_t>(in.gcount()));
    total += static_cast<std::uint64_t>(in.gcount());
  }
  if (in.bad() || total != size) throw Error("model fingerprint: error reading " + file.string());
}

}  // namespace detail

// Content fingerprint of one file (FNV-1a 64 over its bytes, whatever its name):
// the exit classifier's calm.safetensors, which a classifier certificate depends on as much as
// on the weights. Returns "fnv1a64:" followed by 16 lowercase hex digits.
inline std::string file_fingerprint(const std::filesystem::path& file) {
  if (!std::filesystem::is_regular_file(file))
    throw Error("fingerprint: " + file.string() + " is missing or not a regular file");
  detail::Fnv1a64 hash;
  detail::hash_file(hash, file, "measure-file");  // the content, whatever the file is called
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash.value()));
  return "fnv1a64:" + std::string(hex);
}

// Content fingerprint of a model directory: FNV-1a 64 over config.json, the weights
// (model.safetensors, or model.safetensors.index.json plus the shards its weight_map names, in
// name order) and the tokenizer the folder uses (tokenizer.json, else tokenizer.model:
// io::tokenizer_file), each with its name and size. Reads every byte once: for a 7B
// bf16 model (~13 GB) that is ~10 s from page cache; for the bundled small models, milliseconds.
// Returns "fnv1a64:" followed by 16 lowercase hex digits.
inline std::string model_fingerprint(const std::filesystem::path& model_dir);

// The files of a model folder that loading the model reads and model_fingerprint hashes, by name
// in the folder: config.json, the weights (model.safetensors, or model.safetensors.index.json
// and the shards its weight_map names) and the tokenizer file (io::tokenizer_file).
inline std::vector<std::string> model_files(const std::filesystem::path& model_dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> files = {"config.json"};
  if (fs::exists(model_dir / "model.safetensors")) {
    files.emplace_back("model.safetensors");
  } else if (const fs::path index = model_dir / "model.safetensors.index.json"; fs::exists(index)) {
    files.emplace_back("model.safetensors.index.json");
    const io::MappedFile index_file(index);  // refuses a FIFO instead of blocking on it
    const nlohmann::json document =
        io::parse_json(io::as_text(index_file.bytes()), "index", index.string());
    const auto weight_map = document.find("weight_map");
    if (weight_map == document.end() || !weight_map->is_object()) {
      throw Error(index.string() + ": key 'weight_map': missing or not an object");
    }
    std::set<std::string> shards;
    for (const auto& [tensor, shard] : weight_map->items()) {
      if (!shard.is_string() || shard.get<std::string>().find('/') != std::string::npos) {
        throw Error(index.string() + ": key 'weight_map." + tensor +
                    "': expected a file name in the model directory, got " +
                    io::json_excerpt(shard));
      }
      shards.insert(shard.get<std::string>());
    }
    files.insert(files.end(), shards.begin(), shards.end());
  } else {
    throw Error("model folder " + model_dir.string() +
                " has neither model.safetensors nor model.safetensors.index.json");
  }
  files.push_back(io::tokenizer_file(model_dir).filename().string());
  return files;
}

// Every file a run on model_dir reads: model_files(), tokenizer_config.json, and `others` (prompt
// files, a certificate, a classifier; empty paths are skipped). An output path is checked
// against these (io::check_writable_destination) so that no run replaces its own input.
inline std::vector<std::filesystem::path> run_inputs(const std::filesystem::path& model_dir,
                                                     const std::vector<std::filesystem::path>& others) {
  std::vector<std::filesystem::path> inputs;
  for (const std::string& name : model_files(model_dir)) inputs.push_back(model_dir / name);
  inputs.push_back(model_dir / "tokenizer_config.json");
  for (const std::filesystem::path& other : others)
    if (!other.empty()) inputs.push_back(other);
  return inputs;
}

inline std::string model_fingerprint(const std::filesystem::path& model_dir) {
  namespace fs = std::filesystem;
  const std::vector<std::string> files = model_files(model_dir);
  detail::Fnv1a64 hash;
  for (const std::string& name : files) {
    const fs::path file = model_dir / name;
    if (!fs::is_regular_file(file)) {
      throw Error("model fingerprint: " + file.string() + " is missing or not a regular file");
    }
    detail::hash_file(hash, file, name);
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash.value()));
  return "fnv1a64:" + std::string(hex);
}

// A certificate holds for the model it was computed on only: refuses `record` (read from
// `source`) unless its fingerprint is model_dir's.
inline void check_model_fingerprint(const CalibrationRecord& record,
                                    const std::filesystem::path& model_dir,
                                    const std::string& source) {
  const std::string fingerprint = model_fingerprint(model_dir);
  if (record.model_fingerprint != fingerprint)
    throw Error("'" + source + "' was calibrated for another model (fingerprint " +
                record.model_fingerprint + ", this model " + fingerprint + ")");
}

}  // namespace calm::calibrate
