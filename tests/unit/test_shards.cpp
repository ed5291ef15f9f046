// calm/calibrate/shards.hpp: --shard and the cluster engines' variables, shard files, the merge's
// checks, and the property that matters: shards that each stop at their own bound, merged, give
// the fixed-sequence result of one machine over the whole loss table (learn_then_test), exactly.
#include "test_support.hpp"

#include <calm/calibrate/shards.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace cc = calm::calibrate;
using calm::test::contains;
using calm::test::error_of;

namespace {

// getenv over a map, as shard_from_environment takes it.
struct FakeEnvironment {
  std::map<std::string, std::string> vars;
  const char* operator()(const char* name) const {
    const auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  }
};

cc::ShardChoice from_env(std::map<std::string, std::string> vars) {
  return cc::shard_from_environment(FakeEnvironment{std::move(vars)});
}

std::string env_error(std::map<std::string, std::string> vars) {
  return error_of([&] { from_env(std::move(vars)); });
}

// A shard of one calm-calibrate-like run over loss table [j][i], walked by calibration_shard as
// calm-calibrate walks it: the grid from the top, stopping where shard_stop_bound says.
cc::ShardFile run_shard(const std::vector<std::vector<double>>& table, cc::Shard shard,
                        const cc::LearnThenTestOptions& options, const nlohmann::json& settings) {
  const std::size_t n = table[0].size();
  const std::vector<std::size_t> mine = cc::shard_prompts(shard, n);
  const auto costs_at = [&](std::size_t j) {
    std::vector<cc::DecodeCost> costs;
    for (std::size_t i : mine)
      costs.push_back({.loss = table[j][i], .layer_sum = 1.0 * i, .tokens = i, .seconds = 0.5});
    return costs;
  };
  const cc::ShardFile file = cc::calibration_shard(
      shard, n, 4, settings, std::vector<cc::DecodeCost>(mine.size()), options, [&](double lambda) {
        return costs_at(static_cast<std::size_t>(
            std::find(options.grid.begin(), options.grid.end(), lambda) - options.grid.begin()));
      });
  // Through the file format, as the merge reads it: numbers must come back bit for bit.
  return cc::shard_from_json(calm::test::parse_json(cc::to_json(file).dump(1)), "shard");
}

}  // namespace

TEST_CASE("--shard K/N: accepted forms, and bad ones named with the flag") {
  CHECK(cc::parse_shard("3/8") == cc::Shard{3, 8});
  CHECK(cc::parse_shard("0/1") == cc::Shard{0, 1});
  for (const char* bad : {"", "3", "3/", "/8", "a/b", "3/8x", " 3/8", "-1/8", "3/+8", "3/8/2",
                          "99999999999/100000000000"})
    CHECK(contains(error_of([&] { cc::parse_shard(bad); }), "--shard '" + std::string(bad) + "': expected K/N"));
  CHECK(contains(error_of([] { cc::parse_shard("8/8"); }), "shard index 8 is not below the count 8"));
  CHECK(contains(error_of([] { cc::parse_shard("0/0"); }), "the shard count is 0"));
  const FakeEnvironment slurm{{{"SLURM_ARRAY_TASK_ID", "2"}, {"SLURM_ARRAY_TASK_COUNT", "4"}}};
  CHECK_FALSE(cc::choose_shard(std::string("none"), slurm).shard);  // none wins over the environment
  CHECK(cc::choose_shard(std::string("1/2"), slurm).shard == cc::Shard{1, 2});
  CHECK(cc::choose_shard(std::nullopt, slurm).shard == cc::Shard{2, 4});
}

