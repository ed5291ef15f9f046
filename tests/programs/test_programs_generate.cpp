// calm-generate run as a user would: --speculative gives the full model's tokens (greedy) and
// reports the speculation in --json; bad combinations are clear errors.
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace fs = std::filesystem;
using calm::test::contains;
using calm::test::quote;
using calm::test::run_program;

namespace {

const fs::path kModel = fs::path(CALM_MODELS) / "shakespeare-8l";
std::string base() {
  std::string b = "--model ";
  b += quote(kModel);
  b += " --prompt 'ROMEO:' --max-new-tokens 40 ";
  return b;
}

nlohmann::json generate_json(const std::string& args) {
  const auto run = run_program(CALM_GENERATE_EXE, base() + "--json " + args);
  REQUIRE_MESSAGE(run.status == 0, run.err);
  return nlohmann::json::parse(run.out);
}

}  // namespace

TEST_CASE("calm-generate --speculative: the full model's text, with the speculation reported") {
  const auto full = generate_json("--measure full");
  for (const std::string policy : {"--measure static --static-layer 3 --gamma 3",
                                   "--measure softmax --threshold 0.5 --gamma 5",
                                   "--measure classifier --threshold 0.8 --no-reuse-draft"}) {
    CAPTURE(policy);
    const auto spec = generate_json("--speculative --compare-full " + policy);
    CHECK(spec.at("text") == full.at("text"));
    CHECK(spec.at("tokens_equal_to_full") == spec.at("generated_tokens"));
    const auto& s = spec.at("speculative");
    CHECK(s.at("verifications").get<int>() > 0);
    CHECK(s.at("accepted").get<int>() <= s.at("drafted").get<int>());
    CHECK(s.at("tokens_per_verification").get<double>() >= 1.0);
  }
}

TEST_CASE("calm-generate --speculative refuses what cannot draft, naming it") {
  for (const std::string measure : {"oracle", "full"}) {
    const auto run = run_program(CALM_GENERATE_EXE, base() + "--speculative --measure " + measure);
    CHECK(run.status == 1);
    CHECK(contains(run.err, "--speculative drafts with early exits"));
    CHECK(contains(run.err, measure));
  }
  const auto run = run_program(CALM_GENERATE_EXE, base() + "--speculative --gamma 0");
  CHECK(run.status != 0);
  CHECK(contains(run.err, "--gamma"));
}

TEST_CASE("calm-generate refuses flags that would silently run another policy") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--threshold nan", "--threshold must be a finite number"},
      {"--tau nan", "--tau must be a finite number"},
      {"--measure static --static-layer 100", "--static-layer 100 is outside the model's layers [1, 8]"},
      {"--first-exit 100", "--first-exit 100 leaves no exit point: exit points are layers [1, 7]"},
      {"--speculative --measure static --static-layer 9", "--static-layer 9"},
  };
  for (const auto& [flags, message] : cases) {
    CAPTURE(flags);
    const auto run = run_program(CALM_GENERATE_EXE, base() + flags);
    CHECK(run.status == 1);
    CHECK(contains(run.err, message));
    CHECK(!contains(run.out, "ROMEO"));  // refused before anything was generated
  }
}

TEST_CASE("calm-generate refuses before decoding what it could only report after") {
  const calm::test::ScratchDir dir("generate_early");
  const std::string model = "--model " + quote(kModel) + " --max-new-tokens 8 ";
  const fs::path missing = dir.path / "missing" / "r.html";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--prompt 'ROMEO:' --report " + quote(missing),
       "--report '" + missing.string() + "': the folder '" + missing.parent_path().string() +
           "' does not exist"},
      {"--prompt 'ROMEO:' --report " + quote(dir.path), "is a folder, not a file"},
      {"--json --prompt 'ROM\xff" "EO:'", "--prompt is not valid UTF-8: byte 0xFF at offset 3"},
      {"--json --prompt 'caf\xc3'", "--prompt is not valid UTF-8: byte 0xC3 at offset 3"},
  };
  for (const auto& [flags, message] : cases) {
    CAPTURE(flags);
    const auto run = run_program(CALM_GENERATE_EXE, model + flags);
    CHECK(run.status == 1);
    CHECK(contains(run.err, message));
    CHECK(!contains(run.out, "ROM"));
    CHECK(!contains(run.err, "json.exception"));
  }
  // Without --json the bytes are only printed: no UTF-8 is required.
  CHECK(run_program(CALM_GENERATE_EXE, model + "--prompt 'ROM\xff" "EO:'").status == 0);
}

