// Whether a calibration certificate (calm_calibration.json) covers a run: the policy, its
// threshold, the decoding settings and the classifier file it was computed with (docs/design.md
// §6). Each difference names the setting with the run's and the certificate's value, so that a
// program can refuse the run, fall back to the full model, or warn; a server can choose per
// request. Learn-then-Test bounds the risk of every threshold whose test passed at once (the
// family-wise error), so any passed threshold is covered, not only lambda*.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "calm/calibrate/calibration_json.hpp"
#include "calm/policy_registry.hpp"

namespace calm::calibrate {

namespace detail {
// A threshold as the messages print it: 4 significant digits ("0.95", "0.9375").
inline std::string short_number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.4g", v);
  return text;
}
}  // namespace detail

struct Coverage {
  std::vector<std::string> differences;  // each names the setting, the run's and the certified value
  std::vector<std::string> unchecked;    // settings the certificate does not record
  bool covered() const noexcept { return differences.empty(); }
};

// The policy differences of `run` (at its threshold run.lambda) from `certified`, the record's
// policy as the run names it (calibrated_policy(record, defaults) with the run's defaults).
inline std::vector<std::string> policy_differences(const CalibrationRecord& record,
                                                   const PolicySpec& certified,
                                                   const PolicySpec& run) {
  std::vector<std::string> out;
  const auto differ = [&](const std::string& what, const std::string& here,
                          const std::string& there) {
    if (here != there) out.push_back(what + " " + here + " here, " + there + " in the certificate");
  };
  differ("measure", run.measure == "none" ? "none (schedule " + run.schedule + ")" : run.measure,
         certified.measure);
  if (!out.empty() || run.measure == "none") return out;  // the rest describes certified's measure
  differ("schedule", run.schedule, certified.schedule);
  if (run.schedule == certified.schedule && run.schedule_params != certified.schedule_params)
    differ("schedule parameters", run.schedule_params.dump(), certified.schedule_params.dump());
  differ("first exit", std::to_string(run.options.first_exit),
         std::to_string(certified.options.first_exit));
  differ("interval", std::to_string(run.options.interval),
         std::to_string(certified.options.interval));
  differ("propagation", propagation_name(run.options.propagation),
         propagation_name(certified.options.propagation));
  if (run.measure_params != certified.measure_params)
    differ("measure parameters", run.measure_params.dump(), certified.measure_params.dump());
  std::string passed;
  bool certified_lambda = false;
  for (const GridRow& row : record.result.table)
    if (row.passed) {
      passed += (passed.empty() ? "" : ", ") + detail::short_number(row.lambda);
      certified_lambda = certified_lambda || static_cast<float>(row.lambda) == run.lambda;
    }
  if (!certified_lambda && record.result.lambda_star)
    out.push_back("threshold " + detail::short_number(run.lambda) + " here, lambda* " +
                  detail::short_number(*record.result.lambda_star) +
                  " in the certificate (thresholds certified: " + passed + ")");
  return out;
}

// Everything `record` certifies against the run: its policy (as policy_differences), its
// decoding (compare_decoding), and, for the classifier measure, the classifier file the run
// reads (`classifier`) against the one certified.
inline Coverage certificate_coverage(const CalibrationRecord& record, const PolicySpec& certified,
                                     const PolicySpec& run, const DecodingRecord& run_decoding,
                                     const std::filesystem::path& classifier = {}) {
  const DecodingComparison decoding = compare_decoding(record.decoding, run_decoding);
  Coverage out{decoding.differences, decoding.unchecked};
  for (std::string& d : policy_differences(record, certified, run)) out.differences.push_back(d);
  if (!record.measure_fingerprint.empty() && run.measure == "classifier") {
    const std::string here = file_fingerprint(classifier);
    if (here != record.measure_fingerprint)
      out.differences.push_back("classifier " + classifier.string() +
                                " is not the one certified (fingerprint " + here + " here, " +
                                record.measure_fingerprint + " in the certificate)");
  }
  return out;
}

}  // namespace calm::calibrate