TEST_CASE("shard from the environment: Slurm job arrays and Kubernetes Indexed Jobs") {
  CHECK_FALSE(from_env({}).shard);
  CHECK_FALSE(from_env({{"SLURM_JOB_ID", "7"}}).shard);  // a plain Slurm job is not an array
  CHECK(from_env({{"SLURM_ARRAY_TASK_ID", "3"}, {"SLURM_ARRAY_TASK_COUNT", "4"}}).shard ==
        cc::Shard{3, 4});
  // --array=1-4: ids from 1, shards from 0.
  const auto one_based = from_env({{"SLURM_ARRAY_TASK_ID", "4"}, {"SLURM_ARRAY_TASK_MIN", "1"},
                                   {"SLURM_ARRAY_TASK_MAX", "4"}, {"SLURM_ARRAY_TASK_COUNT", "4"}});
  CHECK(one_based.shard == cc::Shard{3, 4});
  CHECK(contains(one_based.origin, "SLURM_ARRAY_TASK_ID=4"));
  // --array=0-6:2 (ids 0, 2, 4, 6) is not a range: shard 2 of 4 would not be id 2.
  CHECK(contains(env_error({{"SLURM_ARRAY_TASK_ID", "2"}, {"SLURM_ARRAY_TASK_MIN", "0"},
                            {"SLURM_ARRAY_TASK_MAX", "6"}, {"SLURM_ARRAY_TASK_COUNT", "4"}}),
                 "not one contiguous range"));
  // A rerun of shards 3 and 17 of 50: --array=3,17 with CALM_SHARD_COUNT=50.
  CHECK(from_env({{"SLURM_ARRAY_TASK_ID", "17"}, {"SLURM_ARRAY_TASK_MIN", "3"},
                  {"SLURM_ARRAY_TASK_MAX", "17"}, {"SLURM_ARRAY_TASK_COUNT", "2"},
                  {"CALM_SHARD_COUNT", "50"}}).shard == cc::Shard{17, 50});
  CHECK(contains(env_error({{"SLURM_ARRAY_TASK_ID", "50"}, {"CALM_SHARD_COUNT", "50"}}),
                 "shard index 50 is not below the count 50"));
  CHECK(contains(env_error({{"SLURM_ARRAY_TASK_ID", "abc"}, {"SLURM_ARRAY_TASK_COUNT", "4"}}),
                 "SLURM_ARRAY_TASK_ID='abc' is not a shard number"));
  CHECK(contains(env_error({{"SLURM_ARRAY_TASK_ID", "1"}, {"SLURM_ARRAY_TASK_COUNT", " 4"}}),
                 "SLURM_ARRAY_TASK_COUNT=' 4'"));
  CHECK(contains(env_error({{"SLURM_ARRAY_TASK_ID", "1"}}), "SLURM_ARRAY_TASK_COUNT is not set"));
  CHECK(contains(env_error({{"SLURM_ARRAY_TASK_ID", "4"}, {"SLURM_ARRAY_TASK_COUNT", "4"}}),
                 "shard index 4 is not below the count 4"));
  CHECK(from_env({{"JOB_COMPLETION_INDEX", "5"}, {"CALM_SHARD_COUNT", "8"}}).shard == cc::Shard{5, 8});
  CHECK(contains(env_error({{"JOB_COMPLETION_INDEX", "5"}}), "CALM_SHARD_COUNT is not"));
  CHECK(contains(env_error({{"JOB_COMPLETION_INDEX", "5"}, {"CALM_SHARD_COUNT", "0"}}),
                 "the shard count is 0"));
  CHECK(contains(env_error({{"JOB_COMPLETION_INDEX", "x"}, {"CALM_SHARD_COUNT", "8"}}),
                 "JOB_COMPLETION_INDEX='x'"));
  CHECK(contains(env_error({{"JOB_COMPLETION_INDEX", "1"}, {"CALM_SHARD_COUNT", "8"},
                            {"SLURM_ARRAY_TASK_ID", "1"}, {"SLURM_ARRAY_TASK_COUNT", "4"}}),
                 "both SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX"));
}

TEST_CASE("the shards' prompts cover every prompt once") {
  for (std::size_t n : {1u, 7u, 8u, 100u})
    for (std::size_t count = 1; count <= 9; ++count) {
      std::vector<int> seen(n);
      for (std::size_t k = 0; k < count; ++k)
        for (std::size_t i : cc::shard_prompts({k, count}, n)) {
          CHECK(i % count == k);
          ++seen[i];
        }
      CHECK(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }));
    }
  CHECK(cc::shard_file_name("calm_calibration", {3, 8}) == "calm_calibration.shard-3-of-8.json");
}

