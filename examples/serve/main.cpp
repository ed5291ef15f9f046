// calm-serve: an OpenAI-compatible HTTP server (POST /v1/completions, GET /v1/models, /health,
// /metrics) that decodes every request in one continuous batch, each row exiting at its own layer.
//   calm-serve --model DIR [--host 127.0.0.1] [--port 8080] [--api-key KEY] [--threads N]
//              [--max-sequences 16] [--max-queue 64] [--max-tokens-limit N] [...]
// The certificate next to the model (or --calibration) fixes the measure and schedule; each
// request is decoded under it when covered, else by the full model (README: "Serving").
#include "../cli_parse.hpp"
#include "../policy_flags.hpp"
#include "server.hpp"

#include <calm/calibrate/calibration_json.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <httplib.h>

#include <csignal>
#include <cstdio>
#include <thread>

namespace {

namespace cal = calm::calibrate;
namespace sv = calm::serve;

struct Flags {
  std::filesystem::path model;
  std::string model_name;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;
  std::size_t threads = 1, context = 0, http_threads = 0;
  calm::WeightFormat weights = calm::WeightFormat::file;
  std::size_t max_body_bytes = 1 << 20, max_prompt_tokens = 0, max_tokens_limit = 1024;
  std::size_t default_max_tokens = 16, max_sequences = 16, max_queue = 64;
  double read_timeout = 10, write_timeout = 10, keep_alive_timeout = 5, grace = 10;
  std::size_t keep_alive_max = 100;
  calm::cli::PolicyFlags policy;
  std::filesystem::path calibration;
  bool no_calibration = false, policy_given = false;
};

// A threshold no score reaches (every measure scores at most 1): every token runs all layers.
template <class S>
S full_model_schedule(S s) {
  s.lambda = 2.0f;
  if constexpr (std::is_same_v<S, calm::DecayingThreshold>)
    s.form = calm::DecayingThreshold::Form::scaled;  // the paper form clips the threshold to 1
  return s;
}

// Stops the server on SIGTERM or SIGINT (blocked in every thread; taken here by sigtimedwait):
// new requests get 503, in-flight ones finish until the grace period ends, then are cancelled
// (at once on a second signal); once every response is written the HTTP server stops (httplib
// ends the streams it is writing when it stops, so not before) and main returns 0.
void watch_signals(httplib::Server& server, sv::Scheduler& scheduler, const sv::ServerState& state,
                   double grace, const std::atomic<bool>& done) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  const timespec tick{0, 100'000'000};
  bool stopping = false, stopped = false;
  while (!done) {
    const int sig = sigtimedwait(&set, nullptr, &tick);
    if (stopping && !stopped && state.in_flight == 0) {
      server.stop();
      stopped = true;
    }
    if (sig < 0) continue;
    const auto now = sv::Scheduler::Clock::now();
    fmt::print(stderr, "calm-serve: {}: {}\n", sig == SIGTERM ? "SIGTERM" : "SIGINT",
               stopping ? "cancelling the requests in flight"
                        : fmt::format("refusing new requests; the {} in flight have {} s to finish",
                                      state.in_flight.load(), grace));
    scheduler.shut_down(stopping ? now : now + std::chrono::duration_cast<sv::Scheduler::Clock::duration>(
                                              std::chrono::duration<double>(grace)));
    stopping = true;
  }
}

