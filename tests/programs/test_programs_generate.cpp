// calm-generate run as a user would: --speculative gives the full model's tokens (greedy) and
// reports the speculation in --json, with drafts over a sub-vocabulary too (calm-count-tokens
// writes its ranking); bad combinations are clear errors; a calibration's guarantee
// is claimed only for the settings it was computed with.
#include "test_support.hpp"

#include <doctest/doctest.h>
#include <calm/calibrate/calibration_json.hpp>
#include <calm/io/token_frequencies.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace fs = std::filesystem;
using calm::test::contains;
using calm::test::quote;
using calm::test::run_program;

// Everything here in its own namespace: the areas compile as one unit (CMakeLists.txt).
namespace test_programs_generate {

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
  return calm::test::parse_json(run.out);
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
  nlohmann::json good = calm::test::parse_json(calm::test::read_text(kModel / "calm_calibration.json"));
  // The paper's schedule, whatever the committed certificate uses: its parameters are the cases.
  good["schedule"] = {{"schedule", "decaying"}, {"tau", 4.0}, {"first_exit", 1}, {"interval", 1},
                      {"propagation", "propagate"}};
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
// without one the full model, with no confidence checks (which could never exit). No
// --max-new-tokens: a certificate that records its length supplies it.
TEST_CASE("calm-generate without policy flags: the calibration next to the model, else the full model") {
  std::string args = "--model " + quote(kModel) + " --prompt 'ROMEO:' --json";
  const auto calibrated = run_program(CALM_GENERATE_EXE, args);
  REQUIRE_MESSAGE(calibrated.status == 0, calibrated.err);
  CHECK(contains(calibrated.err, "no policy flags: using the calibrated policy of"));
  CHECK(contains(calibrated.err, "calm_calibration.json"));
  const auto with_calibration = calm::test::parse_json(calibrated.out);
  std::size_t checks = 0;
  for (const auto& t : with_calibration.at("tokens")) checks += t.at("checks").get<std::size_t>();
  CHECK(checks > 0);
  CHECK(with_calibration.at("certified") == true);

  const calm::test::ScratchDir dir("generate_defaults");
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "calm.safetensors"})
    fs::copy_file(kModel / f, dir.path / f);
  const auto full = run_program(CALM_GENERATE_EXE, "--model " + quote(dir.path) +
                                                       " --prompt 'ROMEO:' --max-new-tokens 20 --json");
  REQUIRE_MESSAGE(full.status == 0, full.err);
  CHECK(contains(full.err, "running the full model"));
  const auto j = calm::test::parse_json(full.out);
  CHECK(j.at("average_layers").get<double>() == 8.0);
  for (const auto& t : j.at("tokens")) CHECK(t.at("checks").get<std::size_t>() == 0);
  // The same text as --measure full on the bundled model.
  const auto same = run_program(CALM_GENERATE_EXE, args + " --max-new-tokens 20 --measure full");
  REQUIRE_MESSAGE(same.status == 0, same.err);
  CHECK(j.at("text") == calm::test::parse_json(same.out).at("text"));
}

namespace {

std::size_t total_checks(const nlohmann::json& j) {
  std::size_t checks = 0;
  for (const auto& t : j.at("tokens")) checks += t.at("checks").get<std::size_t>();
  return checks;
}

// A certificate for the bundled model with the policy and table these tests name (classifier,
// decaying tau 4 from layer 1, lambda* 0.95 with 1 and 0.95 passed, delta 0.2, epsilon 0.1),
// whatever the committed calm_calibration.json holds: version 2 with `decoding`, or version 1
// (no decoding record) when it is null. The model fingerprint is the committed file's.
fs::path certificate_with(const calm::test::ScratchDir& dir, const std::string& name,
                          const nlohmann::json& decoding) {
  nlohmann::json c = calm::test::parse_json(calm::test::read_text(kModel / "calm_calibration.json"));
  c["measure"] = "classifier";
  c["schedule"] = {{"schedule", "decaying"}, {"tau", 4.0}, {"first_exit", 1}, {"interval", 1},
                   {"propagation", "propagate"}};
  c["delta"] = 0.2;
  c["epsilon"] = 0.1;
  c["lambda_star"] = 0.95;
  c["table"] = nlohmann::json::array();
  for (int k = 0; k <= 19; ++k) {
    const double lambda = 1.0 - 0.05 * k;
    const bool tested = k <= 2, passed = k <= 1;
    c["table"].push_back({{"lambda", lambda},
                          {"mean_loss", tested ? nlohmann::json(0.05 * k) : nlohmann::json(nullptr)},
                          {"p_value", tested ? nlohmann::json(passed ? 0.01 : 0.3) : nlohmann::json(nullptr)},
                          {"tested", tested},
                          {"passed", passed}});
  }
  c.erase("measure_fingerprint");
  c.erase("measure_params");
  if (decoding.is_null()) {
    c["version"] = 1;
    c.erase("decoding");
  } else {
    c["version"] = 2;
    c["decoding"] = decoding;
  }
  return dir.write(name, c.dump());
}

}  // namespace

