// What calm-eval decodes every pooled prompt with, and the names its shard files give them:
// (policy, lambda) pairs, 0 = the full model, 1 + m * G + j = measure m at grid[j] (G
// thresholds), then the local oracle and the static exits 1..L.
#pragma once

#include "policy_flags.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace calm::cli {

// The flags' policy with another measure (and static exit layer).
inline PolicyFlags with_measure(PolicyFlags p, std::string measure, std::size_t static_layer = 1) {
  p.measure = std::move(measure);
  p.static_layer = static_layer;
  return p;
}

using Configuration = std::pair<PolicyFlags, double>;  // policy, lambda

inline std::vector<Configuration> evaluation_configurations(
    const PolicyFlags& base, const std::vector<std::string>& measures,
    const std::vector<double>& grid, std::size_t num_layers) {
  std::vector<Configuration> configs;
  configs.emplace_back(with_measure(base, "full"), 1.0);
  for (const std::string& m : measures)
    for (double lambda : grid) configs.emplace_back(with_measure(base, m), lambda);
  configs.emplace_back(with_measure(base, "oracle"), 1.0);
  for (std::size_t k = 1; k <= num_layers; ++k)
    configs.emplace_back(with_measure(base, "static", k), 1.0);
  return configs;
}

// "full", "oracle", "static 3", "softmax@0.95": the configurations' names in shard files.
inline std::vector<std::string> configuration_names(const std::vector<Configuration>& configs) {
  std::vector<std::string> names;
  for (const auto& [p, lambda] : configs)
    names.push_back(p.measure == "static" ? "static " + std::to_string(p.static_layer)
                    : p.measure == "full" || p.measure == "oracle"
                        ? p.measure
                        : p.measure + "@" + nlohmann::json(lambda).dump());
  return names;
}

}  // namespace calm::cli