template <class M, class S>
int serve(Flags& f, const std::shared_ptr<const calm::LlamaModel>& model, sv::ServerState& state,
          const calm::PolicyContext& ctx, const S& base_schedule) {
  const calm::PolicySpec& spec = state.policy.spec;
  std::map<std::string, M> measures;  // one instance per name of the measure type
  for (std::string_view name : calm::policy_traits<M>::names()) {
    state.policy.measure_names.emplace_back(name);
    measures.emplace(std::string(name), calm::policy_traits<M>::make(
        name, name == spec.measure ? spec.measure_params : nlohmann::json::object(), ctx));
  }
  calm::BatchDecoder<M, S> batch(model, {.max_rows = f.max_sequences, .max_context = f.context,
                                         .pool = calm::cli::make_pool(f.threads)});
  sv::Metrics metrics;
  metrics.capacity = batch.capacity();
  metrics.num_layers = model->num_layers();
  sv::Scheduler scheduler(f.max_queue, metrics);
  state.scheduler = &scheduler;
  state.metrics = &metrics;
  std::thread decoding([&] {
    scheduler.run(batch, [&](const sv::Job& job) {
      S schedule = job.full_model ? full_model_schedule(base_schedule)
                                  : calm::policy_traits<S>::make(spec.schedule, spec.schedule_params, job.lambda);
      return std::pair<M, S>(measures.at(job.measure_name), std::move(schedule));
    });
  });

  httplib::Server server;
  // Each request holds a thread while it waits for its tokens: enough for every row and queued
  // request, plus a few for refusals, /health and /metrics.
  const std::size_t http_threads = f.http_threads ? f.http_threads : f.max_sequences + f.max_queue + 8;
  server.new_task_queue = [http_threads] { return new httplib::ThreadPool(http_threads); };
  const auto seconds = [](double s) { return std::chrono::duration<double>(s); };
  server.set_read_timeout(seconds(f.read_timeout));
  server.set_write_timeout(seconds(f.write_timeout));
  server.set_keep_alive_timeout(static_cast<time_t>(f.keep_alive_timeout));
  server.set_keep_alive_max_count(f.keep_alive_max);
  server.set_payload_max_length(f.max_body_bytes);
  server.set_tcp_nodelay(true);  // one small write per token: no waiting for the client's ACK
  sv::install_routes(server, state);

  const int port = f.port == 0 ? server.bind_to_any_port(f.host) : (server.bind_to_port(f.host, f.port) ? f.port : -1);
  std::atomic<bool> done{false};
  std::thread signals([&] { watch_signals(server, scheduler, state, f.grace, done); });
  int rc = 0;
  if (port < 0) {
    fmt::print(stderr, "calm-serve: error: cannot listen on {}:{} (in use, or not an address of "
               "this machine)\n", f.host, f.port);
    rc = 1;
  } else {
    // The tests and scripts read this line for the port (with --port 0: a free one).
    fmt::print("calm-serve: listening on http://{}:{} (model '{}', {} sequences at once)\n",
               f.host, port, state.model_id, batch.capacity());
    std::fflush(stdout);
    if (!server.listen_after_bind()) rc = 1;
  }
  scheduler.shut_down(sv::Scheduler::Clock::now());  // listen returned: nothing is left to answer
  decoding.join();
  done = true;
  signals.join();
  fmt::print(stderr, "calm-serve: stopped ({} completions, {} tokens)\n", metrics.requests.load(),
             metrics.generated_tokens.load());
  return rc;
}

int run(Flags& f) {
  const calm::Tokenizer tokenizer = calm::Tokenizer::load_folder(f.model);
  const auto model = calm::LlamaModel::load(f.model, {.max_context = f.context, .weights = f.weights});
  tokenizer.check_fits(model->config(), (f.model / "config.json").string());
  sv::ServerState state;
  state.tokenizer = &tokenizer;
  state.end_tokens = tokenizer.end_tokens(model->config());
  state.model_id = f.model_name.empty() ? std::filesystem::absolute(f.model).lexically_normal().filename().string()
                                        : f.model_name;
  if (state.model_id.empty()) state.model_id = std::filesystem::absolute(f.model).parent_path().filename().string();
  state.api_key = f.api_key;
  state.max_context = f.context ? std::min(f.context, model->max_context()) : model->max_context();
  state.num_layers = model->num_layers();
  state.max_prompt_tokens = f.max_prompt_tokens ? f.max_prompt_tokens : state.max_context - 1;
  state.max_body_bytes = f.max_body_bytes;
  state.request_limits = {.max_tokens_limit = f.max_tokens_limit, .model_id = state.model_id};
  state.created = std::time(nullptr);

  sv::ServerPolicy& p = state.policy;
  p.default_max_tokens = std::min(f.default_max_tokens, f.max_tokens_limit);
  if (f.calibration.empty() && !f.no_calibration && std::filesystem::exists(f.model / cal::kCalibrationFileName))
    f.calibration = f.model / cal::kCalibrationFileName;
  if (!f.calibration.empty()) {
    const std::string file = f.calibration.string();
    p.certificate = cal::read_calibration_json(f.calibration);
    p.certificate_file = f.calibration;
    cal::check_model_fingerprint(*p.certificate, f.model, file);
    p.certified = calm::calibrated_policy(*p.certificate, f.policy.spec(f.policy.threshold), file);
    if (p.certified && !f.policy_given) {
      f.policy.apply(*p.certified);
      f.policy.threshold = p.certified->lambda;
    }
  }
  if (!f.policy.thresholded())
    throw calm::Error("--measure " + f.policy.measure + ": calm-serve needs a measure that scores (" +
                      calm::cli::PolicyFlags::scoring_measures_text() + "); a request gets the "
                      "full model with \"calm_mode\": \"full\"");
  f.policy.check(model->num_layers());
  if (f.policy.measure == "classifier") f.policy.load_classifier(f.model, model->hidden_size());
  p.spec = f.policy.spec(f.policy.threshold);
  p.classifier_file = f.policy.classifier_file(f.model);
  fmt::print(stderr, "calm-serve: measure {}, {}; certificate: {}\n", f.policy.measure,
             f.policy.schedule_description(),
             p.certificate_file.empty() ? "none (requests get the full model unless they ask for "
                                          "\"calm_mode\": \"early-exit\")"
                                        : p.certificate_file.string());

  using Registry = calm::PolicyRegistry<
      calm::Measures<calm::SoftmaxResponse, calm::CandidateSoftmax, calm::HiddenSaturation, calm::ExitClassifier>,
      calm::Schedules<calm::ConstantThreshold, calm::DecayingThreshold>>;
  const calm::PolicyContext ctx = calm::cli::policy_context(f.model, model->hidden_size(), f.policy);
  return Registry::visit(p.spec, ctx, [&]<class M, class S>(M, S schedule) {
    return serve<M, S>(f, model, state, ctx, schedule);
  });
}

}  // namespace