TEST_CASE("calm-generate --calibration: a run the certificate does not cover is refused, naming "
          "each difference, and --allow-uncertified runs it with a warning") {
  const calm::test::ScratchDir dir("generate_mismatch");
  const std::string model = "--model " + quote(kModel) + " --prompt 'ROMEO:' ";
  const std::string committed =  // a version-1 certificate, as the bundled one was first written
      "--calibration " + quote(certificate_with(dir, "v1.json", nullptr)) + " ";
  const fs::path greedy24 = certificate_with(
      dir, "greedy24.json", {{"mode", "greedy"}, {"max_new_tokens", 24}, {"stop", "eos"}});
  const fs::path sampled24 = certificate_with(
      dir, "sampled24.json", {{"mode", "sample"}, {"temperature", 0.8}, {"top_k", 40},
                              {"top_p", 1.0}, {"seed", 0},
                              {"seed_rule", std::string(calm::calibrate::kSeedRule)},
                              {"max_new_tokens", 24}, {"stop", "eos"}});
  const std::string g24 = "--calibration " + quote(greedy24) + " ";
  const std::string s24 = "--calibration " + quote(sampled24) + " ";

  struct Refused {
    std::string flags;
    std::vector<std::string> named;
  };
  const std::vector<Refused> refused = {
      // Version 1, read as greedy: sampling differs.
      {committed + "--temperature 0.8 --top-k 40 --max-new-tokens 20",
       {"decoding: sampling (temperature 0.8, top-k 40, top-p 1) here, greedy in the certificate"}},
      {g24 + "--max-new-tokens 40", {"max new tokens 40 here, 24 in the certificate"}},
      {g24 + "--temperature 0.5 --max-new-tokens 30",
       {"decoding: sampling (temperature 0.5, top-k 0, top-p 1) here, greedy in the certificate",
        "max new tokens 30 here, 24 in the certificate"}},
      {s24 + "--temperature 0.7 --top-p 0.9",
       {"temperature 0.7 here, 0.8 in the certificate", "top-p 0.9 here, 1 in the certificate"}},
      {s24 + "--temperature 0", {"decoding: greedy here, sampling (temperature 0.8"}},
      {g24 + "--threshold 0.5", {"threshold 0.5 here, lambda* 0.95 in the certificate "
                                 "(thresholds certified: 1, 0.95)"}},
      {g24 + "--measure softmax", {"measure softmax here, classifier in the certificate"}},
      {g24 + "--tau 2", {"schedule parameters {\"tau\":2.0} here, {\"tau\":4.0} in the certificate"}},
      {g24 + "--first-exit 2 --propagation true_cache",
       {"first exit 2 here, 1 in the certificate", "propagation true_cache here, propagate in the"}},
  };
  for (const Refused& c : refused) {
    CAPTURE(c.flags);
    const auto run = run_program(CALM_GENERATE_EXE, model + c.flags);
    CHECK(run.status == 1);
    CHECK(contains(run.err, "its guarantee does not apply to this run"));
    for (const std::string& name : c.named) CHECK(contains(run.err, name));
    CHECK(contains(run.err, "--allow-uncertified"));
    CHECK(!contains(run.out, "ROMEO"));  // refused before anything was generated
  }

  // A classifier certificate names its calm.safetensors by content: another classifier is
  // another policy.
  {
    nlohmann::json c = calm::test::parse_json(calm::test::read_text(greedy24));
    c["measure_fingerprint"] = "fnv1a64:0000000000000000";
    const fs::path other = dir.write("other_classifier.json", c.dump());
    const auto run = run_program(CALM_GENERATE_EXE, model + "--calibration " + quote(other));
    CHECK(run.status == 1);
    CHECK(contains(run.err, "calm.safetensors is not the one certified (fingerprint fnv1a64:"));
    CHECK(contains(run.err, "fnv1a64:0000000000000000 in the certificate"));
    c["measure_fingerprint"] = calm::calibrate::file_fingerprint(kModel / "calm.safetensors");
    const fs::path same = dir.write("same_classifier.json", c.dump());
    const auto ok = run_program(CALM_GENERATE_EXE, model + "--calibration " + quote(same) + " --json");
    REQUIRE_MESSAGE(ok.status == 0, ok.err);
    CHECK(calm::test::parse_json(ok.out).at("certified") == true);
  }

  // --allow-uncertified: runs as asked, warns, and --json says it is not certified.
  const auto allowed = run_program(CALM_GENERATE_EXE, model + committed +
                                   "--temperature 0.8 --top-k 40 --max-new-tokens 20 --json "
                                   "--allow-uncertified");
  REQUIRE_MESSAGE(allowed.status == 0, allowed.err);
  CHECK(contains(allowed.err, "WITHOUT the guarantee"));
  const auto a = calm::test::parse_json(allowed.out);
  CHECK(a.at("certified") == false);
  CHECK(a.at("certificate").at("action") == "uncertified (--allow-uncertified)");
  CHECK(a.at("certificate").at("differences").size() == 1);
  CHECK(total_checks(a) > 0);  // early exits ran

  // Covered runs. Version 1 is said to be read as greedy with its length unchecked.
  const auto v1 = run_program(CALM_GENERATE_EXE, model + committed + "--max-new-tokens 20 --json");
  REQUIRE_MESSAGE(v1.status == 0, v1.err);
  CHECK(contains(v1.err, "format version 1 records no decoding settings: read as greedy"));
  CHECK(contains(v1.err, "calibrated threshold 0.95 (delta 0.2, epsilon 0.1), certified for this run"));
  const auto v1j = calm::test::parse_json(v1.out);
  CHECK(v1j.at("certified") == true);
  CHECK(v1j.at("certificate").at("format_version") == 1);
  CHECK(v1j.at("certificate").at("unchecked").size() == 1);
  // A certified lambda above lambda* (its test passed too) is covered.
  const auto at_one = run_program(CALM_GENERATE_EXE, model + g24 + "--threshold 1 --json");
  REQUIRE_MESSAGE(at_one.status == 0, at_one.err);
  CHECK(calm::test::parse_json(at_one.out).at("certified") == true);
  // The decoding flags not given come from the certificate: 24 tokens, and its sampler (the
  // same text as those settings given by hand, with the seed given here).
  const auto g = run_program(CALM_GENERATE_EXE, model + g24 + "--json");
  REQUIRE_MESSAGE(g.status == 0, g.err);
  const auto gj = calm::test::parse_json(g.out);
  CHECK(gj.at("certified") == true);
  CHECK(gj.at("certificate").at("unchecked").empty());
  CHECK(gj.at("generated_tokens").get<std::size_t>() <= 24);
  const auto s = run_program(CALM_GENERATE_EXE, model + s24 + "--seed 5 --json");
  REQUIRE_MESSAGE(s.status == 0, s.err);
  const auto sj = calm::test::parse_json(s.out);
  CHECK(sj.at("certified") == true);
  const auto by_hand = run_program(CALM_GENERATE_EXE, model + committed +
                                   "--temperature 0.8 --top-k 40 --max-new-tokens 24 --seed 5 "
                                   "--allow-uncertified --json");
  REQUIRE_MESSAGE(by_hand.status == 0, by_hand.err);
  CHECK(calm::test::parse_json(by_hand.out).at("text") == sj.at("text"));
  CHECK(sj.at("text") != gj.at("text"));  // it did sample
  // Without a calibration: not certified, no certificate.
  const auto none = run_program(CALM_GENERATE_EXE, model + "--measure full --max-new-tokens 8 --json");
  REQUIRE_MESSAGE(none.status == 0, none.err);
  CHECK(calm::test::parse_json(none.out).at("certified") == false);
  CHECK(calm::test::parse_json(none.out).at("certificate").is_null());
}

