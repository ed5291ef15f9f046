// calm-serve: what the HTTP handlers share (read-only after start-up, but for the scheduler's
// queue and the counters, which synchronise themselves), and the two halves of the HTTP side:
// install_routes (routes.cpp: authentication, errors, /v1/models, /health, /metrics) and
// handle_completion (completions.cpp: POST /v1/completions).
#pragma once

#include "completion_request.hpp"
#include "job.hpp"
#include "scheduler.hpp"
#include "serve_policy.hpp"

#include <calm/io/tokenizer.hpp>

#include <atomic>
#include <ctime>
#include <string>
#include <vector>

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace calm::serve {

struct ServerState {
  std::string model_id;              // GET /v1/models and each response's "model"
  std::string api_key;               // empty: no authentication
  const Tokenizer* tokenizer = nullptr;
  std::vector<int> end_tokens;       // the tokenizer's and config.json's end-of-text ids
  std::size_t max_context = 0;       // each sequence's KV cache length
  std::size_t num_layers = 0;
  std::size_t max_prompt_tokens = 0;  // --max-prompt-tokens
  std::size_t max_body_bytes = 0;     // --max-body-bytes
  RequestLimits request_limits;
  ServerPolicy policy;
  Scheduler* scheduler = nullptr;
  Metrics* metrics = nullptr;
  std::time_t created = 0;           // when the server started ("created" of the model)
  // Completions whose response is not yet written: shutdown stops the HTTP server (which ends
  // streams at once) only when none is left.
  mutable std::atomic<std::size_t> in_flight{0};
};

// Counts a completion in flight for as long as it lives.
struct InFlight {
  explicit InFlight(std::atomic<std::size_t>& n) : count(n) { ++count; }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;
  ~InFlight() { --count; }
  std::atomic<std::size_t>& count;
};

// Writes `e` as the response (status and the OpenAI error object) and counts the refusal.
void send_error(httplib::Response& res, const ApiError& e, Metrics& metrics);
void install_routes(httplib::Server& server, ServerState& state);
void handle_completion(const httplib::Request& req, httplib::Response& res, ServerState& state);

}  // namespace calm::serve
