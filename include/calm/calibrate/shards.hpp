// Sharded calibration and evaluation (docs/design.md "Sharded calibration", docs/cluster.md).
//
// Shard K of N decodes the prompts i with i mod N = K and writes what it measured (each prompt's
// loss, layers, tokens and seconds per configuration) to a shard file; a merge checks that the
// shards fit together and rebuilds the tables one machine would have decoded, prompt by prompt,
// so that Learn-then-Test and the split validation run on the same numbers in the same order.
//
// Shard file layout (version 1):
//   { "format": "calm-shard", "version": 1, "program": "calm-calibrate" | "calm-eval",
//     "shard": 3, "shards": 8, "prompts": 500, "num_layers": 32,
//     "settings": { ... },          // everything the decodes depend on; equal in every shard
//     "configurations": [ { "name": "full" | "softmax@0.95" | ...,
//                           "loss": [...], "layer_sum": [...], "tokens": [...], "seconds": [...] },
//                         ... ],     // one entry per prompt of the shard, in prompt order
//     "stopped": null | { "after": "softmax@0.85", "p_value_bound": 0.31 } }
// Numbers are written with the shortest text that reads back as the same double (nlohmann's
// dump), so a merged loss is bit for bit the loss the shard computed.
#pragma once

#include "calm/calibrate/learn_then_test.hpp"
#include "calm/calibrate/pvalues.hpp"
#include "calm/calibrate/validation.hpp"
#include "calm/core/error.hpp"
#include "calm/io/atomic_file.hpp"
#include "calm/io/json.hpp"
#include "calm/io/mapped_file.hpp"
#include "calm/io/prompts.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace calm::calibrate {

inline constexpr std::string_view kShardFormat = "calm-shard";
inline constexpr int kShardVersion = 1;

// Shard `index` of `count`: the prompts i with i mod count = index.
struct Shard {
  std::size_t index = 0;
  std::size_t count = 1;
  bool operator==(const Shard&) const = default;
};

// The prompts of `shard` among n: index, index + count, ...
inline std::vector<std::size_t> shard_prompts(Shard shard, std::size_t n) {
  std::vector<std::size_t> prompts;
  for (std::size_t i = shard.index; i < n; i += shard.count) prompts.push_back(i);
  return prompts;
}

