// calm-serve: the body of POST /v1/completions read into a CompletionRequest, every field
// checked for its type and range. What is wrong is an ApiError: the HTTP status and the OpenAI
// error object {"error": {"message", "type", "param", "code"}} naming the field or the limit.
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace calm::serve {

struct ApiError : std::runtime_error {
  ApiError(int status, std::string message, std::string type, std::string param, std::string code)
      : std::runtime_error(message), status(status), type(std::move(type)),
        param(std::move(param)), code(std::move(code)) {}
  int status;
  std::string type;   // "invalid_request_error", "authentication_error", ...
  std::string param;  // the request field, or "" when none is to blame
  std::string code;   // machine-readable: the limit or the problem, e.g. "max_tokens_limit"

  nlohmann::json body() const {
    const auto or_null = [](const std::string& s) {
      return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s);
    };
    return {{"error", {{"message", what()}, {"type", type}, {"param", or_null(param)},
                       {"code", or_null(code)}}}};
  }
};

// A 400 about one field of the request.
inline ApiError invalid_field(const std::string& param, const std::string& message,
                              const std::string& code = "invalid_value") {
  return ApiError(400, "'" + param + "': " + message, "invalid_request_error", param, code);
}

// How calm decodes a request (calm_mode): the certificate next to the model when it covers the
// request, else the full model (auto); the certificate or an error (certified); the full model
// (full); the measure at calm_threshold whether a certificate covers it or not (early-exit).
enum class Mode { automatic, certified, full, early_exit };

struct CompletionRequest {
  std::string prompt;
  std::optional<std::size_t> max_tokens;  // unset: the certificate's, else the server's default
  std::optional<double> temperature;      // unset: the certificate's, else 0 (greedy)
  std::optional<double> top_p;            // unset: the certificate's, else 1
  std::optional<std::uint64_t> seed;
  std::vector<std::string> stop;          // stop strings: the text ends before the first one
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  Mode mode = Mode::automatic;
  std::optional<std::string> measure;  // calm_measure
  std::optional<float> threshold;      // calm_threshold
};

struct RequestLimits {
  std::size_t max_tokens_limit = 1024;  // --max-tokens-limit
  std::string model_id;                 // what "model" must name (GET /v1/models lists it)
};

namespace detail {
inline const char* type_name(const nlohmann::json& v) {
  return v.is_number_integer() ? "integer" : v.type_name();
}
inline ApiError wrong_type(const std::string& field, const nlohmann::json& v, const char* want) {
  return invalid_field(field, std::string("expected ") + want + ", got " + type_name(v),
                       "invalid_type");
}
inline double number(const nlohmann::json& v, const std::string& field, double lo, double hi) {
  if (!v.is_number()) throw wrong_type(field, v, "a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    throw invalid_field(field, "expected a number in [" + nlohmann::json(lo).dump() + ", " +
                                   nlohmann::json(hi).dump() + "], got " + v.dump());
  return x;
}
// Fields OpenAI defines that calm-serve does not implement: refused unless given their default,
// so that a client never gets silently less than it asked for.
inline void check_unsupported(const nlohmann::json& body) {
  const auto refuse = [](const std::string& field, const std::string& why) {
    throw invalid_field(field, why, "unsupported");
  };
  if (body.contains("n") && body["n"] != 1) refuse("n", "calm-serve returns one choice: n must be 1");
  if (body.contains("best_of") && body["best_of"] != 1) refuse("best_of", "best_of must be 1");
  if (body.contains("echo") && body["echo"] != false) refuse("echo", "echo is not supported");
  if (body.contains("logprobs") && !body["logprobs"].is_null() && body["logprobs"] != 0)
    refuse("logprobs", "logprobs are not supported");
  if (body.contains("suffix") && !body["suffix"].is_null()) refuse("suffix", "suffix is not supported");
  if (body.contains("logit_bias") && !body["logit_bias"].is_null() && !body["logit_bias"].empty())
    refuse("logit_bias", "logit_bias is not supported");
  for (const char* penalty : {"presence_penalty", "frequency_penalty"})
    if (body.contains(penalty) && !body[penalty].is_null() && body[penalty] != 0)
      refuse(penalty, "penalties are not supported (give 0 or leave it out)");
  if (body.contains("calm_speculative") && body["calm_speculative"] != false)
    refuse("calm_speculative", "calm-serve decodes in batches, which have no speculative mode; "
           "run calm-generate --speculative for lossless speculative decoding");
}
}  // namespace detail

// Reads the JSON body of a completion request. Throws ApiError (400) naming the field.
inline CompletionRequest parse_completion_request(const std::string& text,
                                                  const RequestLimits& limits) {
  nlohmann::json body;
  try {
    body = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what(),
                   "invalid_request_error", "", "invalid_json");
  }
  if (!body.is_object())
    throw ApiError(400, std::string("the request body must be a JSON object, got ") +
                   detail::type_name(body), "invalid_request_error", "", "invalid_type");
  static const char* const known[] = {
      "model", "prompt", "max_tokens", "temperature", "top_p", "seed", "stop", "stream",
      "stream_options", "n", "best_of", "echo", "logprobs", "suffix", "logit_bias",
      "presence_penalty", "frequency_penalty", "user", "calm_mode", "calm_measure",
      "calm_threshold", "calm_speculative"};
  for (const auto& [key, value] : body.items()) {
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    if (!ok) throw invalid_field(key, "unknown field", "unknown_field");
  }
  detail::check_unsupported(body);
  CompletionRequest r;