// The certificate next to the model was picked because no policy was asked for; when it does not
// cover the decoding asked for, the full model runs (its output needs no certificate) and the
// reason is printed.
TEST_CASE("calm-generate without policy flags: settings the certificate does not cover run the "
          "full model, saying why") {
  const std::string args = "--model " + quote(kModel) + " --prompt 'ROMEO:' --max-new-tokens 20 "
                           "--temperature 0.8 --top-k 40 --seed 7 --json";
  const auto run = run_program(CALM_GENERATE_EXE, args);
  REQUIRE_MESSAGE(run.status == 0, run.err);
  CHECK(contains(run.err, "its guarantee does not apply to this run: decoding: sampling "
                          "(temperature 0.8, top-k 40, top-p 1) here, greedy in the certificate"));
  CHECK(contains(run.err, "Running the full model instead"));
  const auto j = calm::test::parse_json(run.out);
  CHECK(j.at("certified") == false);
  CHECK(j.at("certificate").at("action") == "full model: the certificate does not cover these settings");
  CHECK(j.at("average_layers").get<double>() == 8.0);
  CHECK(total_checks(j) == 0);
  // The same samples as asking for the full model.
  const auto full = run_program(CALM_GENERATE_EXE, args + " --measure full");
  REQUIRE_MESSAGE(full.status == 0, full.err);
  CHECK(j.at("text") == calm::test::parse_json(full.out).at("text"));
  // --allow-uncertified: exits early anyway, with the warning.
  const auto allowed = run_program(CALM_GENERATE_EXE, args + " --allow-uncertified");
  REQUIRE_MESSAGE(allowed.status == 0, allowed.err);
  CHECK(contains(allowed.err, "WITHOUT the guarantee"));
  CHECK(total_checks(calm::test::parse_json(allowed.out)) > 0);
}