int main(int argc, char** argv) {
  // Blocked before any thread starts, so that every thread inherits the mask and only
  // watch_signals takes them; a write to a closed connection fails instead of killing the server.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  const auto app_owner = calm::cli::make_app("calm-serve: an OpenAI-compatible completions server "
                                             "decoding every request in one batch, exiting early");
  CLI::App& app = *app_owner;
  Flags f;
  app.add_option("--model", f.model, "checkpoint directory")->required()->check(CLI::ExistingDirectory);
  app.add_option("--model-name", f.model_name, "the model's id in the API (default: the folder's name)");
  app.add_option("--host", f.host, "address to listen on (0.0.0.0: every interface)");
  app.add_option("--port", f.port, "port (0: a free one, printed)")->check(CLI::Range(0, 65535));
  app.add_option("--api-key", f.api_key, "require 'Authorization: Bearer KEY'")->envname("CALM_API_KEY");
  app.add_option("--threads", f.threads, "threads for the matrix products")->check(CLI::Range(1, 256));
  app.add_option("--context", f.context, "each sequence's KV cache length (0: the model's)");
  calm::cli::add_weights_flag(app, f.weights);
  app.add_option("--max-sequences", f.max_sequences, "sequences decoded at once")->check(CLI::Range(1, 1024));
  app.add_option("--max-queue", f.max_queue, "requests waiting for a sequence beyond those (then 429)")
      ->check(CLI::Range(0, 1 << 16));
  app.add_option("--max-body-bytes", f.max_body_bytes, "largest request body (413 over it)")->check(CLI::Range(64, 1 << 30));
  app.add_option("--max-prompt-tokens", f.max_prompt_tokens, "longest prompt (0: the context length - 1)");
  app.add_option("--max-tokens-limit", f.max_tokens_limit, "largest max_tokens a request may ask")->check(CLI::Range(1, 1 << 20));
  app.add_option("--default-max-tokens", f.default_max_tokens, "max_tokens of a request without "
                 "one, when no certificate gives it")->check(CLI::Range(1, 1 << 20));
  app.add_option("--http-threads", f.http_threads, "HTTP worker threads (0: max-sequences + max-queue + 8)");
  app.add_option("--read-timeout", f.read_timeout, "seconds a request may take to arrive")->check(CLI::Range(0.1, 3600.0));
  app.add_option("--write-timeout", f.write_timeout, "seconds a blocked write may wait")->check(CLI::Range(0.1, 3600.0));
  app.add_option("--keep-alive-timeout", f.keep_alive_timeout, "seconds an idle connection stays open")->check(CLI::Range(1.0, 3600.0));
  app.add_option("--keep-alive-max", f.keep_alive_max, "requests per connection")->check(CLI::Range(1, 1 << 20));
  app.add_option("--grace-period", f.grace, "seconds in-flight requests get on SIGTERM before they "
                 "are cancelled")->check(CLI::Range(0.0, 3600.0));
  calm::cli::add_policy_flags(app, f.policy);
  app.add_option("--calibration", f.calibration, "calm_calibration.json (default: the one next to "
                 "the model)")->check(CLI::ExistingFile);
  app.add_flag("--no-calibration", f.no_calibration, "load no certificate");
  CALM_CLI_PARSE(app, argc, argv);
  f.policy_given = calm::cli::any_policy_flag(app);
  try {
    return run(f);
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-serve: error: {}\n", e.what());
    return 1;
  }
}
