// calm-serve's routes: the bearer-token check, OpenAI-style JSON for every error (httplib's own
// too: 404, 413 over --max-body-bytes, 400 for a malformed request line), and the small
// endpoints: GET /v1/models, GET /health, GET /metrics.
#include "server.hpp"

#include <httplib.h>

#include <exception>
#include <string>

namespace calm::serve {
namespace {

// Compares every byte, so that the time taken does not tell how much of a guessed key is right.
bool same_key(const std::string& given, const std::string& key) {
  unsigned char diff = given.size() == key.size() ? 0 : 1;
  for (std::size_t i = 0; i < given.size(); ++i)
    diff |= static_cast<unsigned char>(given[i] ^ key[i % (key.empty() ? 1 : key.size())]);
  return diff == 0 && !key.empty();
}

void send_json(httplib::Response& res, const nlohmann::json& body) {
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                  "application/json");
}

// Runs a handler; an ApiError (or any other exception: a 500) becomes the JSON error response.
template <class F>
void guarded(httplib::Response& res, Metrics& metrics, F&& f) {
  try {
    f();
  } catch (const ApiError& e) {
    send_error(res, e, metrics);
  } catch (const std::exception& e) {
    send_error(res, ApiError(500, std::string("internal error: ") + e.what(), "server_error", "",
                             "internal_error"), metrics);
  }
}

}  // namespace

void send_error(httplib::Response& res, const ApiError& e, Metrics& metrics) {
  metrics.rejected.fetch_add(1, std::memory_order_relaxed);
  res.status = e.status;
  if (e.status == 401) res.set_header("WWW-Authenticate", "Bearer");
  send_json(res, e.body());
}

void install_routes(httplib::Server& server, ServerState& state) {
  Metrics& metrics = *state.metrics;
  server.set_pre_routing_handler([&state, &metrics](const httplib::Request& req, httplib::Response& res) {
    const bool open = req.path == "/health";  // for load balancers and the tests' start-up wait
    if (state.api_key.empty() || open) return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (auth.rfind(prefix, 0) == 0 && same_key(auth.substr(prefix.size()), state.api_key))
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, auth.empty() ? "no API key: send the header 'Authorization: "
                             "Bearer <key>' (calm-serve --api-key)" : "the API key is not valid",
                             "authentication_error", "", "invalid_api_key"), metrics);
    return httplib::Server::HandlerResponse::Handled;
  });
  // httplib's own refusals come with an empty body: give them the same JSON error shape.
  server.set_error_handler(httplib::Server::HandlerWithResponse(
      [&state, &metrics](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = "HTTP " + std::to_string(res.status);
    std::string code = "http_error";
    if (res.status == 404) message = "no route " + req.method + " " + req.path, code = "not_found";
    if (res.status == 413)
      message = "the request body is over this server's limit of " +
                std::to_string(state.max_body_bytes) + " bytes (--max-body-bytes)",
      code = "max_body_bytes";
    if (res.status == 400) message = "malformed HTTP request", code = "bad_request";
    const int status = res.status;
    send_error(res, ApiError(status, message, status >= 500 ? "server_error" : "invalid_request_error",
                             "", code), metrics);
    return httplib::Server::HandlerResponse::Handled;
  }));
  server.set_exception_handler([&metrics](const httplib::Request&, httplib::Response& res,
                                          std::exception_ptr) {
    send_error(res, ApiError(500, "internal error", "server_error", "", "internal_error"), metrics);
  });

  server.Post("/v1/completions", [&state, &metrics](const httplib::Request& req, httplib::Response& res) {
    guarded(res, metrics, [&] {
      // Any Content-Type: curl -d sends form-encoded, and the body is checked as JSON.
      handle_completion(req, res, state);
    });
  });
  const auto model_json = [&state] {
    return nlohmann::json{{"id", state.model_id}, {"object", "model"}, {"created", state.created},
                          {"owned_by", "calm"},
                          {"calm", {{"layers", state.num_layers}, {"context_length", state.max_context},
                                    {"measure", state.policy.spec.measure},
                                    {"certificate", state.policy.certificate_file.empty()
                                                        ? nlohmann::json(nullptr)
                                                        : nlohmann::json(state.policy.certificate_file.string())}}}};
  };
  server.Get("/v1/models", [model_json](const httplib::Request&, httplib::Response& res) {
    send_json(res, {{"object", "list"}, {"data", nlohmann::json::array({model_json()})}});
  });
  server.Get("/v1/models/(.+)", [&state, &metrics, model_json](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] != state.model_id)
      return send_error(res, ApiError(404, "the model '" + std::string(req.matches[1]) + "' is not "
                                      "served here", "invalid_request_error", "model", "model_not_found"),
                        metrics);
    send_json(res, model_json());
  });
  server.Get("/health", [&state](const httplib::Request&, httplib::Response& res) {
    const bool stopping = state.scheduler->stopping();
    res.status = stopping ? 503 : 200;
    send_json(res, {{"status", stopping ? "shutting down" : "ok"}});
  });
  server.Get("/metrics", [&metrics](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.prometheus(), "text/plain; version=0.0.4");
  });
}

}  // namespace calm::serve
