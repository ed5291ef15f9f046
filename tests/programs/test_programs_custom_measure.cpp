// calm-custom-measure, the example of the certificate API, makes calm-generate's checks: a
// certificate of another model, one whose decoding differs from the run's, a threshold outside
// [0, 1], a prompt and --max-new-tokens past the context, and an --output it could not write are
// refused by name, before any calibration.
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using calm::test::contains;
using calm::test::quote;
using calm::test::run_program;
using calm::test::ScratchDir;

// Everything here in its own namespace: the areas compile as one unit (CMakeLists.txt).
namespace test_programs_custom_measure {

namespace {

const fs::path kModel = fs::path(CALM_MODELS) / "shakespeare-8l";
const std::string kBase = "--model " + quote(kModel) + " --prompt 'ROMEO:' ";

// The committed certificate, for the softmax measure (this program has no classifier), edited.
fs::path certificate(const ScratchDir& dir, const std::string& name,
                     void (*edit)(nlohmann::json&) = nullptr) {
  nlohmann::json c = calm::test::parse_json(calm::test::read_text(kModel / "calm_calibration.json"));
  c["measure"] = "softmax";
  c.erase("measure_fingerprint");
  if (edit) edit(c);
  return dir.write(name, c.dump(2));
}

}  // namespace

TEST_CASE("calm-custom-measure applies a certificate only where it holds") {
  const ScratchDir dir("custom_measure");
  const fs::path good = certificate(dir, "good.json");
  const auto ok = run_program(CALM_CUSTOM_MEASURE_EXE, kBase + "--calibration " + quote(good));
  CHECK_MESSAGE(ok.status == 0, ok.err);

  const fs::path other = certificate(dir, "other.json", [](nlohmann::json& c) {
    c["model_fingerprint"] = "fnv1a64:0123456789abcdef";
  });
  const fs::path sampled = certificate(dir, "sampled.json", [](nlohmann::json& c) {
    c["decoding"] = {{"mode", "sample"}, {"temperature", 0.8}, {"top_k", 40}, {"top_p", 1.0},
                     {"seed", 7}, {"seed_rule", "splitmix64(seed + prompt_index * 0x9e3779b97f4a7c15)"},
                     {"max_new_tokens", 32}, {"stop", "eos"}};
  });
  const fs::path prompts = dir.write("prompts.txt", "ROMEO:\n");
  struct Case {
    std::string args;
    std::vector<std::string> message;
  };
  const std::vector<Case> cases{
      {"--calibration " + quote(other),
       {other.string(), "calibrated for another model", "fnv1a64:0123456789abcdef"}},
      {"--calibration " + quote(sampled),
       {sampled.string(), "does not apply", "decoding: greedy here"}},
      {"--calibration " + quote(good) + " --max-new-tokens 8",
       {good.string(), "does not apply", "max new tokens 8 here, 32 in the certificate"}},
      {"--calibration " + quote(good) + " --lambda 0.5",
       {good.string(), "does not apply", "threshold 0.5 here"}},
      {"--lambda 5", {"--lambda", "5"}},
      {"--max-new-tokens 1000", {"with --max-new-tokens 1000 that exceeds the context length 256"}},
      {"--calibrate-on " + quote(prompts) + " --output " + quote(dir.path / "no" / "c.json"),
       {"--output", "the folder '" + (dir.path / "no").string() + "' does not exist"}},
      {"--calibrate-on " + quote(prompts) + " --output " + quote(prompts),
       {"--output", "is an input of this run"}},
      {"--output " + quote(dir.path / "c.json"), {"--output requires --calibrate-on"}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.args);
    const auto run = run_program(CALM_CUSTOM_MEASURE_EXE, kBase + c.args);
    CHECK(run.status != 0);
    CHECK(!contains(run.err, "calibrated on"));  // refused before any decoding
    for (const std::string& part : c.message) CHECK_MESSAGE(contains(run.err, part), run.err);
  }
}

}  // namespace test_programs_custom_measure
