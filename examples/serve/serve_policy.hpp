// calm-serve: how each request is decoded. The server's measure and schedule types are fixed at
// start-up (the certificate's, or the policy flags'); per request it picks the threshold, or the
// full model (a threshold no score reaches), and says whether the certificate covers the request
// as it will be decoded (the same coverage rules as calm-generate: policy, threshold, sampling,
// max new tokens).
#pragma once

#include "completion_request.hpp"

#include <calm/calibrate/calibration_json.hpp>
#include <calm/calibrate/coverage.hpp>
#include <calm/policy_registry.hpp>
#include <calm/sampling/sampler.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace calm::serve {

struct ServerPolicy {
  PolicySpec spec;                          // the measure, schedule and options, at the default lambda
  std::vector<std::string> measure_names;   // names of the server's measure type (calm_measure)
  std::filesystem::path certificate_file;   // empty: none
  std::optional<calibrate::CalibrationRecord> certificate;
  std::optional<PolicySpec> certified;      // the certificate's policy at lambda* (none certified: empty)
  std::filesystem::path classifier_file;    // the classifier the measure reads (coverage checks it)
  std::size_t default_max_tokens = 16;      // without a certificate's
};

// What one request runs.
struct Decision {
  bool full_model = false;
  bool certified = false;
  float lambda = 1.0f;
  std::string measure;
  std::size_t max_tokens = 16;
  SamplingOptions sampling;
  std::vector<std::string> differences;  // from the certificate (empty when certified or none)
  std::string note;                      // why this mode

  nlohmann::json json(const ServerPolicy& p) const {
    nlohmann::json out = {{"mode", full_model ? "full" : certified ? "certified" : "early-exit"},
                          {"certified", certified},
                          {"note", note},
                          {"certificate", p.certificate_file.empty()
                                              ? nlohmann::json(nullptr)
                                              : nlohmann::json(p.certificate_file.string())}};
    if (!full_model) out["measure"] = measure, out["threshold"] = lambda;
    if (!differences.empty()) out["differences"] = differences;
    return out;
  }
};

inline std::string join_text(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : "; ") + s;
  return out;
}

// Decides how `r` is decoded; an ApiError (400) names the field that asks for what cannot be.
inline Decision decide(const ServerPolicy& p, const CompletionRequest& r) {
  Decision d;
  const std::optional<calibrate::DecodingRecord> cert_decoding =
      p.certificate ? p.certificate->decoding : std::nullopt;
  // Fields left out take the certificate's decoding (as calm-generate's flags do), else
  // OpenAI's defaults except the temperature: greedy, so that an answer is reproducible.
  d.max_tokens = r.max_tokens.value_or(cert_decoding ? cert_decoding->max_new_tokens : p.default_max_tokens);
  const double temperature = r.temperature.value_or(cert_decoding ? cert_decoding->temperature : 0.0);
  const double top_p = r.top_p.value_or(cert_decoding ? cert_decoding->top_p : 1.0);
  const std::size_t top_k = cert_decoding && temperature > 0 ? cert_decoding->top_k : 0;
  d.sampling = {.temperature = static_cast<float>(temperature), .top_k = top_k,
                .top_p = static_cast<float>(top_p),
                .seed = r.seed ? *r.seed : std::random_device{}() * 0x9E3779B97F4A7C15ull};

  d.measure = r.measure.value_or(p.spec.measure);
  bool known = false;
  for (const std::string& n : p.measure_names) known = known || n == d.measure;
  if (!known)
    throw invalid_field("calm_measure", "this server decodes with the measure '" + p.spec.measure +
                        "' (its type takes the names: " + join_text(p.measure_names) +
                        "), chosen at start-up; start calm-serve with --measure " + d.measure +
                        " to use '" + d.measure + "'", "measure_unavailable");
  if (r.mode == Mode::full) {
    d.full_model = true;
    d.note = "calm_mode \"full\"";
    return d;
  }
  d.lambda = r.threshold.value_or(p.certified ? p.certified->lambda : p.spec.lambda);

  calibrate::Coverage coverage;
  if (!p.certificate) {
    coverage.differences.push_back("no certificate (calm_calibration.json) is loaded");
  } else if (!p.certified) {
    coverage.differences.push_back(p.certificate_file.string() + " certifies no threshold");
  } else {
    PolicySpec run = p.spec;
    run.measure = d.measure;
    run.lambda = d.lambda;
    if (d.measure != p.spec.measure) run.measure_params = nlohmann::json::object();
    const calibrate::DecodingRecord run_decoding{
        .temperature = temperature, .top_k = top_k, .top_p = temperature > 0 ? top_p : 1.0,
        .seed = 0, .max_new_tokens = d.max_tokens};
    coverage = calibrate::certificate_coverage(*p.certificate, *p.certified, run, run_decoding,
                                               p.classifier_file);
  }
  d.differences = coverage.differences;
  const bool explicit_policy = r.measure || r.threshold;
  if (coverage.covered()) {
    d.certified = true;
    d.note = "the certificate covers this request";
    return d;
  }
  const std::string why = "the certificate does not cover this request: " + join_text(d.differences);
  if (r.mode == Mode::early_exit) {
    d.note = "calm_mode \"early-exit\": WITHOUT the guarantee, " + why;
    return d;
  }
  if (r.mode == Mode::certified || explicit_policy)
    throw invalid_field(r.mode == Mode::certified ? "calm_mode" : r.threshold ? "calm_threshold" : "calm_measure",
                        why + ". Leave the calm fields out (the full model then runs), use the "
                        "certified settings, or give \"calm_mode\": \"early-exit\" to exit early "
                        "without the guarantee", "not_certified");
  d.full_model = true;
  d.differences = coverage.differences;
  d.note = "full model: " + why;
  return d;
}

}  // namespace calm::serve