namespace {

// The bundled model's files in `dir`: a copy the test may change or that a bug may overwrite.
fs::path model_copy(const calm::test::ScratchDir& dir) {
  const fs::path m = dir.path / "model";
  fs::create_directories(m);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"})
    fs::copy_file(kModel / f, m / f);
  return m;
}

}  // namespace

TEST_CASE("calm-generate stops at every end token config.json lists, speculative or not") {
  const calm::test::ScratchDir dir("generate_eos_list");
  const fs::path m = model_copy(dir);
  const std::string args = "--model " + quote(m) + " --prompt 'ROMEO:' --max-new-tokens 40 --json ";
  const auto run_json = [&](const std::string& flags) {
    const auto run = run_program(CALM_GENERATE_EXE, args + flags);
    REQUIRE_MESSAGE(run.status == 0, run.err);
    return calm::test::parse_json(run.out);
  };
  const auto full = run_json("--measure full").at("tokens");
  REQUIRE(full.size() > 5);
  const int stop = full[5].at("token").get<int>();
  std::size_t first = 0;
  while (full[first].at("token").get<int>() != stop) ++first;
  nlohmann::json config = calm::test::parse_json(calm::test::read_text(m / "config.json"));
  config["eos_token_id"] = {config.at("eos_token_id"), stop};
  dir.write("model/config.json", config.dump());
  for (const std::string flags : {"--measure full", "--measure softmax --threshold 0.9",
                                  "--speculative --measure static --static-layer 3"}) {
    CAPTURE(flags);
    CHECK(run_json(flags).at("tokens").size() == first);
  }
}

TEST_CASE("calm-generate refuses an output path that is empty or one of its inputs") {
  const calm::test::ScratchDir dir("generate_output_is_input");
  const fs::path m = model_copy(dir);
  const std::string config = calm::test::read_text(m / "config.json");
  const std::string args = "--model " + quote(m) + " --prompt 'ROMEO:' --max-new-tokens 4 ";
  for (const auto& [flags, message] : std::vector<std::pair<std::string, std::string>>{
           {"--report " + quote(m / "config.json"), "is an input of this run"},
           {"--report " + quote(m / "model.safetensors"), "is an input of this run"},
           {"--report ''", "--report"}}) {
    CAPTURE(flags);
    const auto run = run_program(CALM_GENERATE_EXE, args + flags);
    CHECK(run.status != 0);
    CHECK(contains(run.err, message));
    CHECK(!contains(run.out, "ROMEO"));
  }
  CHECK(calm::test::read_text(m / "config.json") == config);
}