  if (!body.contains("model")) throw invalid_field("model", "required (GET /v1/models lists it)", "missing");
  if (!body["model"].is_string()) throw detail::wrong_type("model", body["model"], "a string");
  if (body["model"] != limits.model_id)
    throw ApiError(404, "the model '" + body["model"].get<std::string>() + "' is not served here "
                   "(this server serves '" + limits.model_id + "')", "invalid_request_error",
                   "model", "model_not_found");

  if (!body.contains("prompt")) throw invalid_field("prompt", "required", "missing");
  const nlohmann::json& prompt = body["prompt"];
  if (prompt.is_string()) {
    r.prompt = prompt.get<std::string>();
  } else if (prompt.is_array() && prompt.size() == 1 && prompt[0].is_string()) {
    r.prompt = prompt[0].get<std::string>();
  } else if (prompt.is_array()) {
    throw invalid_field("prompt", "expected a string or an array of one string (one prompt per "
                        "request), got an array of " + std::to_string(prompt.size()) +
                        (prompt.empty() || prompt[0].is_string() ? "" : " non-strings"));
  } else {
    throw detail::wrong_type("prompt", prompt, "a string");
  }

  if (body.contains("max_tokens") && !body["max_tokens"].is_null()) {
    const nlohmann::json& v = body["max_tokens"];
    if (!v.is_number_integer()) throw detail::wrong_type("max_tokens", v, "an integer");
    if (v.get<std::int64_t>() < 1)
      throw invalid_field("max_tokens", "must be at least 1, got " + v.dump());
    if (v.get<std::uint64_t>() > limits.max_tokens_limit)
      throw invalid_field("max_tokens", v.dump() + " is over this server's limit of " +
                          std::to_string(limits.max_tokens_limit) + " (--max-tokens-limit)",
                          "max_tokens_limit");
    r.max_tokens = v.get<std::size_t>();
  }
  if (body.contains("temperature") && !body["temperature"].is_null())
    r.temperature = detail::number(body["temperature"], "temperature", 0.0, 2.0);
  if (body.contains("top_p") && !body["top_p"].is_null()) {
    r.top_p = detail::number(body["top_p"], "top_p", 0.0, 1.0);
    if (*r.top_p == 0.0) throw invalid_field("top_p", "must be in (0, 1], got 0");
  }
  if (body.contains("seed") && !body["seed"].is_null()) {
    const nlohmann::json& v = body["seed"];
    if (!v.is_number_integer()) throw detail::wrong_type("seed", v, "an integer");
    if (v.is_number_unsigned()) r.seed = v.get<std::uint64_t>();
    else r.seed = static_cast<std::uint64_t>(v.get<std::int64_t>());  // OpenAI allows negatives
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const nlohmann::json& v = body["stop"];
    const auto add = [&](const nlohmann::json& s) {
      if (!s.is_string()) throw detail::wrong_type("stop", s, "a string or an array of strings");
      if (s.get<std::string>().empty()) throw invalid_field("stop", "a stop string must not be empty");
      r.stop.push_back(s.get<std::string>());
    };
    if (v.is_array()) {
      if (v.size() > 4) throw invalid_field("stop", "at most 4 stop strings, got " + std::to_string(v.size()));
      for (const nlohmann::json& s : v) add(s);
    } else {
      add(v);
    }
  }
  if (body.contains("stream") && !body["stream"].is_null()) {
    if (!body["stream"].is_boolean()) throw detail::wrong_type("stream", body["stream"], "a boolean");
    r.stream = body["stream"].get<bool>();
  }
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const nlohmann::json& v = body["stream_options"];
    if (!v.is_object()) throw detail::wrong_type("stream_options", v, "an object");
    if (!r.stream) throw invalid_field("stream_options", "only with \"stream\": true");
    for (const auto& [key, value] : v.items()) {
      if (key != "include_usage") throw invalid_field("stream_options." + key, "unknown field", "unknown_field");
      if (!value.is_boolean()) throw detail::wrong_type("stream_options.include_usage", value, "a boolean");
      r.include_usage = value.get<bool>();
    }
  }
  if (body.contains("user") && !body["user"].is_string() && !body["user"].is_null())
    throw detail::wrong_type("user", body["user"], "a string");

  if (body.contains("calm_mode") && !body["calm_mode"].is_null()) {
    const nlohmann::json& v = body["calm_mode"];
    if (!v.is_string()) throw detail::wrong_type("calm_mode", v, "a string");
    const std::string m = v.get<std::string>();
    if (m == "auto") r.mode = Mode::automatic;
    else if (m == "certified") r.mode = Mode::certified;
    else if (m == "full") r.mode = Mode::full;
    else if (m == "early-exit") r.mode = Mode::early_exit;
    else throw invalid_field("calm_mode", "expected \"auto\", \"certified\", \"full\" or "
                             "\"early-exit\", got \"" + m + "\"");
  }
  if (body.contains("calm_measure") && !body["calm_measure"].is_null()) {
    if (!body["calm_measure"].is_string())
      throw detail::wrong_type("calm_measure", body["calm_measure"], "a string");
    r.measure = body["calm_measure"].get<std::string>();
  }
  if (body.contains("calm_threshold") && !body["calm_threshold"].is_null())
    r.threshold = static_cast<float>(detail::number(body["calm_threshold"], "calm_threshold", 0.0, 1.0));
  if (r.mode == Mode::full && (r.measure || r.threshold))
    throw invalid_field(r.measure ? "calm_measure" : "calm_threshold",
                        "has no effect with \"calm_mode\": \"full\" (the full model checks no "
                        "confidence)");
  return r;
}

}  // namespace calm::serve
