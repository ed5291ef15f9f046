// calm_calibration.json: the outcome of a calibration, written next to the model
// (docs/design.md §6), and a content fingerprint of the model files it was computed for.
//
// Layout (version 1):
//   { "format": "calm-calibration", "version": 1,
//     "measure": "softmax-response", "schedule": "<string>" | { ... },
//     "consistency": "textual" | "risk", "distance": "token-mismatch" | "rouge-l" | "token-f1",
//     "method": "hoeffding" | "bentkus" | "hoeffding-bentkus",
//     "delta": 0.1, "epsilon": 0.05, "n": 500,
//     "table": [ { "lambda": 1.0, "mean_loss": 0.0 | null, "p_value": 1e-12 | null,
//                  "tested": true, "passed": true }, ... ],
//     "lambda_star": 0.85 | null,
//     "model_fingerprint": "fnv1a64:0123456789abcdef" }
// Writing is atomic (calm::io::write_atomically: temp file in the same directory, fsync, rename):
// readers see the old file or the new one, never half of one.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
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

namespace calm::calibrate {

inline constexpr std::string_view kCalibrationFileName = "calm_calibration.json";
inline constexpr std::string_view kCalibrationFormat = "calm-calibration";
inline constexpr int kCalibrationVersion = 1;

// Everything calm_calibration.json holds.
struct CalibrationRecord {
  std::string measure;           // confidence measure, e.g. "softmax-response"
  nlohmann::json schedule = "";  // schedule description: a string or an object
  Consistency consistency = Consistency::textual;
  Distance distance = Distance::token_mismatch;  // D (textual) or R (risk)
  std::string model_fingerprint;                 // model_fingerprint(model_dir)
  CalibrationResult result;                      // delta, epsilon, n, method, table, lambda*
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

inline nlohmann::json to_json(const CalibrationRecord& record) {
  nlohmann::json table = nlohmann::json::array();
  for (const GridRow& row : record.result.table) {
    table.push_back({{"lambda", row.lambda},
                     {"mean_loss", detail::optional_number(row.mean_loss)},
                     {"p_value", detail::optional_number(row.p_value)},
                     {"tested", row.tested},
                     {"passed", row.passed}});
  }
  return {{"format", kCalibrationFormat},
          {"version", kCalibrationVersion},
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
}

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
  if (!version.is_number_integer() || version.get<std::int64_t>() != kCalibrationVersion) {
    read.fail("version", "expected " + std::to_string(kCalibrationVersion) + ", got " +
                             io::json_excerpt(version));
  }

  CalibrationRecord record;
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

// Content fingerprint of a model directory: FNV-1a 64 over config.json, the weights
// (model.safetensors, or model.safetensors.index.json plus the shards its weight_map names, in
// name order) and the tokenizer the folder uses (tokenizer.json, else tokenizer.model:
// io::tokenizer_file), each with its name and size. Reads every byte once: for a 7B
// bf16 model (~13 GB) that is ~10 s from page cache; for the bundled small models, milliseconds.
// Returns "fnv1a64:" followed by 16 lowercase hex digits.
inline std::string model_fingerprint(const std::filesystem::path& model_dir) {
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
    throw Error("model fingerprint: " + model_dir.string() +
                " has neither model.safetensors nor model.safetensors.index.json");
  }
  files.push_back(io::tokenizer_file(model_dir).filename().string());

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

}  // namespace calm::calibrate
