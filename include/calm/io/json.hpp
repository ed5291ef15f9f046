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
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "calm/core/compiled.hpp"
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

namespace detail {

// nlohmann's SAX interface, building the value as nlohmann::json::parse does and noting the first
// key that appears twice in one object. Each event costs O(log members) at most, so a parse is
// linear in the text (up to that log): nlohmann's parser-callback interface, used before, walks
// the parent container at the end of every object and array, which is quadratic in the number of
// members (a safetensors header of 40,000 tensors took 25 s).
class StrictJsonBuilder {
 public:
  using json = nlohmann::json;

  explicit StrictJsonBuilder(json& root) : root_(root) {}

  bool null() { return add(nullptr); }
  bool boolean(bool v) { return add(v); }
  bool number_integer(json::number_integer_t v) { return add(v); }
  bool number_unsigned(json::number_unsigned_t v) { return add(v); }
  bool number_float(json::number_float_t v, const json::string_t& /*text*/) { return add(v); }
  bool string(json::string_t& v) { return add(std::move(v)); }
  bool binary(json::binary_t& v) { return add(std::move(v)); }
  bool start_object(std::size_t /*size: unknown in JSON text*/) {
    return open(json::value_t::object);
  }
  bool start_array(std::size_t /*size*/) { return open(json::value_t::array); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(json::string_t& k) {
    Frame& f = frames_.back();
    if (f.value->contains(k) && duplicate_.empty()) {
      duplicate_ = k;
      duplicate_in_ = path(frames_.size() - 1);
    }
    f.key = std::move(k);
    return true;
  }
  // Throws nlohmann's exception, whose message (with the position) the caller quotes.
  template <class Exception>
  bool parse_error(std::size_t /*position*/, const std::string& /*token*/, const Exception& e) {
    throw e;
  }

  // The first key seen twice in one object ("" if none) and the path of that object.
  const std::string& duplicate() const noexcept { return duplicate_; }
  const std::string& duplicate_in() const noexcept { return duplicate_in_; }

 private:
  // An open array or object: where it is, and for an object the key of the member being read.
  // Pointers stay valid: a container's elements are not added to while a child is open.
  struct Frame {
    json* value;
    std::string key;
  };

  template <class V>
  bool add(V&& v) {
    place(std::forward<V>(v));
    return true;
  }
  json* place(json v) {
    if (frames_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Frame& parent = frames_.back();
    if (parent.value->is_array()) {
      parent.value->push_back(std::move(v));
      return &parent.value->back();
    }
    json& member = (*parent.value)[parent.key];
    member = std::move(v);
    return &member;
  }
  bool open(json::value_t type) {
    frames_.push_back({place(json(type)), {}});
    return true;
  }
  bool close() {
    frames_.pop_back();
    return true;
  }
  // The path of frames_[depth] for messages: keys joined by '.', "[]" for an array element. Built
  // only for an error, so that a long key is not copied into every container under it.
  std::string path(std::size_t depth) const {
    std::string p;
    for (std::size_t i = 0; i < depth; ++i) {
      if (frames_[i].value->is_array()) {
        p += "[]";
      } else {
        if (!p.empty()) p += '.';
        p += frames_[i].key;
      }
    }
    return p;
  }

  json& root_;
  std::vector<Frame> frames_;  // one per open array or object; depth bounded by the prescan
  std::string duplicate_, duplicate_in_;
};

}  // namespace detail

// Parses the whole of `text` (what = "header", "config", ...; source = file path) into a JSON
// value of any type, with the checks listed at the top of this file, in time linear in the text.
// Trailing content after the value is a parse error (nlohmann reports its position). Its body
// (nlohmann's SAX parser: ~3 s of compile time in each unit at -O2) is compiled once in calm's
// own build (core/compiled.hpp, src/io/json.cpp defines CALM_COMPILE_IO_JSON).
CALM_COMPILED_INLINE nlohmann::json parse_json(std::string_view text, std::string_view what,
                                               std::string_view source);

#if !defined(CALM_COMPILED) || defined(CALM_COMPILE_IO_JSON)
CALM_COMPILED_INLINE nlohmann::json parse_json(std::string_view text, std::string_view what,
                                               std::string_view source) {
  check_json_text(text, std::string(what) + " of '" + std::string(source) + "'");
  nlohmann::json j;
  detail::StrictJsonBuilder builder(j);
  try {
    nlohmann::json::sax_parse(text.begin(), text.end(), &builder);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string(what) + " of '" + std::string(source) +
                "' is not valid JSON: " + e.what());
  }
  if (!builder.duplicate().empty()) {
    throw Error(std::string(what) + " of '" + std::string(source) + "' has the key '" +
                builder.duplicate() + "' twice" +
                (builder.duplicate_in().empty() ? std::string()
                                                : " (in \"" + builder.duplicate_in() + "\")"));
  }
  return j;
}
#endif

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
