// Lists, numbers and lambda grids written as text (command-line flags, config values). A grid is
// "HIGH,LOW,STEP": the descending grid HIGH, HIGH - STEP, ..., LOW of lambda_grid (default
// 1,0.05,0.05, docs/design.md §6). Measures whose scores crowd near 1 (hidden-state saturation)
// need a fine grid there, e.g. 1,0.9,0.005.
#pragma once

#include "calm/calibrate/learn_then_test.hpp"
#include "calm/core/error.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace calm::calibrate {

// The number `text` spells in full (std::stod: decimal, exponent, "inf", "nan"); empty when
// text is empty or holds anything else.
inline std::optional<double> parse_number(const std::string& text) {
  std::size_t used = 0;
  double value = 0.0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (text.empty() || used != text.size()) return std::nullopt;
  return value;
}

// The items of a comma-separated list ("softmax,saturation"), empty items skipped.
inline std::vector<std::string> split_comma_list(const std::string& text) {
  std::vector<std::string> out;
  for (std::size_t begin = 0; begin <= text.size();) {
    const std::size_t end = std::min(text.find(',', begin), text.size());
    if (end > begin) out.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return out;
}

// A comma-separated list of numbers ("0.05,0.1,0.2"), empty items skipped; an item that is not
// a number (NaN included) is an error naming `name` and the item.
inline std::vector<double> parse_number_list(const std::string& text, const std::string& name) {
  std::vector<double> out;
  for (const std::string& item : split_comma_list(text)) {
    const std::optional<double> value = parse_number(item);
    if (!value || std::isnan(*value)) throw Error(name + ": '" + item + "' is not a number");
    out.push_back(*value);
  }
  return out;
}

// `name` starts every error message (the flag, e.g. "--grid", or the setting's name).
inline std::vector<double> parse_lambda_grid(const std::string& text,
                                             const std::string& name = "lambda grid") {
  const std::string prefix = name + " '" + text + "': ";
  std::vector<double> v;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    const std::size_t end = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, end - begin);
    const std::optional<double> value = parse_number(item);
    if (!value) throw Error(prefix + "'" + item + "' is not a number (expected HIGH,LOW,STEP)");
    v.push_back(*value);
    begin = end + 1;
  }
  if (v.size() != 3) throw Error(prefix + "expected three numbers HIGH,LOW,STEP");
  try {
    return lambda_grid(v[0], v[1], v[2]);
  } catch (const Error& e) {
    throw Error(prefix + e.what());
  }
}

}  // namespace calm::calibrate