TEST_CASE("calm-generate: sampling flags need a temperature, unsigned flags parse strictly") {
  for (const auto& [flags, message] : std::vector<std::pair<std::string, std::string>>{
           {"--measure full --top-k 5", "--top-k has no effect with greedy decoding"},
           {"--measure full --top-p 0.5", "--top-p has no effect with greedy decoding"},
           {"--measure full --seed 3", "--seed has no effect with greedy decoding"},
           {"--measure full --temperature 0.8 --seed -1", "--seed"},
           {"--measure full --temperature 0.8 --seed 99999999999999999999999", "--seed"},
           {"--measure full --temperature 0.8 --top-k -1", "--top-k"},
           {"--measure full --context -5", "--context"}}) {
    CAPTURE(flags);
    const auto run = run_program(CALM_GENERATE_EXE, base() + flags);
    CHECK(run.status != 0);
    CHECK(contains(run.err, message));
    CHECK(!contains(run.out, "ROMEO"));
  }
}

TEST_CASE("calm-generate --weights: the int8-dot formats speculate exactly, an unknown one is refused") {
  for (const std::string w : {"q8_0_dot", "q4_0_dot"}) {
    CAPTURE(w);
    const auto full = generate_json("--measure full --weights " + w);
    CHECK(generate_json("--speculative --measure static --static-layer 3 --weights " + w)
              .at("text") == full.at("text"));
  }
  const auto run = run_program(CALM_GENERATE_EXE, base() + "--measure full --weights q4_1");
  CHECK(run.status != 0);
  CHECK(contains(run.err, "--weights"));
  CHECK(contains(run.err, "q4_1"));
  CHECK(contains(run.err, "q4_0_dot"));  // the formats it takes are listed
  CHECK(!contains(run.out, "ROMEO"));
}

TEST_CASE("calm-generate at a tiny positive temperature gives the greedy text") {
  const auto greedy = generate_json("--measure full");
  for (const std::string t : {"1e-38", "1e-45"}) {
    CAPTURE(t);
    CHECK(generate_json("--measure full --temperature " + t + " --seed 3").at("text") ==
          greedy.at("text"));
    CHECK(generate_json("--speculative --measure static --static-layer 3 --temperature " + t)
              .at("text") == greedy.at("text"));
  }
}

TEST_CASE("calm-generate --speculative with no draft flags: n-gram drafts, said, the full model's text") {
  const auto full = generate_json("--measure full");
  const auto run = run_program(CALM_GENERATE_EXE, base() + "--json --speculative");
  REQUIRE_MESSAGE(run.status == 0, run.err);
  CHECK(contains(run.err, "--speculative with no draft flags: n-gram drafts"));
  const auto spec = calm::test::parse_json(run.out);
  CHECK(spec.at("text") == full.at("text"));
  const auto& s = spec.at("speculative");
  CHECK(s.at("lookup_drafted") == s.at("drafted"));
  CHECK(s.at("verifications").get<int>() > 0);
  for (const std::string draft : {"--draft ngram --ngram-max 2", "--draft ngram --ngram-min 1",
                                  "--draft ngram+exit",
                                  "--draft ngram+exit --measure static --static-layer 4"}) {
    CAPTURE(draft);
    CHECK(generate_json("--speculative " + draft).at("text") == full.at("text"));
  }
}

