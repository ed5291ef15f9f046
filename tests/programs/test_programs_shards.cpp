// calm-calibrate and calm-eval split into shards (--shard K/N, or a job array's variables) and
// merged (--merge): the merged certificate is byte for byte the one-machine certificate, greedy
// and sampled; the merged evaluation is the one-machine evaluation in every column but the
// wall-clock speedup (timed on other processes); bad shards and bad --shard are refused by name.
#include "test_support.hpp"
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

// Everything here in its own namespace: the areas compile as one unit (CMakeLists.txt).
namespace test_programs_shards {

namespace {

using calm::test::contains;
using calm::test::quote;
using calm::test::read_text;
using calm::test::run_program;
using calm::test::ProgramRun;
using calm::test::ScratchDir;

const fs::path kModel = fs::path(CALM_FIXTURES) / "tiny-gqa-f32-untied";
const fs::path kOtherModel = fs::path(CALM_FIXTURES) / "tiny-gqa-bf16-tied";
const fs::path kPrompts = fs::path(CALM_PROGRAM_FIXTURES) / "prompts.jsonl";
const fs::path kPlainPrompts = fs::path(CALM_PROGRAM_FIXTURES) / "prompts.txt";

ProgramRun calibrate(const std::string& args) { return run_program(CALM_CALIBRATE_EXE, args); }
ProgramRun eval(const std::string& args) { return run_program(CALM_EVAL_EXE, args); }

std::string calibrate_args(const fs::path& model = kModel) {
  return "--model " + quote(model) + " --prompts " + quote(kPrompts) +
         " --measure softmax --delta 0.3 --epsilon 0.3 --max-new-tokens 4 ";
}

// Runs shards 0..count-1 of `args` into `dir`, each checked to succeed.
void run_shards(const std::string& args, std::size_t count, const fs::path& dir) {
  for (std::size_t k = 0; k < count; ++k) {
    const ProgramRun r = calibrate(args + "--shard " + std::to_string(k) + "/" +
                                   std::to_string(count) + " --output " + quote(dir));
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(contains(r.err, "shard " + std::to_string(k) + " of " + std::to_string(count)));
  }
}

// Column `column` (0-based) of every CSV line removed.
std::string without_column(const std::string& csv, std::size_t column) {
  std::istringstream in(csv);
  std::string line, out;
  while (std::getline(in, line)) {
    std::vector<std::string> fields;
    std::string field;
    std::istringstream cells(line);
    while (std::getline(cells, field, ',')) fields.push_back(field);
    if (line.ends_with(',')) fields.emplace_back();
    for (std::size_t c = 0; c < fields.size(); ++c)
      if (c != column) out += fields[c] + ",";
    out += "\n";
  }
  return out;
}

}  // namespace

TEST_CASE("calm-calibrate: merged shards write the one-machine certificate byte for byte") {
  for (const std::string& decoding :
       {std::string(), std::string("--schedule decaying --temperature 0.9 --top-k 20 --top-p 0.95 --seed 3 ")}) {
    CAPTURE(decoding);
    const ScratchDir dir("shards_calibrate");
    const std::string args = calibrate_args() + decoding;
    const ProgramRun one = calibrate(args + "--output " + quote(dir.path / "one.json"));
    INFO(one.err);
    REQUIRE(one.status == 0);
    const fs::path shards = dir.path / "shards";
    fs::create_directories(shards);
    run_shards(args, 3, shards);
    CHECK(fs::exists(shards / "calm_calibration.shard-2-of-3.json"));
    const ProgramRun merged = calibrate(args + "--merge " + quote(shards) + " --output " +
                                        quote(dir.path / "merged.json"));
    INFO(merged.err);
    REQUIRE(merged.status == 0);
    CHECK(contains(merged.err, "merged 3 shards of 8 prompts"));
    const std::string certificate = read_text(dir.path / "one.json");
    CHECK(certificate.size() > 100);
    CHECK(read_text(dir.path / "merged.json") == certificate);
    // The same table on stdout, up to the wall-clock speedup and the file written.
    const auto table = [](const std::string& out) {
      return out.substr(0, std::min(out.find("wall-clock"), out.find("wrote")));
    };
    CHECK(table(one.out) == table(merged.out));
    // Shard files listed one by one, in any order.
    const ProgramRun listed = calibrate(
        args + "--merge " + quote(shards / "calm_calibration.shard-2-of-3.json") + " " +
        quote(shards / "calm_calibration.shard-0-of-3.json") + " " +
        quote(shards / "calm_calibration.shard-1-of-3.json") + " --output " + quote(dir.path / "listed.json"));
    CHECK(listed.status == 0);
    CHECK(read_text(dir.path / "listed.json") == certificate);
  }
}

TEST_CASE("calm-calibrate: the shard from a Slurm job array's or Kubernetes Indexed Job's variables") {
  const ScratchDir dir("shards_environment");
  const std::string args = calibrate_args() + "--output " + quote(dir.path) + " ";
  ::setenv("SLURM_ARRAY_TASK_ID", "5", 1);
  ::setenv("SLURM_ARRAY_TASK_MIN", "4", 1);
  ::setenv("SLURM_ARRAY_TASK_MAX", "5", 1);
  ::setenv("SLURM_ARRAY_TASK_COUNT", "2", 1);
  const ProgramRun slurm = calibrate(args);
  CHECK(slurm.status == 0);
  CHECK(contains(slurm.err, "shard 1 of 2 (SLURM_ARRAY_TASK_ID=5 from SLURM_ARRAY_TASK_MIN=4 of "
                            "SLURM_ARRAY_TASK_COUNT=2)"));
  CHECK(fs::exists(dir.path / "calm_calibration.shard-1-of-2.json"));
  ::setenv("SLURM_ARRAY_TASK_ID", "x1", 1);
  const ProgramRun garbage = calibrate(args);
  CHECK(garbage.status == 1);
  CHECK(contains(garbage.err, "SLURM_ARRAY_TASK_ID='x1' is not a shard number"));
  const ProgramRun none = calibrate(calibrate_args() + "--shard none --output " +
                                    quote(dir.path / "all.json"));  // --shard none: every prompt
  CHECK(none.status == 0);
  CHECK(contains(read_text(dir.path / "all.json"), "\"n\": 8"));
  for (const char* name : {"SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
                           "SLURM_ARRAY_TASK_COUNT"})
    ::unsetenv(name);
  ::setenv("JOB_COMPLETION_INDEX", "0", 1);
  const ProgramRun no_count = calibrate(args);
  CHECK(contains(no_count.err, "CALM_SHARD_COUNT is not"));
  ::setenv("CALM_SHARD_COUNT", "2", 1);
  const ProgramRun kubernetes = calibrate(args);
  CHECK(kubernetes.status == 0);
  CHECK(fs::exists(dir.path / "calm_calibration.shard-0-of-2.json"));
  ::unsetenv("JOB_COMPLETION_INDEX");
  ::unsetenv("CALM_SHARD_COUNT");
  // The two environment shards merge like any others.
  const ProgramRun merged = calibrate(calibrate_args() + "--merge " + quote(dir.path) +
                                      " --output " + quote(dir.path / "merged.json"));
  CHECK(merged.status == 0);
  CHECK(read_text(dir.path / "merged.json") == read_text(dir.path / "all.json"));
}

TEST_CASE("calm-calibrate --merge refuses missing, duplicated and foreign shards by name") {
  const ScratchDir dir("shards_refused");
  const fs::path shards = dir.path / "shards";
  fs::create_directories(shards);
  run_shards(calibrate_args(), 4, shards);
  const std::string merge = calibrate_args() + "--output " + quote(dir.path / "c.json") + " --merge ";

  fs::rename(shards / "calm_calibration.shard-1-of-4.json", dir.path / "one.json");
  fs::rename(shards / "calm_calibration.shard-3-of-4.json", dir.path / "three.json");
  ProgramRun r = calibrate(merge + quote(shards));
  CHECK(r.status == 1);
  CHECK(contains(r.err, "2 of 4 shards missing: 1,3"));
  CHECK_FALSE(fs::exists(dir.path / "c.json"));
  fs::rename(dir.path / "three.json", shards / "calm_calibration.shard-3-of-4.json");

  fs::copy_file(shards / "calm_calibration.shard-0-of-4.json", dir.path / "copy.json");
  r = calibrate(merge + quote(shards) + " " + quote(dir.path / "one.json") + " " +
                quote(dir.path / "copy.json"));
  CHECK(contains(r.err, "copy.json' and shard file '" + (shards / "calm_calibration.shard-0-of-4.json").string() +
                            "' are both shard 0 of 4"));

  // Another delta, another model: foreign, named with the setting that differs.
  const fs::path other = dir.path / "other";
  fs::create_directories(other);
  std::string other_delta = calibrate_args();
  other_delta.replace(other_delta.find("--delta 0.3"), 11, "--delta 0.2");
  CHECK(calibrate(other_delta + "--shard 1/4 --output " + quote(other / "delta.json")).status == 0);
  r = calibrate(merge + quote(shards) + " " + quote(other / "delta.json"));
  CHECK(contains(r.err, "delta.json' is from another run: its setting delta is 0.2 there, 0.3 here"));
  CHECK(calibrate(calibrate_args(kOtherModel) + "--shard 1/4 --output " + quote(other / "model.json")).status == 0);
  r = calibrate(merge + quote(shards) + " " + quote(other / "model.json"));
  CHECK(contains(r.err, "model.json' is from another run: its setting model is"));

  const fs::path garbage = dir.path / "garbage.json";
  std::ofstream(garbage) << "{not json";
  r = calibrate(merge + quote(shards) + " " + quote(garbage));
  CHECK(contains(r.err, "shard file of '" + garbage.string() + "' is not valid JSON"));
  r = calibrate(merge + quote(dir.path / "nowhere"));
  CHECK(contains(r.err, "--merge '" + (dir.path / "nowhere").string() + "': no such file or folder"));
  r = calibrate(calibrate_args() + "--merge " + quote(shards) + " --shard 0/4");
  CHECK(contains(r.err, "--shard excludes --merge"));
}

TEST_CASE("calm-calibrate and calm-eval: bad --shard is refused before any decoding") {
  const ScratchDir dir("shards_flags");
  for (const auto& [flag, message] : std::vector<std::pair<std::string, std::string>>{
           {"--shard 3", "--shard '3': expected K/N"},
           {"--shard 3/x", "--shard '3/x': expected K/N"},
           {"--shard 4/4", "shard index 4 is not below the count 4"},
           {"--shard 0/0", "the shard count is 0"},
           {"--shard 0/9", "8 prompts cannot fill 9 shards"}}) {
    const ProgramRun r = calibrate(calibrate_args() + flag + " --output " + quote(dir.path));
    CHECK(r.status == 1);
    CHECK(contains(r.err, message));
    CHECK(fs::is_empty(dir.path));  // no partial shard file
  }
  const ProgramRun r = eval("--model " + quote(kModel) + " --calibration-prompts " + quote(kPrompts) +
                            " --test-prompts " + quote(kPlainPrompts) + " --measures softmax --shard 1/0");
  CHECK(contains(r.err, "calm-eval: error: --shard '1/0': the shard count is 0"));
}

TEST_CASE("calm-eval: merged shards give the one-machine evaluation but for the wall-clock column") {
  const ScratchDir dir("shards_eval");
  const std::string args = "--model " + quote(kModel) + " --calibration-prompts " + quote(kPrompts) +
                           " --test-prompts " + quote(kPlainPrompts) + " --measures softmax "
                           "--deltas 0.2,0.3 --epsilon 0.3 --splits 5 --max-new-tokens 4 "
                           "--temperature 1 --top-k 50 --sampling-seed 11 ";
  const ProgramRun one = eval(args + "--csv " + quote(dir.path / "one.csv"));
  REQUIRE(one.status == 0);
  for (std::size_t k = 0; k < 3; ++k) {
    const ProgramRun shard = eval(args + "--shard " + std::to_string(k) + "/3 --shard-output " + quote(dir.path));
    INFO(shard.err);
    REQUIRE(shard.status == 0);
  }
  CHECK(fs::exists(dir.path / "calm_eval.shard-1-of-3.json"));
  const ProgramRun merged = eval(args + "--merge " + quote(dir.path) + " --csv " + quote(dir.path / "merged.csv"));
  INFO(merged.err);
  REQUIRE(merged.status == 0);
  const std::string expected = read_text(dir.path / "one.csv");
  REQUIRE(contains(expected, ",wall_clock_speedup,"));
  CHECK(expected.size() > 200);
  constexpr std::size_t kWallClock = 15;  // evaluation_csv's column wall_clock_speedup
  CHECK(without_column(read_text(dir.path / "merged.csv"), kWallClock) == without_column(expected, kWallClock));
  // A calm-calibrate shard is no calm-eval shard.
  const ScratchDir other("shards_eval_other");
  CHECK(calibrate(calibrate_args() + "--shard 0/3 --output " + quote(other.path)).status == 0);
  const ProgramRun foreign = eval(args + "--merge " + quote(other.path));
  CHECK(contains(foreign.err, "was written by calm-calibrate, not calm-eval"));
}

}  // namespace test_programs_shards