namespace detail {

// A non-negative decimal integer, all of `text`, or nothing.
inline std::optional<std::size_t> parse_index(std::string_view text) {
  std::size_t value = 0;
  if (text.empty() || text.size() > 9) return std::nullopt;  // 10^9 shards is not a cluster
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

inline void check_shard(Shard shard, const std::string& where) {
  if (shard.count == 0) throw Error(where + ": the shard count is 0 (need N >= 1)");
  if (shard.index >= shard.count)
    throw Error(where + ": shard index " + std::to_string(shard.index) + " is not below the count " +
                std::to_string(shard.count) + " (shards are numbered 0 to N-1)");
}

}  // namespace detail

// "K/N" as --shard takes it, e.g. "3/8"; `flag` names the setting in errors.
inline Shard parse_shard(std::string_view text, const std::string& flag = "--shard") {
  const std::size_t slash = text.find('/');
  const auto index = detail::parse_index(text.substr(0, slash));
  const auto count =
      slash == std::string_view::npos ? std::nullopt : detail::parse_index(text.substr(slash + 1));
  if (!index || !count)
    throw Error(flag + " '" + std::string(text) + "': expected K/N, the shard index K from 0 to "
                "N-1 and the shard count N in decimal digits, e.g. 3/8");
  const Shard shard{*index, *count};
  detail::check_shard(shard, flag + " '" + std::string(text) + "'");
  return shard;
}

// Where a shard came from: --shard, or the variables a cluster engine sets (origin says which).
struct ShardChoice {
  std::optional<Shard> shard;  // empty: decode every prompt (no shard)
  std::string origin;          // e.g. "--shard 3/8", "SLURM_ARRAY_TASK_ID=3 of SLURM_ARRAY_TASK_COUNT=8"
};

// The shard a job array or indexed job gives, from the environment (getenv(name) -> value or
// null):
//   Slurm job arrays: SLURM_ARRAY_TASK_ID, counted from SLURM_ARRAY_TASK_MIN, of
//     SLURM_ARRAY_TASK_COUNT tasks; the array must be a contiguous range (--array=0-7 or 1-8,
//     not 0-15:2 or 1,4,9), which MAX - MIN + 1 = COUNT confirms. With CALM_SHARD_COUNT set,
//     the task id is the shard and CALM_SHARD_COUNT the count: a rerun of the missing shards
//     (sbatch --array=3,17 --export=ALL,CALM_SHARD_COUNT=50);
//   Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX, of CALM_SHARD_COUNT (Kubernetes does not put
//     the Job's completions in the pod's environment: the manifest sets CALM_SHARD_COUNT to it).
// No variable set: no shard. Both engines' variables set: refused (which one is meant?).
inline ShardChoice shard_from_environment(const std::function<const char*(const char*)>& getenv) {
  const auto read = [&](const char* name) -> std::optional<std::string> {
    const char* value = getenv(name);
    return value ? std::optional<std::string>(value) : std::nullopt;
  };
  const auto number = [&](const char* name, bool required, const std::string& why) {
    const auto text = read(name);
    if (!text) {
      if (!required) return std::optional<std::size_t>();
      throw Error(why + " but " + name + " is not set");
    }
    const auto value = detail::parse_index(*text);
    if (!value)
      throw Error(std::string("environment variable ") + name + "='" + *text +
                  "' is not a shard number (decimal digits)");
    return value;
  };
  const bool slurm = read("SLURM_ARRAY_TASK_ID").has_value();
  const bool kubernetes = read("JOB_COMPLETION_INDEX").has_value();
  if (slurm && kubernetes)
    throw Error("both SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX are set: give --shard K/N to "
                "say which shard this is");
  ShardChoice choice;
  if (slurm && read("CALM_SHARD_COUNT")) {
    // A rerun of some shards (--array=3,17) names the count itself; the task id is the shard.
    const std::string why = "SLURM_ARRAY_TASK_ID is set (a Slurm job array)";
    const std::size_t id = *number("SLURM_ARRAY_TASK_ID", true, why);
    const std::size_t count = *number("CALM_SHARD_COUNT", true, why);
    choice.shard = Shard{id, count};
    choice.origin = "SLURM_ARRAY_TASK_ID=" + std::to_string(id) + " of CALM_SHARD_COUNT=" +
                    std::to_string(count);
  } else if (slurm) {
    const std::string why = "SLURM_ARRAY_TASK_ID is set (a Slurm job array)";
    const std::size_t id = *number("SLURM_ARRAY_TASK_ID", true, why);
    const std::size_t min = number("SLURM_ARRAY_TASK_MIN", false, why).value_or(0);
    const auto max = number("SLURM_ARRAY_TASK_MAX", false, why);
    const std::size_t count = *number("SLURM_ARRAY_TASK_COUNT", true, why);
    if (id < min || (max && (*max < min || *max - min + 1 != count)))
      throw Error("the Slurm job array is not one contiguous range of task ids (SLURM_ARRAY_TASK_ID=" +
                  std::to_string(id) + ", MIN=" + std::to_string(min) + ", MAX=" +
                  (max ? std::to_string(*max) : std::string("unset")) + ", COUNT=" +
                  std::to_string(count) + "): submit --array=0-N-1, or set CALM_SHARD_COUNT=N "
                  "(the task id is then the shard), or give --shard K/N");
    choice.shard = Shard{id - min, count};
    choice.origin = "SLURM_ARRAY_TASK_ID=" + std::to_string(id) +
                    (min ? " from SLURM_ARRAY_TASK_MIN=" + std::to_string(min) : std::string()) +
                    " of SLURM_ARRAY_TASK_COUNT=" + std::to_string(count);
  } else if (kubernetes) {
    const std::string why = "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job)";
    const std::size_t index = *number("JOB_COMPLETION_INDEX", true,  why);
    const auto count = number("CALM_SHARD_COUNT", false, why);
    if (!count)
      throw Error(why + " but CALM_SHARD_COUNT is not: set it to the Job's completions in the "
                  "pod template's env (docs/cluster.md), or give --shard K/N");
    choice.shard = Shard{index, *count};
    choice.origin = "JOB_COMPLETION_INDEX=" + std::to_string(index) + " of CALM_SHARD_COUNT=" +
                    std::to_string(*count);
  } else {
    return choice;
  }
  detail::check_shard(*choice.shard, choice.origin);
  return choice;
}

// What --shard says: "K/N", "none" (every prompt, whatever the environment says), or nothing
// given (the environment's shard, if any).
inline ShardChoice choose_shard(const std::optional<std::string>& flag,
                                const std::function<const char*(const char*)>& getenv) {
  if (!flag) return shard_from_environment(getenv);
  if (*flag == "none") return {std::nullopt, "--shard none"};
  return {parse_shard(*flag), "--shard " + *flag};
}

// "calm_calibration.shard-3-of-8.json" for stem "calm_calibration".
inline std::string shard_file_name(std::string_view stem, Shard shard) {
  return std::string(stem) + ".shard-" + std::to_string(shard.index) + "-of-" +
         std::to_string(shard.count) + ".json";
}

// A fingerprint of what the prompts say (each prompt and its reference, in order): shards of
// one run must read the same prompts, whatever their files are called or where they lie.
inline std::string prompts_fingerprint(const io::PromptFile& file) {
  std::uint64_t state = 0xcbf29ce484222325ULL;  // FNV-1a 64, as model_fingerprint
  const auto update = [&](std::string_view bytes, char separator) {
    for (char c : bytes) state = (state ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
    state = (state ^ static_cast<unsigned char>(separator)) * 0x100000001b3ULL;
  };
  for (const io::PromptRecord& r : file.prompts) {
    update(r.prompt, '\0');
    update(r.reference ? "r" + *r.reference : std::string("-"), '\n');
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(state));
  return "fnv1a64:" + std::string(hex);
}

// One configuration's decodes (the full model, a measure at one lambda, ...) of a shard's prompts.
struct ShardConfiguration {
  std::string name;
  std::vector<DecodeCost> costs;  // one per prompt of the shard, in prompt order
};

// What a shard measured; written by write_shard_file, read back by read_shard_file.
struct ShardFile {
  std::string program;  // "calm-calibrate" or "calm-eval"
  Shard shard;
  std::size_t prompts = 0;     // n: every prompt of the run, over all shards
  std::size_t num_layers = 0;  // L of the model
  nlohmann::json settings = nlohmann::json::object();
  std::vector<ShardConfiguration> configurations;
  std::optional<std::string> stopped_after;  // the configuration after which the shard stopped
  double p_value_bound = 1.0;                // the bound that let it stop (shard_stop_bound)
};

inline nlohmann::json to_json(const ShardFile& file) {
  nlohmann::json configurations = nlohmann::json::array();
  for (const ShardConfiguration& c : file.configurations) {
    nlohmann::json loss = nlohmann::json::array(), layers = nlohmann::json::array(),
                   tokens = nlohmann::json::array(), seconds = nlohmann::json::array();
    for (const DecodeCost& cost : c.costs) {
      loss.push_back(cost.loss);
      layers.push_back(cost.layer_sum);
      tokens.push_back(cost.tokens);
      seconds.push_back(cost.seconds);
    }
    configurations.push_back({{"name", c.name}, {"loss", std::move(loss)},
                              {"layer_sum", std::move(layers)}, {"tokens", std::move(tokens)},
                              {"seconds", std::move(seconds)}});
  }
  nlohmann::json stopped = nullptr;
  if (file.stopped_after)
    stopped = {{"after", *file.stopped_after}, {"p_value_bound", file.p_value_bound}};
  return {{"format", kShardFormat}, {"version", kShardVersion}, {"program", file.program},
          {"shard", file.shard.index}, {"shards", file.shard.count}, {"prompts", file.prompts},
          {"num_layers", file.num_layers}, {"settings", file.settings},
          {"configurations", std::move(configurations)}, {"stopped", std::move(stopped)}};
}

// Parses a shard document; every error names `source` and the key.
inline ShardFile shard_from_json(const nlohmann::json& document, const std::string& source) {
  const auto fail = [&](const std::string& key, const std::string& problem) -> void {
    throw Error("shard file '" + source + "': key '" + key + "': " + problem);
  };
  if (!document.is_object())
    throw Error("shard file '" + source + "': expected a JSON object, got " +
                std::string(document.type_name()));
  const auto field = [&](const nlohmann::json& object, const std::string& key,
                         const std::string& path) -> const nlohmann::json& {
    const auto it = object.find(key);
    if (it == object.end()) fail(path, "missing");
    return *it;
  };
  const auto count = [&](const nlohmann::json& object, const std::string& key,
                         const std::string& path) {
    const nlohmann::json& v = field(object, key, path);
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0)
      fail(path, "expected a non-negative integer, got " + io::json_excerpt(v));
    return v.get<std::size_t>();
  };
  if (field(document, "format", "format") != kShardFormat)
    fail("format", "expected \"" + std::string(kShardFormat) + "\" (is this a shard file?)");
  if (field(document, "version", "version") != kShardVersion)
    fail("version", "expected " + std::to_string(kShardVersion) + ", got " +
                        io::json_excerpt(document["version"]));
  for (const auto& [key, unused] : document.items())
    if (!std::set<std::string_view>{"format", "version", "program", "shard", "shards", "prompts",
                                    "num_layers", "settings", "configurations", "stopped"}
             .count(key))
      fail(key, "unknown key");
  ShardFile file;
  const nlohmann::json& program = field(document, "program", "program");
  if (!program.is_string()) fail("program", "expected a string");
  file.program = program.get<std::string>();
  file.shard = {count(document, "shard", "shard"), count(document, "shards", "shards")};
  detail::check_shard(file.shard, "shard file '" + source + "'");
  file.prompts = count(document, "prompts", "prompts");
  file.num_layers = count(document, "num_layers", "num_layers");
  file.settings = field(document, "settings", "settings");
  if (!file.settings.is_object()) fail("settings", "expected an object");
  const std::size_t mine = shard_prompts(file.shard, file.prompts).size();
  const nlohmann::json& configurations = field(document, "configurations", "configurations");
  if (!configurations.is_array()) fail("configurations", "expected an array");
  for (std::size_t c = 0; c < configurations.size(); ++c) {
    const std::string at = "configurations[" + std::to_string(c) + "]";
    const nlohmann::json& entry = configurations[c];
    if (!entry.is_object()) fail(at, "expected an object");
    ShardConfiguration config;
    const nlohmann::json& name = field(entry, "name", at + ".name");
    if (!name.is_string()) fail(at + ".name", "expected a string");
    config.name = name.get<std::string>();
    config.costs.resize(mine);
    for (const char* key : {"loss", "layer_sum", "tokens", "seconds"}) {
      const std::string path = at + "." + key;
      const nlohmann::json& values = field(entry, key, path);
      if (!values.is_array() || values.size() != mine)
        fail(path, "expected an array of " + std::to_string(mine) + " numbers (one per prompt of "
                   "shard " + std::to_string(file.shard.index) + " of " +
                   std::to_string(file.shard.count) + ")");
      for (std::size_t k = 0; k < mine; ++k) {
        const nlohmann::json& v = values[k];
        const std::string item = path + "[" + std::to_string(k) + "]";
        DecodeCost& cost = config.costs[k];
        if (std::string_view(key) == "tokens") {
          if (!v.is_number_integer() || v.get<std::int64_t>() < 0) fail(item, "expected a token count");
          cost.tokens = v.get<std::size_t>();
          continue;
        }
        if (!v.is_number() || !(v.get<double>() >= 0.0))
          fail(item, "expected a number >= 0, got " + io::json_excerpt(v));
        const double x = v.get<double>();
        if (std::string_view(key) == "loss") {
          if (x > 1.0) fail(item, "a loss above 1");
          cost.loss = x;
        } else if (std::string_view(key) == "layer_sum") {
          cost.layer_sum = x;
        } else {
          cost.seconds = x;
        }
      }
    }
    file.configurations.push_back(std::move(config));
  }
  const nlohmann::json& stopped = field(document, "stopped", "stopped");
  if (!stopped.is_null()) {
    if (!stopped.is_object() || !field(stopped, "after", "stopped.after").is_string() ||
        !field(stopped, "p_value_bound", "stopped.p_value_bound").is_number())
      fail("stopped", "expected null or {\"after\": name, \"p_value_bound\": number}");
    file.stopped_after = stopped["after"].get<std::string>();
    file.p_value_bound = stopped["p_value_bound"].get<double>();
  }
  return file;
}

// Writes the shard file atomically: a shard that fails, or is killed, leaves no file (or the
// previous one), never half of one.
inline void write_shard_file(const std::filesystem::path& path, const ShardFile& file) {
  const std::string text = to_json(file).dump(1) + "\n";
  io::write_atomically(path, [&](std::FILE* out) { io::write_all(out, text.data(), text.size(), path); });
}

inline ShardFile read_shard_file(const std::filesystem::path& path) {
  const io::MappedFile mapped(path);
  return shard_from_json(io::parse_json(io::as_text(mapped.bytes()), "shard file", path.string()),
                         path.string());
}

// The shard files --merge names: a file is itself; a folder gives every *.shard-K-of-N.json in
// it (shard_file_name's pattern), in name order. A folder with none is an error.
inline std::vector<std::filesystem::path> expand_shard_paths(
    const std::vector<std::filesystem::path>& given) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (const fs::path& path : given) {
    std::error_code ec;
    if (!fs::is_directory(path, ec)) {
      if (!fs::exists(path, ec)) throw Error("--merge '" + path.string() + "': no such file or folder");
      files.push_back(path);
      continue;
    }
    std::vector<fs::path> found;
    for (const fs::directory_entry& entry : fs::directory_iterator(path)) {
      const std::string name = entry.path().filename().string();
      if (name.find(".shard-") != std::string::npos && name.ends_with(".json") &&
          name.front() != '.')  // not write_atomically's temporary files
        found.push_back(entry.path());
    }
    if (found.empty())
      throw Error("--merge '" + path.string() + "': the folder holds no shard file (*.shard-K-of-N.json)");
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

// The tables the shards together hold: configuration c of prompt i, for every prompt.
struct MergedShards {
  std::size_t shards = 0, prompts = 0, num_layers = 0;
  std::vector<std::string> names;              // the configurations every shard decoded
  std::vector<std::vector<DecodeCost>> costs;  // [configuration][prompt], prompts 0..n-1
  std::optional<std::string> stopped_after;    // the earliest stop of any shard, if any
  std::map<std::string, std::size_t> index;    // name -> configuration

  const std::vector<DecodeCost>* find(const std::string& name) const {
    const auto it = index.find(name);
    return it == index.end() ? nullptr : &costs[it->second];
  }
};

namespace detail {

// The first key (top level, then one level down) where two settings objects differ, with both
// values.
inline std::string settings_difference(const nlohmann::json& theirs, const nlohmann::json& ours) {
  std::set<std::string> keys;
  for (const auto& [key, unused] : theirs.items()) keys.insert(key);
  for (const auto& [key, unused] : ours.items()) keys.insert(key);
  for (const std::string& key : keys) {
    const nlohmann::json a = theirs.contains(key) ? theirs[key] : nlohmann::json("(missing)");
    const nlohmann::json b = ours.contains(key) ? ours[key] : nlohmann::json("(missing)");
    if (a == b) continue;
    if (a.is_object() && b.is_object()) return key + "." + settings_difference(a, b);
    return key + " is " + io::json_excerpt(a, 80) + " there, " + io::json_excerpt(b, 80) + " here";
  }
  return "";
}

inline std::string index_list(const std::vector<std::size_t>& indices) {
  std::string out;
  for (std::size_t i : indices) {
    if (!out.empty()) out += ',';
    out += std::to_string(i);
  }
  return out;
}

}  // namespace detail

// Checks that `files` (read from `sources`) are the shards of one run of `program` with exactly
// the `settings` and `prompts` of this one -- every shard 0..N-1 once, every prompt once -- and
// merges them. A foreign, duplicated or missing shard is refused by name; the missing ones are
// listed as the shard indices to rerun.
inline MergedShards merge_shards(const std::vector<ShardFile>& files,
                                 const std::vector<std::filesystem::path>& sources,
                                 const std::string& program, const nlohmann::json& settings,
                                 std::size_t prompts) {
  if (files.empty()) throw Error("--merge: no shard files");
  const auto name = [&](std::size_t f) { return "shard file '" + sources.at(f).string() + "'"; };
  const std::size_t count = files[0].shard.count;
  std::vector<std::optional<std::size_t>> owner(count);  // shard index -> file
  for (std::size_t f = 0; f < files.size(); ++f) {
    const ShardFile& file = files[f];
    if (file.program != program)
      throw Error(name(f) + " was written by " + file.program + ", not " + program);
    if (file.settings != settings)
      throw Error(name(f) + " is from another run: its setting " +
                  detail::settings_difference(file.settings, settings) +
                  " (shards and merge must be given the same model, prompts and flags)");
    if (file.prompts != prompts)
      throw Error(name(f) + " covers " + std::to_string(file.prompts) + " prompts, this run " +
                  std::to_string(prompts));
    if (file.shard.count != count)
      throw Error(name(f) + " is shard " + std::to_string(file.shard.index) + " of " +
                  std::to_string(file.shard.count) + ", but " + name(0) + " is one of " +
                  std::to_string(count) + ": the shards of one run split it the same way");
    if (file.num_layers != files[0].num_layers)
      throw Error(name(f) + " has " + std::to_string(file.num_layers) + " layers, " + name(0) +
                  " " + std::to_string(files[0].num_layers));
    if (owner[file.shard.index])
      throw Error(name(f) + " and " + name(*owner[file.shard.index]) + " are both shard " +
                  std::to_string(file.shard.index) + " of " + std::to_string(count) +
                  ": give each shard once");
    owner[file.shard.index] = f;
  }
  std::vector<std::size_t> missing;
  for (std::size_t k = 0; k < count; ++k)
    if (!owner[k]) missing.push_back(k);
  if (!missing.empty())
    throw Error("--merge: " + std::to_string(missing.size()) + " of " + std::to_string(count) +
                " shards missing: " + detail::index_list(missing) + " (rerun just those: sbatch --array=" +
                detail::index_list(missing) + " --export=ALL,CALM_SHARD_COUNT=" +
                std::to_string(count) + ", or --shard " + std::to_string(missing[0]) + "/" +
                std::to_string(count) + ")");

  // The configurations every shard has, in order; a shard that stopped early has a prefix.
  MergedShards merged;
  merged.shards = count;
  merged.prompts = prompts;
  merged.num_layers = files[0].num_layers;
  std::size_t common = files[0].configurations.size();
  for (const ShardFile& file : files) common = std::min(common, file.configurations.size());
  for (std::size_t c = 0; c < common; ++c) {
    const std::string& config = files[0].configurations[c].name;
    for (std::size_t f = 1; f < files.size(); ++f)
      if (files[f].configurations[c].name != config)
        throw Error(name(f) + ": configuration " + std::to_string(c) + " is '" +
                    files[f].configurations[c].name + "', " + name(0) + " has '" + config + "'");
    std::vector<DecodeCost> costs(prompts);
    for (std::size_t f = 0; f < files.size(); ++f) {
      const std::vector<std::size_t> mine = shard_prompts(files[f].shard, prompts);
      for (std::size_t k = 0; k < mine.size(); ++k) costs[mine[k]] = files[f].configurations[c].costs[k];
    }
    merged.index[config] = merged.names.size();
    merged.names.push_back(config);
    merged.costs.push_back(std::move(costs));
  }
  for (const ShardFile& file : files)
    if (file.stopped_after && file.configurations.size() == common) merged.stopped_after = file.stopped_after;
  return merged;
}

// Reads and merges the shard files `given` names (expand_shard_paths); the rest as merge_shards.
inline MergedShards merge_shard_files(const std::vector<std::filesystem::path>& given,
                                      const std::string& program, const nlohmann::json& settings,
                                      std::size_t prompts) {
  const std::vector<std::filesystem::path> paths = expand_shard_paths(given);
  std::vector<ShardFile> files;
  for (const auto& path : paths) files.push_back(read_shard_file(path));
  return merge_shards(files, paths, program, settings, prompts);
}

// Safe early stop of a shard (docs/design.md "Sharded calibration"): the smallest p-value the
// merged table can have at this lambda, whatever the other shards' losses, given this shard's
// `losses` among n prompts. Losses lie in [0, 1], so the merged mean is at least this shard's
// sum / n (the others all 0), and every p-value method is non-decreasing in the mean. When this
// bound exceeds epsilon, the merged walk fails here or earlier: lambdas below are never tested.
// The sum is lowered by kShardStopMargin so that rounding in the merged sum can only make the
// shard stop later, never wrongly.
inline constexpr double kShardStopMargin = 1e-9;
inline double shard_stop_bound(std::span<const double> losses, std::size_t n,
                               const LearnThenTestOptions& options) {
  double sum = 0.0;
  for (double loss : losses) sum += loss;
  const double mean = std::clamp(sum / static_cast<double>(n) - kShardStopMargin, 0.0, 1.0);
  return p_value(options.method, n, mean, options.delta);
}

// The losses of a configuration's decodes, in order.
inline std::vector<double> losses_of(std::span<const DecodeCost> costs) {
  std::vector<double> losses;
  for (const DecodeCost& c : costs) losses.push_back(c.loss);
  return losses;
}

// A calibration shard's configuration name at a threshold: "lambda 0.95".
// The merged shards hold exactly the configurations `expected`, in order (calm-eval's: the
// full model, each measure at each grid lambda, the oracle, the static exits).
inline void require_configurations(const MergedShards& merged,
                                   const std::vector<std::string>& expected) {
  if (merged.names != expected)
    throw Error("--merge: the shards hold " + std::to_string(merged.names.size()) +
                " configurations, this run has " + std::to_string(expected.size()) +
                (merged.names.size() == expected.size() ? " of other names or order" : "") +
                ": they were decoded with other measures or another grid");
}

inline std::string lambda_row_name(double lambda) { return "lambda " + nlohmann::json(lambda).dump(); }

// A calibration shard: the full model's decodes, then decode_at(λ) -> the shard's DecodeCosts at
// each λ of options.grid from the top, until shard_stop_bound exceeds epsilon (after the last
// λ there is nothing left to save).
template <class DecodeAt>
ShardFile calibration_shard(Shard shard, std::size_t prompts, std::size_t num_layers,
                            nlohmann::json settings, std::vector<DecodeCost> full,
                            const LearnThenTestOptions& options, DecodeAt&& decode_at) {
  ShardFile out;
  out.program = "calm-calibrate";
  out.shard = shard;
  out.prompts = prompts;
  out.num_layers = num_layers;
  out.settings = std::move(settings);
  out.configurations.push_back({"full", std::move(full)});
  for (double lambda : options.grid) {
    out.configurations.push_back({lambda_row_name(lambda), decode_at(lambda)});
    out.p_value_bound = shard_stop_bound(losses_of(out.configurations.back().costs), prompts, options);
    if (out.p_value_bound > options.epsilon && lambda != options.grid.back()) {
      out.stopped_after = out.configurations.back().name;
      break;
    }
  }
  return out;
}

}  // namespace calm::calibrate
