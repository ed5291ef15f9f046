// The exit classifier's file, calm.safetensors (docs/design.md §3c): ExitClassifier::load and
// ::save. Tensors calm.exit_classifier.weight / .bias (linear) or .fc{1,2}.{weight,bias} (mlp);
// __metadata__ {"format": "calm-exit-classifier", "version": "2", "kind": ...}, and a file
// without __metadata__ is version 1, the linear kind. Included by confidence/exit_classifier.hpp.
#pragma once

#include <charconv>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "calm/confidence/exit_classifier.hpp"
#include "calm/core/error.hpp"
#include "calm/io/safetensors.hpp"
#include "calm/io/safetensors_writer.hpp"

namespace calm {

inline ExitClassifier ExitClassifier::load(const std::filesystem::path& file, std::size_t hidden) {
  const io::SafeTensorsFile st = io::SafeTensorsFile::open(file);
  const std::string where = "'" + file.string() + "'";
  const auto read = [&](const char* name, std::initializer_list<std::size_t> expected) {
    const io::TensorView* t = st.find(name);
    if (t == nullptr) throw Error(where + ": no tensor '" + name + "'");
    const std::vector<std::size_t> want(expected);
    if (t->shape != want)
      throw Error("tensor '" + std::string(name) + "' in " + where + " has shape " +
                  io::detail::shape_string(t->shape) + ", expected " +
                  io::detail::shape_string(want));
    if (const std::optional<std::size_t> bad = t->first_non_finite()) {
      throw Error("tensor '" + std::string(name) + "' in " + where + " holds " +
                  describe_non_finite(t->value(*bad)) + " at index " + std::to_string(*bad) +
                  "; a classifier with a non-finite value would never or always exit, so calm "
                  "refuses it");
    }
    return t->to_floats();
  };
  const auto& md = st.metadata();
  if (md.empty()) {  // version 1: CALM's linear head
    std::vector<float> w = read(kExitClassifierWeight, {2, hidden});
    const std::vector<float> b = read(kExitClassifierBias, {2});
    return ExitClassifier(std::move(w), std::span<const float, 2>(b.data(), 2));
  }
  const auto meta = [&](const char* key) -> const std::string& {
    const auto it = md.find(key);
    if (it == md.end())
      throw Error(where + ": __metadata__ has no key '" + key + "' (version 2 needs it)");
    return it->second;
  };
  const auto bad_meta = [&](const char* key, const std::string& expected) {
    throw Error(where + ": __metadata__ key '" + key + "' is '" + meta(key) + "', expected " +
                expected);
  };
  if (meta("format") != kExitClassifierFormat)
    bad_meta("format", "'" + std::string(kExitClassifierFormat) + "'");
  if (meta("version") != kExitClassifierVersion)
    bad_meta("version", "'2' (version 1 files have no __metadata__)");
  const std::string& kind = meta("kind");
  if (kind != "linear" && kind != "mlp") bad_meta("kind", "'linear' or 'mlp'");
  const bool is_mlp = kind == "mlp";
  for (const auto& [key, value] : md) {
    const bool known = key == "format" || key == "version" || key == "kind" ||
                       (is_mlp && (key == "features" || key == "hidden_units" ||
                                   key == "activation"));
    if (!known)
      throw Error(where + ": __metadata__ key '" + key + "' is unknown to a classifier of kind '" +
                  kind + "'");
  }
  const auto refuse_unknown_tensors = [&](std::initializer_list<const char*> names) {
    for (const io::TensorView& t : st.tensors()) {
      bool known = false;
      for (const char* n : names) known = known || t.name == n;
      if (!known)
        throw Error(where + ": tensor '" + t.name + "' is unknown to a classifier of kind '" +
                    kind + "'");
    }
  };
  if (!is_mlp) {
    refuse_unknown_tensors({kExitClassifierWeight, kExitClassifierBias});
    std::vector<float> w = read(kExitClassifierWeight, {2, hidden});
    const std::vector<float> b = read(kExitClassifierBias, {2});
    return ExitClassifier(std::move(w), std::span<const float, 2>(b.data(), 2));
  }
  if (meta("features") != kExitClassifierFeatures)
    bad_meta("features", "'" + std::string(kExitClassifierFeatures) + "'");
  if (meta("activation") != "silu") bad_meta("activation", "'silu'");
  const std::string& units_text = meta("hidden_units");
  std::size_t units = 0;
  const auto [end, ec] =
      std::from_chars(units_text.data(), units_text.data() + units_text.size(), units);
  if (ec != std::errc() || end != units_text.data() + units_text.size() || units < 1 ||
      units > kExitClassifierMaxUnits)
    bad_meta("hidden_units",
             "an integer in [1, " + std::to_string(kExitClassifierMaxUnits) + "]");
  refuse_unknown_tensors({kExitClassifierFc1Weight, kExitClassifierFc1Bias,
                          kExitClassifierFc2Weight, kExitClassifierFc2Bias});
  std::vector<float> w1 = read(kExitClassifierFc1Weight, {units, hidden + kExitClassifierExtras});
  std::vector<float> b1 = read(kExitClassifierFc1Bias, {units});
  std::vector<float> w2 = read(kExitClassifierFc2Weight, {1, units});
  const std::vector<float> b2 = read(kExitClassifierFc2Bias, {1});
  return mlp(hidden, std::move(w1), std::move(b1), std::move(w2), b2[0]);
}

inline void ExitClassifier::save(const std::filesystem::path& file) const {
  const auto check = [&](std::span<const float> values, const char* name) {
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(values[i]))
        throw Error("refusing to write '" + file.string() + "': " + name + " holds " +
                    describe_non_finite(values[i]) + " at index " + std::to_string(i) +
                    " (the file is left as it was)");
    }
  };
  std::map<std::string, std::string> metadata = {
      {"format", std::string(kExitClassifierFormat)},
      {"version", std::string(kExitClassifierVersion)}};
  const auto bytes = [](std::span<const float> v) { return std::as_bytes(v); };
  if (kind_ == ExitClassifierKind::linear) {
    check(weight_, kExitClassifierWeight);
    check(bias_, kExitClassifierBias);
    metadata["kind"] = "linear";
    const io::TensorToWrite tensors[] = {
        {kExitClassifierWeight, DType::f32, {2, hidden_}, bytes(weight_)},
        {kExitClassifierBias, DType::f32, {2}, bytes(bias_)}};
    io::write_safetensors(file, tensors, metadata);
    return;
  }
  const std::span<const float> b2(&fc2_bias_, 1);
  check(weight_, kExitClassifierFc1Weight);
  check(fc1_bias_, kExitClassifierFc1Bias);
  check(fc2_weight_, kExitClassifierFc2Weight);
  check(b2, kExitClassifierFc2Bias);
  const std::size_t units = hidden_units();
  metadata["kind"] = "mlp";
  metadata["features"] = std::string(kExitClassifierFeatures);
  metadata["hidden_units"] = std::to_string(units);
  metadata["activation"] = "silu";
  const io::TensorToWrite tensors[] = {
      {kExitClassifierFc1Weight, DType::f32, {units, hidden_ + kExitClassifierExtras},
       bytes(weight_)},
      {kExitClassifierFc1Bias, DType::f32, {units}, bytes(fc1_bias_)},
      {kExitClassifierFc2Weight, DType::f32, {1, units}, bytes(fc2_weight_)},
      {kExitClassifierFc2Bias, DType::f32, {1}, bytes(b2)}};
  io::write_safetensors(file, tensors, metadata);
}

}  // namespace calm
