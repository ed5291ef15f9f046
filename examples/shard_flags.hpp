// --shard and --merge for calm-calibrate and calm-eval (docs/cluster.md; the shard files and the
// merge are calm/calibrate/shards.hpp).
#pragma once

#include <calm/calibrate/shards.hpp>

#include <CLI/App.hpp>
#include <fmt/core.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace calm::cli {

struct ShardFlags {
  std::string shard;                         // --shard K/N | none
  std::vector<std::filesystem::path> merge;  // --merge FILE|FOLDER ...
  std::optional<calibrate::Shard> chosen;    // resolve_shard's outcome: empty = every prompt
};

inline void add_shard_flags(CLI::App& app, ShardFlags& s) {
  app.add_option("--shard", s.shard, "decode only shard K of N (K/N: prompts K, K+N, ...) and "
                 "write a shard file for --merge; 'none': every prompt. Default: the shard of a "
                 "Slurm job array (SLURM_ARRAY_TASK_ID) or Kubernetes Indexed Job "
                 "(JOB_COMPLETION_INDEX, CALM_SHARD_COUNT), else every prompt (docs/cluster.md)");
  app.add_option("--merge", s.merge, "merge shard files (or folders of *.shard-K-of-N.json) "
                 "decoded with the same flags, instead of decoding")
      ->excludes("--shard");
}

// The shard this run decodes: --shard, else the environment's; none when merging. Says which on
// stderr, since a shard from the environment is not on the command line.
inline void resolve_shard(const CLI::App& app, ShardFlags& s, std::size_t prompts,
                          const std::string& program) {
  if (!s.merge.empty()) return;
  const calibrate::ShardChoice choice = calibrate::choose_shard(
      app.count("--shard") ? std::optional<std::string>(s.shard) : std::nullopt,
      [](const char* name) -> const char* { return std::getenv(name); });
  s.chosen = choice.shard;
  if (!s.chosen) return;
  if (prompts < s.chosen->count)
    throw Error(choice.origin + ": " + std::to_string(prompts) + " prompts cannot fill " +
                std::to_string(s.chosen->count) + " shards (shard " + std::to_string(prompts) +
                " onwards would have none): use fewer shards");
  fmt::print(stderr, "{}: shard {} of {} ({}): prompts {}, {}, ... ({} of {})\n", program,
             s.chosen->index, s.chosen->count, choice.origin, s.chosen->index,
             s.chosen->index + s.chosen->count,
             calibrate::shard_prompts(*s.chosen, prompts).size(), prompts);
}

// Where a shard writes: --output (a folder: the default name in it), else the default name
// (stem.shard-K-of-N.json) in the current folder.
inline std::filesystem::path shard_output(const std::filesystem::path& output, std::string stem,
                                          calibrate::Shard shard) {
  const std::string name = calibrate::shard_file_name(stem, shard);
  std::error_code ec;
  if (output.empty()) return name;
  if (std::filesystem::is_directory(output, ec)) return output / name;
  return output;
}

}  // namespace calm::cli
