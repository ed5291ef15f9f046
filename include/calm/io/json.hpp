// Strict JSON reading for calm's loaders: errors name the source, and a duplicated key at the
// top level is refused (nlohmann::json keeps the last one silently, which would hide a tensor or
// a setting).
#pragma once

#include <cstddef>
#include <set>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "calm/core/error.hpp"

namespace calm::io {

// Parses `text` (what = "header", "config", ...; source = file path) into a JSON object.
inline nlohmann::json parse_json_object(std::string_view text, std::string_view what,
                                        std::string_view source) {
  std::set<std::string, std::less<>> top_keys;
  std::string duplicate;
  const auto on_event = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& key) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && duplicate.empty() &&
        !top_keys.insert(key.get<std::string>()).second) {
      duplicate = key.get<std::string>();
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end(), on_event);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string(what) + " of '" + std::string(source) +
                "' is not valid JSON: " + e.what());
  }
  if (!j.is_object()) {
    throw Error(std::string(what) + " of '" + std::string(source) +
                "' is not a JSON object (found " + j.type_name() + ")");
  }
  if (!duplicate.empty()) {
    throw Error(std::string(what) + " of '" + std::string(source) + "' has the key '" + duplicate +
                "' twice");
  }
  return j;
}

inline std::string_view as_text(std::span<const std::byte> bytes) noexcept {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// A short rendering of a JSON value for error messages: its type and (truncated) text.
inline std::string describe_json(const nlohmann::json& v) {
  std::string text = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return std::string(v.type_name()) + " " + text;
}

}  // namespace calm::io
