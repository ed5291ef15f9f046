// calm-serve's request checks (completion_request.hpp) and stop strings (stop_strings.hpp):
// every refusal names its field and code; stop strings cut the text across token boundaries and
// never let the start of a stop string out early.
#include "completion_request.hpp"
#include "stop_strings.hpp"

#include <doctest/doctest.h>

#include <string>

using calm::serve::ApiError;
using calm::serve::CompletionRequest;
using calm::serve::Mode;

namespace {

const calm::serve::RequestLimits kLimits{.max_tokens_limit = 100, .model_id = "m"};

CompletionRequest parse(const std::string& body) {
  return calm::serve::parse_completion_request(body, kLimits);
}

// The refusal of `body`: its status, param and code.
struct Refusal {
  int status = 0;
  std::string param, code, message;
};
Refusal refusal(const std::string& body) {
  try {
    parse(body);
  } catch (const ApiError& e) {
    return {e.status, e.param, e.code, e.what()};
  }
  FAIL("accepted: " << body);
  return {};
}

}  // namespace

TEST_CASE("a completion request: defaults left unset, fields read") {
  const CompletionRequest r = parse(R"({"model": "m", "prompt": "Hello"})");
  CHECK(r.prompt == "Hello");
  CHECK_FALSE(r.max_tokens);
  CHECK_FALSE(r.temperature);
  CHECK_FALSE(r.stream);
  CHECK(r.mode == Mode::automatic);
  const CompletionRequest s = parse(R"({"model": "m", "prompt": ["Hi"], "max_tokens": 100,
      "temperature": 0.5, "top_p": 0.9, "seed": -3, "stop": "\n", "stream": true,
      "stream_options": {"include_usage": true}, "n": 1, "user": "u", "calm_mode": "early-exit",
      "calm_measure": "softmax", "calm_threshold": 0.8})");
  CHECK(s.prompt == "Hi");
  CHECK(*s.max_tokens == 100);
  CHECK(*s.temperature == 0.5);
  CHECK(*s.top_p == doctest::Approx(0.9));
  CHECK(*s.seed == static_cast<std::uint64_t>(-3));
  CHECK(s.stop == std::vector<std::string>{"\n"});
  CHECK(s.stream);
  CHECK(s.include_usage);
  CHECK(s.mode == Mode::early_exit);
  CHECK(*s.measure == "softmax");
  CHECK(*s.threshold == doctest::Approx(0.8));
}