TEST_CASE("calm-count-tokens ranks the tokens, --draft-vocab drafts over the top, the full model's text") {
  const calm::test::ScratchDir dir("count_tokens");
  const fs::path text = dir.write("text.txt", "ROMEO:\nBut soft, what light through yonder window "
                                              "breaks?\nIt is the east, and Juliet is the sun.\n");
  const fs::path out = dir.path / "frequencies.json";
  const auto count = run_program(CALM_COUNT_TOKENS_EXE, "--model " + quote(kModel) + " --text " +
                                                            quote(text) + " --out " + quote(out));
  REQUIRE_MESSAGE(count.status == 0, count.err);
  CHECK(contains(count.out, "wrote " + out.string()));
  const calm::TokenFrequencies f = calm::read_token_frequencies(out, 1024);
  CHECK(f.total() > 15);
  CHECK(f.source == "text.txt");
  for (const auto& [flags, message] : std::vector<std::pair<std::string, std::string>>{
           {"--text " + quote(dir.path / "missing.txt"), "missing.txt"},
           {"--text " + quote(dir.write("empty.txt", "")), "is empty"}}) {
    const auto bad = run_program(CALM_COUNT_TOKENS_EXE, "--model " + quote(kModel) + " " + flags +
                                                            " --out " + quote(dir.path / "x.json"));
    CHECK(bad.status == 1);
    CHECK(contains(bad.err, message));
    CHECK(!fs::exists(dir.path / "x.json"));
  }

  const auto full = generate_json("--measure full");
  // The bundled model's own ranking (its train split), a ranking from one sentence, a static
  // exit; --draft-vocab alone picks early-exit drafts with the certified policy.
  for (const std::string& flags : std::vector<std::string>{
           "--draft-vocab 256", "--draft-vocab 512 --draft ngram+exit",
        "--draft-vocab 32 --token-frequencies " + quote(out),
        "--draft-vocab 64 --measure static --static-layer 3"}) {
    CAPTURE(flags);
    const auto spec = generate_json("--speculative " + flags);
    CHECK(spec.at("text") == full.at("text"));
    CHECK(spec.at("speculative").at("drafted").get<int>() > 0);
  }
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"--draft-vocab 64", "--draft-vocab needs --speculative"},
      {"--speculative --draft ngram --draft-vocab 64", "--draft ngram has none"},
      {"--speculative --measure softmax --draft-vocab 64", "saves nothing with --measure softmax"},
      {"--speculative --draft-vocab 5000", "exceeds the vocabulary (1024 tokens)"},
      {"--speculative --token-frequencies " + quote(out), "give --draft-vocab N"},
      {"--speculative --draft-vocab 8 --token-frequencies " + quote(text), "token frequencies"},
  };
  for (const auto& [flags, message] : refused) {
    CAPTURE(flags);
    const auto run = run_program(CALM_GENERATE_EXE, base() + flags);
    CHECK(run.status == 1);
    CHECK(contains(run.err, message));
  }
}

TEST_CASE("calm-generate refuses draft flags that would do nothing") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--draft ngram", "--draft needs --speculative"},
      {"--ngram-max 2", "--ngram-max needs --speculative"},
      {"--speculative --draft ngram --measure softmax", "the policy flags would do nothing"},
      {"--speculative --draft exit --ngram-max 2", "no effect with --draft exit"},
      {"--speculative --ngram-max 2 --ngram-min 3", "--ngram-min 3 exceeds --ngram-max 2"},
  };
  for (const auto& [flags, message] : cases) {
    CAPTURE(flags);
    const auto run = run_program(CALM_GENERATE_EXE, base() + flags);
    CHECK(run.status == 1);
    CHECK(contains(run.err, message));
  }
}