// The correctness argument of docs/design.md, checked: whatever the losses, the merge of shards
// that stopped at their own bounds walks the same table as one machine and stops at the same
// lambda, with the same means and p-values to the bit.
TEST_CASE("merged shards give the one-machine fixed-sequence result exactly, early stops included") {
  std::mt19937_64 rng(20240525);
  std::size_t stopped_early = 0, runs = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const std::size_t n = 1 + rng() % 60, count = 1 + rng() % std::min<std::size_t>(n, 8);
    const cc::PValueMethod methods[] = {cc::PValueMethod::hoeffding, cc::PValueMethod::bentkus,
                                        cc::PValueMethod::hoeffding_bentkus};
    const cc::LearnThenTestOptions options{
        .delta = 0.05 + 0.4 * std::uniform_real_distribution<double>()(rng),
        .epsilon = 0.05 + 0.3 * std::uniform_real_distribution<double>()(rng),
        .method = methods[rng() % 3], .grid = cc::lambda_grid(1.0, 0.05, 0.05)};
    // Losses grow as lambda falls, at a random rate; a share of them are exactly 0 or 1, and
    // some are fractions k/m as token mismatch gives.
    const double rate = std::uniform_real_distribution<double>(0.0, 0.2)(rng);
    std::vector<std::vector<double>> table(options.grid.size(), std::vector<double>(n));
    xt::xtensor<double, 2> flat({options.grid.size(), n});
    for (std::size_t j = 0; j < options.grid.size(); ++j)
      for (std::size_t i = 0; i < n; ++i) {
        const double u = std::uniform_real_distribution<double>()(rng);
        const double loss = u < rate * static_cast<double>(j) ? (rng() % 3 == 0 ? 1.0 : static_cast<double>(rng() % 17) / 17.0) : 0.0;
        table[j][i] = flat(j, i) = loss;
      }
    const nlohmann::json settings = {{"delta", options.delta}};
    std::vector<cc::ShardFile> files;
    std::vector<fs::path> names;
    for (std::size_t k = 0; k < count; ++k) {
      files.push_back(run_shard(table, {k, count}, options, settings));
      names.emplace_back("shard" + std::to_string(k));
      stopped_early += files.back().configurations.size() < 1 + options.grid.size();
    }
    std::shuffle(files.begin(), files.end(), rng);  // the order of the files does not matter
    const cc::MergedShards merged = cc::merge_shards(files, names, "calm-calibrate", settings, n);
    const cc::CalibrationResult sharded = cc::calibrate(
        [&](double lambda) {
          const auto j = static_cast<std::size_t>(
              std::find(options.grid.begin(), options.grid.end(), lambda) - options.grid.begin());
          const auto* costs = merged.find(cc::lambda_row_name(options.grid[j]));
          REQUIRE(costs != nullptr);  // the walk never needs a lambda some shard skipped
          std::vector<double> losses;
          for (const cc::DecodeCost& c : *costs) losses.push_back(c.loss);
          return losses;
        },
        options);
    const cc::CalibrationResult one_machine = cc::learn_then_test(flat, options);
    ++runs;
    REQUIRE(sharded.table.size() == one_machine.table.size());
    CHECK(sharded.lambda_star == one_machine.lambda_star);
    for (std::size_t j = 0; j < sharded.table.size(); ++j) {
      CHECK(sharded.table[j].tested == one_machine.table[j].tested);
      CHECK(sharded.table[j].mean_loss == one_machine.table[j].mean_loss);  // bit for bit
      CHECK(sharded.table[j].p_value == one_machine.table[j].p_value);
    }
  }
  CHECK(runs == 400);
  CHECK(stopped_early > 50);  // the bound did stop shards, so the early stops were exercised
}

