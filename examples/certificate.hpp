// Applying a certificate (calm_calibration.json) to a run of a program: its policy and certified
// threshold, the decoding it was computed with for every flag not given, and whether its
// guarantee covers the run as it will be decoded -- what calm-generate and calm-custom-measure
// do the same way.
#pragma once

#include "policy_flags.hpp"

#include <calm/calibrate/calibration_json.hpp>
#include <calm/calibrate/coverage.hpp>
#include <calm/core/error.hpp>
#include <calm/policy_registry.hpp>

#include <CLI/App.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace calm::cli {

// The policy and decoding flags on `app`'s command line: those a certificate would otherwise
// supply (CertificateRequest::given).
inline std::set<std::string> certifiable_flags_given(const CLI::App& app) {
  std::set<std::string> given;
  for (const char* flag : {"--measure", "--threshold", "--tau", "--schedule", "--first-exit",
                           "--interval", "--static-layer", "--propagation", "--classifier",
                           "--temperature", "--top-k", "--top-p", "--seed", "--max-new-tokens"})
    if (app.count(flag) > 0) given.insert(flag);
  return given;
}

// What a run asks of a certificate, beside its policy and decoding.
struct CertificateRequest {
  std::filesystem::path file;             // calm_calibration.json
  std::filesystem::path model;            // the model folder the run decodes with
  const std::set<std::string>& given;     // the policy and decoding flags on the command line
  bool allow_uncertified = false;         // run settings the certificate does not cover
  bool implicit = false;                  // found next to the model, no policy flags given
  bool drafts_only = false;               // --speculative: the policy only drafts
  std::string program;                    // for the messages, e.g. "calm-generate"
};

// What apply_certificate decided.
struct Certification {
  float lambda = 1.0f;     // the threshold to run at
  bool certified = false;  // a certificate was read and covers the run as it is decoded
  nlohmann::json json;     // "certificate" in --json: null when no calibration file was read
};