TEST_CASE("calm-generate --prompt-file: one prompt of a prompt file, as --prompt would give it") {
  const fs::path test_split = kModel / "data" / "test.jsonl";
  const std::string model = "--model " + quote(kModel) + " --max-new-tokens 12 --measure full --json ";
  const auto from_file = run_program(CALM_GENERATE_EXE,
                                     model + "--prompt-file " + quote(test_split) + " --prompt-index 2");
  REQUIRE_MESSAGE(from_file.status == 0, from_file.err);
  const nlohmann::json got = calm::test::parse_json(from_file.out);
  // The third line's prompt, read independently of calm's reader.
  std::ifstream in(test_split);
  std::string line;
  for (int i = 0; i < 3; ++i) std::getline(in, line);
  const std::string text = calm::test::parse_json(line).at("prompt").get<std::string>();
  CHECK(got.at("prompt").get<std::string>() == text);
  std::string quoted = "'";  // for sh: ' as '\''
  for (const char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  quoted += "'";
  const auto direct = run_program(CALM_GENERATE_EXE, model + "--prompt " + quoted);
  REQUIRE_MESSAGE(direct.status == 0, direct.err);
  CHECK(calm::test::parse_json(direct.out).at("text") == got.at("text"));
  for (const auto& [flags, message] : std::vector<std::pair<std::string, std::string>>{
           {"--prompt-file " + quote(test_split) + " --prompt-index 100000", "there is no prompt 100000"},
           {"--prompt-file " + quote(test_split) + " --prompt 'ROMEO:'", "excludes"},
           {"--prompt-index 1 --prompt 'ROMEO:'", "--prompt-index picks a prompt of --prompt-file"},
           {"", "--prompt TEXT or --prompt-file FILE"}}) {
    CAPTURE(flags);
    const auto run = run_program(CALM_GENERATE_EXE, model + flags);
    CHECK(run.status != 0);
    CHECK(contains(run.err, message));
  }
}

TEST_CASE("calm-generate --gamma auto: adaptive speculation, the full model's text, the gamma reported") {
  const auto full = generate_json("--measure full");
  for (const std::string& flags : std::vector<std::string>{
           "--gamma auto", "--gamma auto --measure classifier --threshold 0.8",
           "--gamma auto --gamma-max 3 --verify-row-cost 0.5 --measure static --static-layer 3",
           "--gamma auto --draft ngram+exit --measure static --static-layer 4"}) {
    CAPTURE(flags);
    const auto spec = generate_json("--speculative " + flags);
    CHECK(spec.at("text") == full.at("text"));
    const auto& gamma = spec.at("speculative").at("gamma");
    CHECK(gamma.at("adaptive") == true);
    CHECK(gamma.at("min").get<int>() >= 1);
    CHECK(gamma.at("max").get<int>() <= (contains(flags, "--gamma-max 3") ? 3 : 8));
    CHECK(gamma.at("mean").get<double>() >= 1.0);
  }
  const auto fixed = generate_json("--speculative --gamma 3 --measure static --static-layer 3");
  CHECK(fixed.at("speculative").at("gamma").at("adaptive") == false);
  CHECK(fixed.at("speculative").at("gamma").at("max") == 3);
  // The summary line says what it chose.
  const auto run = run_program(CALM_GENERATE_EXE, base() + "--speculative --gamma auto");
  REQUIRE_MESSAGE(run.status == 0, run.err);
  CHECK(contains(run.err, "gamma auto: mean"));

  const std::vector<std::pair<std::string, std::string>> refused = {
      {"--gamma auto", "--gamma needs --speculative"},
      {"--gamma-max 4", "--gamma-max needs --speculative"},
      {"--verify-row-cost 0.3", "--verify-row-cost needs --speculative"},
      {"--speculative --gamma-max 4", "--gamma-max sets adaptive speculation: give --gamma auto"},
      {"--speculative --gamma 3 --verify-row-cost 0.3", "give --gamma auto"},
      {"--speculative --gamma fast", "--gamma takes a length in [1, 64] or 'auto'"},
      {"--speculative --gamma 65", "got '65'"},
      {"--speculative --gamma 0", "got '0'"},
      {"--speculative --gamma -1", "got '-1'"},
      {"--speculative --gamma Auto", "got 'Auto'"},
  };
  for (const auto& [flags, message] : refused) {
    CAPTURE(flags);
    const auto bad = run_program(CALM_GENERATE_EXE, base() + flags);
    CHECK(bad.status == 1);
    CHECK(contains(bad.err, message));
  }
  // Out of range (CLI11's check, or calm-generate's for nan).
  for (const auto& [flags, flag] : std::vector<std::pair<std::string, std::string>>{
           {"--gamma-max 0", "--gamma-max"},
           {"--verify-row-cost -1", "--verify-row-cost"},
           {"--verify-row-cost nan", "--verify-row-cost"}}) {
    CAPTURE(flags);
    const auto bad = run_program(CALM_GENERATE_EXE, base() + "--speculative --gamma auto " + flags);
    CHECK(bad.status != 0);
    CHECK(contains(bad.err, flag));
  }
}

}  // namespace test_programs_generate