TEST_CASE("the merge refuses missing, duplicated and foreign shards by name") {
  const cc::LearnThenTestOptions options{.delta = 0.3, .epsilon = 0.3};
  const std::vector<std::vector<double>> table(options.grid.size(), std::vector<double>(10, 0.0));
  const nlohmann::json settings = {{"model", "fnv1a64:00"}, {"delta", 0.3}};
  std::vector<cc::ShardFile> files;
  std::vector<fs::path> names;
  for (std::size_t k = 0; k < 4; ++k) {
    files.push_back(run_shard(table, {k, 4}, options, settings));
    names.emplace_back("s" + std::to_string(k) + ".json");
  }
  CHECK(cc::merge_shards(files, names, "calm-calibrate", settings, 10).costs.size() ==
        1 + options.grid.size());

  auto drop = [&](std::vector<std::size_t> gone) {
    std::vector<cc::ShardFile> f;
    std::vector<fs::path> p;
    for (std::size_t k = 0; k < files.size(); ++k)
      if (std::find(gone.begin(), gone.end(), k) == gone.end()) {
        f.push_back(files[k]);
        p.push_back(names[k]);
      }
    return error_of([&] { cc::merge_shards(f, p, "calm-calibrate", settings, 10); });
  };
  CHECK(contains(drop({1, 3}), "2 of 4 shards missing: 1,3"));
  CHECK(contains(drop({1, 3}), "--array=1,3 --export=ALL,CALM_SHARD_COUNT=4"));
  CHECK(contains(drop({0}), "missing: 0"));

  auto with = [&](std::size_t k, auto change) {
    std::vector<cc::ShardFile> f = files;
    change(f[k]);
    return error_of([&] { cc::merge_shards(f, names, "calm-calibrate", settings, 10); });
  };
  const std::string duplicate = with(2, [](cc::ShardFile& s) { s.shard.index = 1; });
  CHECK(contains(duplicate, "'s2.json' and shard file 's1.json' are both shard 1 of 4"));
  CHECK(contains(with(3, [](cc::ShardFile& s) { s.settings["model"] = "fnv1a64:ff"; }),
                 "shard file 's3.json' is from another run: its setting model is \"fnv1a64:ff\" "
                 "there, \"fnv1a64:00\" here"));
  CHECK(contains(with(0, [](cc::ShardFile& s) { s.settings["delta"] = 0.2; }), "delta is 0.2 there, 0.3 here"));
  CHECK(contains(with(1, [](cc::ShardFile& s) { s.program = "calm-eval"; }),
                 "'s1.json' was written by calm-eval, not calm-calibrate"));
  CHECK(contains(with(1, [](cc::ShardFile& s) { s.shard.count = 5; }), "is shard 1 of 5"));
  CHECK(contains(error_of([&] { cc::merge_shards(files, names, "calm-calibrate", settings, 11); }),
                 "covers 10 prompts, this run 11"));
}

TEST_CASE("shard files: written atomically, read back, and bad ones named with the key") {
  const calm::test::ScratchDir dir("shards");
  const cc::LearnThenTestOptions options{.delta = 0.3, .epsilon = 0.3};
  const std::vector<std::vector<double>> table(options.grid.size(), std::vector<double>(5, 0.1));
  const cc::ShardFile file = run_shard(table, {1, 2}, options, {{"k", 1}});
  const fs::path path = dir.path / cc::shard_file_name("calm_calibration", {1, 2});
  cc::write_shard_file(path, file);
  CHECK(cc::to_json(cc::read_shard_file(path)) == cc::to_json(file));
  CHECK(cc::expand_shard_paths({dir.path}) == std::vector<fs::path>{path});
  dir.write(".calm_calibration.shard-0-of-2.json.tmp-abc", "partial");  // a temp file is no shard
  CHECK(cc::expand_shard_paths({dir.path}).size() == 1);
  CHECK(contains(error_of([&] { cc::expand_shard_paths({dir.path / "nowhere"}); }), "no such file"));
  const calm::test::ScratchDir empty("shards_empty");
  CHECK(contains(error_of([&] { cc::expand_shard_paths({empty.path}); }), "holds no shard file"));

  const fs::path garbage = dir.write("garbage.shard-0-of-2.json", "not json at all");
  CHECK(contains(error_of([&] { cc::read_shard_file(garbage); }), garbage.string()));
  CHECK(contains(error_of([&] { cc::read_shard_file(garbage); }), "not valid JSON"));
  const fs::path certificate = dir.write("c.json", R"({"format": "calm-calibration", "version": 2})");
  CHECK(contains(error_of([&] { cc::read_shard_file(certificate); }), "is this a shard file?"));
  nlohmann::json doc = cc::to_json(file);
  doc["configurations"][0]["loss"].erase(0);
  CHECK(contains(error_of([&] { cc::shard_from_json(doc, "x"); }),
                 "key 'configurations[0].loss': expected an array of 2 numbers"));
  doc = cc::to_json(file);
  doc["configurations"][0]["loss"][0] = 1.5;
  CHECK(contains(error_of([&] { cc::shard_from_json(doc, "x"); }), "a loss above 1"));
  doc = cc::to_json(file);
  doc["extra"] = 1;
  CHECK(contains(error_of([&] { cc::shard_from_json(doc, "x"); }), "key 'extra': unknown key"));
  doc = cc::to_json(file);
  doc["shard"] = 2;
  CHECK(contains(error_of([&] { cc::shard_from_json(doc, "x"); }), "shard index 2 is not below the count 2"));
}
