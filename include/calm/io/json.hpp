// Strict JSON reading for calm's loaders: errors name the source, and
//  - a key that appears twice in one object is refused, at any depth (nlohmann::json keeps the
//    last one silently, which would hide a tensor, a dtype or a setting);
//  - a NUL byte is refused wherever it is (nlohmann's lexer takes it for the end of the input
//    and would ignore everything after it; RFC 8259 JSON text cannot contain one, a NUL inside a
//    string must be escaped);
//  - nesting deeper than kMaxJsonDepth is refused before parsing: no calm file format nests more
//    than a few levels, and a value nested 100,000 deep cannot be rendered or walked recursively
//    without running out of stack.
// Error messages quote JSON values through json_excerpt/describe_json, which stop after a few
// dozen characters and never recurse deeper than that.
#pragma once

#include <cstddef>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "calm/core/error.hpp"

namespace calm::io {

// Deepest nesting of arrays and objects accepted in any file calm reads. The formats need 3
// (a safetensors header: object, tensor entry, shape array); the bound leaves room for schedule
// objects in calm_calibration.json and metadata in config files.
inline constexpr std::size_t kMaxJsonDepth = 64;

// Refuses a NUL byte and nesting deeper than max_depth; brackets inside strings do not count.
// Malformed text is left for the parser to report. `where` starts the error message.
inline void check_json_text(std::string_view text, const std::string& where,
                            std::size_t max_depth = kMaxJsonDepth) {
  std::size_t depth = 0;
  bool in_string = false, escaped = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\0') {
      throw Error(where + " has a NUL byte at offset " + std::to_string(i) + " of " +
                  std::to_string(text.size()) +
                  " (JSON text cannot contain one; nothing after it would be read)");
    }
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        throw Error(where + " nests arrays and objects deeper than " + std::to_string(max_depth) +
                    " levels (at offset " + std::to_string(i) +
                    "); no calm file format needs that");
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

namespace detail {

inline void append_excerpt(const nlohmann::json& v, std::string& out, std::size_t limit) {
  if (out.size() >= limit) return;
  if (v.is_object()) {
    out += '{';
    bool first = true;
    for (auto it = v.begin(); it != v.end() && out.size() < limit; ++it) {
      if (!first) out += ',';
      first = false;
      out +=
          nlohmann::json(it.key()).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      out += ':';
      append_excerpt(it.value(), out, limit);
    }
    if (out.size() < limit) out += '}';
  } else if (v.is_array()) {
    out += '[';
    bool first = true;
    for (auto it = v.begin(); it != v.end() && out.size() < limit; ++it) {
      if (!first) out += ',';
      first = false;
      append_excerpt(*it, out, limit);
    }
    if (out.size() < limit) out += ']';
  } else {
    // A scalar: its dump does not recurse (a long string is cut below).
    out += v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
}

}  // namespace detail

// At most `max_chars` characters of a JSON value's compact text, "..." marking a cut. Each level
// of nesting writes at least one character, so the recursion stops within max_chars levels.
inline std::string json_excerpt(const nlohmann::json& v, std::size_t max_chars = 40) {
  std::string text;
  detail::append_excerpt(v, text, max_chars + 1);
  if (text.size() > max_chars) text = text.substr(0, max_chars - 3) + "...";
  return text;
}

// A short rendering of a JSON value for error messages: its type and (truncated) text.
inline std::string describe_json(const nlohmann::json& v) {
  return std::string(v.type_name()) + " " + json_excerpt(v);
}

// Parses the whole of `text` (what = "header", "config", ...; source = file path) into a JSON
// value of any type, with the checks listed at the top of this file. Trailing content after the
// value is a parse error (nlohmann reports its position).
inline nlohmann::json parse_json(std::string_view text, std::string_view what,
                                 std::string_view source) {
  check_json_text(text, std::string(what) + " of '" + std::string(source) + "'");
  // One frame per open array or object: its path (for the message) and, for objects, the keys
  // seen so far. Depth is bounded by the prescan.
  struct Frame {
    std::string path;
    std::set<std::string, std::less<>> keys;
    std::string last_key;
    bool object = false;
  };
  std::vector<Frame> frames;
  std::string duplicate, duplicate_in;
  const auto child_path = [&]() -> std::string {
    if (frames.empty()) return "";
    const Frame& parent = frames.back();
    if (!parent.object) return parent.path + "[]";
    return parent.path.empty() ? parent.last_key : parent.path + "." + parent.last_key;
  };
  using event_t = nlohmann::json::parse_event_t;
  const auto on_event = [&](int /*depth*/, event_t event, nlohmann::json& parsed) {
    switch (event) {
      case event_t::object_start:
      case event_t::array_start: {
        Frame f;
        f.path = child_path();
        f.object = event == event_t::object_start;
        frames.push_back(std::move(f));
        break;
      }
      case event_t::object_end:
      case event_t::array_end:
        if (!frames.empty()) frames.pop_back();
        break;
      case event_t::key: {
        Frame& f = frames.back();
        f.last_key = parsed.get<std::string>();
        if (!f.keys.insert(f.last_key).second && duplicate.empty()) {
          duplicate = f.last_key;
          duplicate_in = f.path;
        }
        break;
      }
      case event_t::value:
        break;
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
  if (!duplicate.empty()) {
    throw Error(std::string(what) + " of '" + std::string(source) + "' has the key '" + duplicate +
                "' twice" +
                (duplicate_in.empty() ? std::string() : " (in \"" + duplicate_in + "\")"));
  }
  return j;
}

// parse_json, and the value must be an object.
inline nlohmann::json parse_json_object(std::string_view text, std::string_view what,
                                        std::string_view source) {
  nlohmann::json j = parse_json(text, what, source);
  if (!j.is_object()) {
    throw Error(std::string(what) + " of '" + std::string(source) +
                "' is not a JSON object (found " + j.type_name() + ")");
  }
  return j;
}

inline std::string_view as_text(std::span<const std::byte> bytes) noexcept {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

}  // namespace calm::io