TEST_CASE("malformed JSON and wrong types are refused naming the field") {
  CHECK(refusal(R"({"model": "m", "prompt": )").code == "invalid_json");
  CHECK(refusal(R"([1])").code == "invalid_type");
  const struct {
    const char* body;
    const char* param;
    const char* code;
  } cases[] = {
      {R"({"prompt": "x"})", "model", "missing"},
      {R"({"model": "m"})", "prompt", "missing"},
      {R"({"model": 3, "prompt": "x"})", "model", "invalid_type"},
      {R"({"model": "m", "prompt": 3})", "prompt", "invalid_type"},
      {R"({"model": "m", "prompt": ["a", "b"]})", "prompt", "invalid_value"},
      {R"({"model": "m", "prompt": [1, 2]})", "prompt", "invalid_value"},
      {R"({"model": "m", "prompt": "x", "max_tokens": "5"})", "max_tokens", "invalid_type"},
      {R"({"model": "m", "prompt": "x", "max_tokens": 2.5})", "max_tokens", "invalid_type"},
      {R"({"model": "m", "prompt": "x", "max_tokens": 0})", "max_tokens", "invalid_value"},
      {R"({"model": "m", "prompt": "x", "max_tokens": 101})", "max_tokens", "max_tokens_limit"},
      {R"({"model": "m", "prompt": "x", "temperature": "hot"})", "temperature", "invalid_type"},
      {R"({"model": "m", "prompt": "x", "temperature": 2.5})", "temperature", "invalid_value"},
      {R"({"model": "m", "prompt": "x", "top_p": 0})", "top_p", "invalid_value"},
      {R"({"model": "m", "prompt": "x", "seed": 1.5})", "seed", "invalid_type"},
      {R"({"model": "m", "prompt": "x", "stop": 3})", "stop", "invalid_type"},
      {R"({"model": "m", "prompt": "x", "stop": [""]})", "stop", "invalid_value"},
      {R"({"model": "m", "prompt": "x", "stop": ["a","b","c","d","e"]})", "stop", "invalid_value"},
      {R"({"model": "m", "prompt": "x", "stream": "yes"})", "stream", "invalid_type"},
      {R"({"model": "m", "prompt": "x", "stream_options": {"include_usage": true}})", "stream_options", "invalid_value"},
      {R"({"model": "m", "prompt": "x", "stream": true, "stream_options": {"other": 1}})", "stream_options.other", "unknown_field"},
      {R"({"model": "m", "prompt": "x", "n": 2})", "n", "unsupported"},
      {R"({"model": "m", "prompt": "x", "echo": true})", "echo", "unsupported"},
      {R"({"model": "m", "prompt": "x", "presence_penalty": 0.5})", "presence_penalty", "unsupported"},
      {R"({"model": "m", "prompt": "x", "calm_speculative": true})", "calm_speculative", "unsupported"},
      {R"({"model": "m", "prompt": "x", "calm_mode": "fast"})", "calm_mode", "invalid_value"},
      {R"({"model": "m", "prompt": "x", "calm_threshold": 1.5})", "calm_threshold", "invalid_value"},
      {R"({"model": "m", "prompt": "x", "calm_mode": "full", "calm_threshold": 0.9})", "calm_threshold", "invalid_value"},
      {R"({"model": "m", "prompt": "x", "max_token": 5})", "max_token", "unknown_field"},
  };
  for (const auto& c : cases) {
    CAPTURE(std::string(c.body));
    const Refusal r = refusal(c.body);
    CHECK(r.status == 400);
    CHECK(r.param == c.param);
    CHECK(r.code == c.code);
    CHECK(r.message.find(std::string("'") + c.param + "'") != std::string::npos);  // named
  }
  const Refusal other_model = refusal(R"({"model": "gpt-4", "prompt": "x"})");
  CHECK(other_model.status == 404);
  CHECK(other_model.code == "model_not_found");
}

TEST_CASE("the error body has OpenAI's shape") {
  const ApiError e(429, "busy", "rate_limit_error", "", "max_queue");
  const nlohmann::json body = e.body();
  CHECK(body["error"]["message"] == "busy");
  CHECK(body["error"]["type"] == "rate_limit_error");
  CHECK(body["error"]["param"].is_null());
  CHECK(body["error"]["code"] == "max_queue");
}

TEST_CASE("stop strings: the text ends before the first, whichever token completes it") {
  calm::serve::StopScanner s({"END", "\n\n"});
  std::string out = s.feed("Hello E");  // "E" may begin END: held back
  CHECK(out == "Hello ");
  out += s.feed("N");
  CHECK(out == "Hello ");
  out += s.feed("ough\n");  // "ENough" is not END; "\n" may begin "\n\n"
  CHECK(out == "Hello ENough");
  out += s.feed("\nmore");
  CHECK(s.stopped());
  CHECK(out == "Hello ENough");
  CHECK(s.feed("after").empty());

  calm::serve::StopScanner t({"ab"});
  std::string text = t.feed("xa");
  text += t.feed("a");  // "aa": the first a cannot start "ab" any more, the second can
  CHECK(text == "xa");
  text += t.feed("c");
  text += t.finish();
  CHECK_FALSE(t.stopped());
  CHECK(text == "xaac");  // without a stop string everything comes out

  calm::serve::StopScanner u({"b", "abc"});  // the earliest match wins
  CHECK(u.feed("zabc") == "z");  // "abc" begins before "b"
  CHECK(u.stopped());
}