// Applies the certificate: its measure, schedule and certified threshold lambda* to `policy`, and
// the decoding it was computed with to `decoding` for every flag not given (the flags given win,
// and the comparison then names them). A certificate of another model is refused. A run the
// certificate does not cover is refused (unless allow_uncertified); with the file found next to
// the model (implicit), the full model runs instead; under --speculative the policy still drafts.
inline Certification apply_certificate(const CertificateRequest& req, std::size_t num_layers,
                                       PolicyFlags& policy, calibrate::DecodingRecord& decoding) {
  Certification out;
  const calibrate::CalibrationRecord rec = calibrate::read_calibration_json(req.file);
  const std::string file = req.file.string();
  calibrate::check_model_fingerprint(rec, req.model, file);
  const PolicyFlags given = policy;
  const std::optional<PolicySpec> spec =
      calibrated_policy(rec, policy.spec(policy.threshold), file);
  if (spec) {
    policy.apply(*spec);
    try {  // the schedule's layers against this model's, naming the file
      policy.check(num_layers, /*calibrated=*/true);
    } catch (const Error& e) {
      throw Error("'" + file + "': key 'schedule': " + e.what());
    }
  }
  const PolicyFlags certified_policy = policy;
  // The flags given win over the certificate's; the comparison below then names them.
  const auto given_flag = [&](const char* flag) { return req.given.count(flag) > 0; };
  if (given_flag("--measure")) {
    if (policy.measure != given.measure) policy.measure_params = nlohmann::json::object();
    policy.measure = given.measure;
  }
  if (given_flag("--schedule")) policy.schedule = given.schedule;
  if (given_flag("--tau")) policy.tau = given.tau;
  if (given_flag("--first-exit")) policy.first_exit = given.first_exit;
  if (given_flag("--interval")) policy.interval = given.interval;
  if (given_flag("--propagation")) policy.propagation = given.propagation;
  if (given_flag("--static-layer")) policy.static_layer = given.static_layer;
  if (rec.decoding) {
    if (!given_flag("--temperature")) decoding.temperature = rec.decoding->temperature;
    if (!given_flag("--top-k")) decoding.top_k = rec.decoding->top_k;
    if (!given_flag("--top-p")) decoding.top_p = rec.decoding->top_p;
    if (!given_flag("--max-new-tokens")) decoding.max_new_tokens = rec.decoding->max_new_tokens;
  }
  out.json = {{"file", file},
              {"delta", rec.result.delta},
              {"epsilon", rec.result.epsilon},
              {"lambda_star", rec.result.lambda_star ? nlohmann::json(*rec.result.lambda_star)
                                                     : nlohmann::json(nullptr)},
              {"format_version", rec.decoding ? calibrate::kCalibrationVersion : 1},
              {"decoding", rec.decoding ? calibrate::to_json(*rec.decoding) : nlohmann::json(nullptr)},
              {"differences", nlohmann::json::array()},
              {"unchecked", nlohmann::json::array()}};
  if (!rec.result.lambda_star) {
    fmt::print(stderr, "{}: {} certifies no threshold (delta {}, epsilon {}): "
               "running the full model\n", req.program, file, rec.result.delta, rec.result.epsilon);
    policy.measure = "full";
    out.json["action"] = "full model: no threshold certified";
    out.lambda = 1.0f;
    return out;
  }
  const float lambda_star = static_cast<float>(*rec.result.lambda_star);
  const float lambda = given_flag("--threshold") ? given.threshold : lambda_star;
  if (!rec.decoding)
    fmt::print(stderr, "{}: {}: {}\n", req.program, file, calibrate::version1_decoding_note());

  const calibrate::DecodingRecord run_decoding{
      .temperature = decoding.temperature, .top_k = decoding.temperature > 0 ? decoding.top_k : 0,
      .top_p = decoding.temperature > 0 ? decoding.top_p : 1.0, .seed = 0,
      .max_new_tokens = decoding.max_new_tokens};
  const calibrate::Coverage coverage =
      calibrate::certificate_coverage(rec, certified_policy.spec(lambda), policy.spec(lambda),
                                      run_decoding, policy.classifier_file(req.model));
  const std::vector<std::string>& differences = coverage.differences;
  out.json["differences"] = differences;
  out.json["unchecked"] = coverage.unchecked;
  const std::string certificate = fmt::format(
      "{} certifies lambda* {:.4g} (delta {}, epsilon {}) for measure {}, {}, {}", file,
      lambda_star, rec.result.delta, rec.result.epsilon, certified_policy.measure,
      certified_policy.schedule_description(),
      rec.decoding ? calibrate::decoding_description(*rec.decoding)
                   : std::string("greedy decoding stopping after EOS (format version 1)"));
  if (differences.empty()) {
    fmt::print(stderr, "{}: calibrated threshold {:.4g} (delta {}, epsilon {}), "
               "certified for this run: {}{}\n", req.program, lambda, rec.result.delta,
               rec.result.epsilon,
               calibrate::decoding_description(run_decoding),
               coverage.unchecked.empty() ? "" : "; not checked: " + join(coverage.unchecked, ", "));
    out.certified = true;
    out.json["action"] = "certified";
    out.lambda = lambda;
    return out;
  }
  const std::string mismatch =
      certificate + "; its guarantee does not apply to this run: " + join(differences, "; ") +
      (coverage.unchecked.empty() ? "" : " (not checked: " + join(coverage.unchecked, ", ") + ")");
  if (req.drafts_only) {  // the policy only drafts: the output is the full model's anyway
    fmt::print(stderr, "{}: {}. --speculative drafts with it all the same\n", req.program, mismatch);
    out.json["action"] = "drafts only (--speculative: the output is the full model's)";
    out.lambda = lambda;
    return out;
  }
  if (req.allow_uncertified) {
    fmt::print(stderr, "{}: warning: {}. --allow-uncertified: running it anyway, "
               "WITHOUT the guarantee\n", req.program, mismatch);
    out.json["action"] = "uncertified (--allow-uncertified)";
    out.lambda = lambda;
    return out;
  }
  if (req.implicit) {
    // No policy was asked for: early exit was chosen only because a certificate was there, and
    // it does not cover these settings. The full model's output needs no certificate.
    fmt::print(stderr, "{}: {}. Running the full model instead (give "
               "--allow-uncertified to exit early without the guarantee, or calibrate these "
               "settings with calm-calibrate)\n", req.program, mismatch);
    policy.measure = "full";
    out.json["action"] = "full model: the certificate does not cover these settings";
    out.lambda = 1.0f;
    return out;
  }
  throw Error(mismatch + ". Run with the certified settings (leave those flags out), "
              "calibrate these settings with calm-calibrate, or pass --allow-uncertified "
              "to run them without the guarantee");
}

// For a run that names no policy: the certificate next to the model if there is one (the run is
// then `implicit`: a certificate that does not cover it gives the full model, not an error), else
// the full model with no exit checks (checks that never exit only cost time). Says which.
inline std::filesystem::path certificate_next_to(const std::filesystem::path& model,
                                                 PolicyFlags& policy, const std::string& program) {
  const std::filesystem::path calibrated = model / calibrate::kCalibrationFileName;
  if (std::filesystem::exists(calibrated)) {
    fmt::print(stderr, "{}: no policy flags: using the calibrated policy of {} (--measure full "
               "runs the full model)\n", program, calibrated.string());
    return calibrated;
  }
  policy.measure = "full";
  fmt::print(stderr, "{}: no policy flags and no {} next to the model: running the full model\n",
             program, calibrate::kCalibrationFileName);
  return {};
}

}  // namespace calm::cli