TEST_CASE("calm-generate: a bad schedule in calm_calibration.json names the file and the key") {
  const calm::test::ScratchDir dir("generate_calibration");
  const nlohmann::json good =
      nlohmann::json::parse(calm::test::read_text(kModel / "calm_calibration.json"));
  struct Case {
    const char* key;
    nlohmann::json value;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"tau", "four", "key 'schedule': policy 'decaying': parameter 'tau': expected a number"},
      {"tau", true, "parameter 'tau': expected a number"},
      {"first_exit", 0, "key 'schedule.first_exit': expected an integer in [1, 65536]"},
      {"first_exit", 8, "key 'schedule': first_exit 8 leaves no exit point"},
      {"first_exit", "1", "key 'schedule.first_exit'"},
      {"schedule", 3, "key 'schedule.schedule': expected a string"},
      {"measure_params", nlohmann::json{{"fiel", "x"}},
       "key 'schedule.measure_params': policy 'classifier': parameter 'fiel': unknown parameter"},
      {"measure_params", nlohmann::json{{"file", 1}}, "parameter 'file': expected a path string"},
      {"colour", "red", "key 'schedule': policy 'decaying': parameter 'colour': unknown parameter"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.key);
    CAPTURE(c.value.dump());
    nlohmann::json bad = good;
    bad["schedule"][c.key] = c.value;
    const fs::path file = dir.write(std::string(c.key) + ".json", bad.dump());
    const auto run = run_program(CALM_GENERATE_EXE, base() + "--calibration " + quote(file));
    CHECK(run.status == 1);
    const bool names_file = contains(run.err, std::string("'").append(file.string()).append("': key 'schedule")) ||
                            contains(run.err, file.string() + ": key 'schedule");
    CHECK(names_file);
    CHECK(contains(run.err, c.message));
    CHECK(!contains(run.err, "json.exception"));
    CHECK(!contains(run.out, "ROMEO"));
  }
}

// With no policy flags, calm-generate uses the calibrated policy next to the model, and
// without one the full model, with no confidence checks (which could never exit).
TEST_CASE("calm-generate without policy flags: the calibration next to the model, else the full model") {
  std::string args = "--model " + quote(kModel) + " --prompt 'ROMEO:' --max-new-tokens 20 --json";
  const auto calibrated = run_program(CALM_GENERATE_EXE, args);
  REQUIRE_MESSAGE(calibrated.status == 0, calibrated.err);
  CHECK(contains(calibrated.err, "no policy flags: using the calibrated policy of"));
  CHECK(contains(calibrated.err, "calm_calibration.json"));
  const auto with_calibration = nlohmann::json::parse(calibrated.out);
  std::size_t checks = 0;
  for (const auto& t : with_calibration.at("tokens")) checks += t.at("checks").get<std::size_t>();
  CHECK(checks > 0);

  const calm::test::ScratchDir dir("generate_defaults");
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "calm.safetensors"})
    fs::copy_file(kModel / f, dir.path / f);
  const auto full = run_program(CALM_GENERATE_EXE, "--model " + quote(dir.path) +
                                                       " --prompt 'ROMEO:' --max-new-tokens 20 --json");
  REQUIRE_MESSAGE(full.status == 0, full.err);
  CHECK(contains(full.err, "running the full model"));
  const auto j = nlohmann::json::parse(full.out);
  CHECK(j.at("average_layers").get<double>() == 8.0);
  for (const auto& t : j.at("tokens")) CHECK(t.at("checks").get<std::size_t>() == 0);
  // The same text as --measure full on the bundled model.
  const auto same = run_program(CALM_GENERATE_EXE, args + " --measure full");
  REQUIRE_MESSAGE(same.status == 0, same.err);
  CHECK(j.at("text") == nlohmann::json::parse(same.out).at("text"));
}
