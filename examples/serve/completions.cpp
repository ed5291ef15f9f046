// calm-serve: POST /v1/completions. The handler checks the request, tokenizes the prompt, queues a
// Job and then reads the job's tokens as the scheduler decodes them: into one JSON response, or
// as server-sent events (one chunk per piece of text, then "data: [DONE]"). A client that goes
// away mid-stream fails the next write; the job is then cancelled and its row freed.
#include "server.hpp"
#include "stop_strings.hpp"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <random>

namespace calm::serve {
namespace {

using namespace std::chrono_literals;

// One completion as its HTTP thread sees it: the job's tokens turned into text, cut at a stop
// string.
struct Completion {
  Completion(const ServerState& s, std::shared_ptr<Job> j, Decision d, std::vector<std::string> stops)
      : state(s), in_flight(s.in_flight), job(std::move(j)), decision(std::move(d)), text(*s.tokenizer), stop(std::move(stops)) {}

  // Waits up to `wait` for the next tokens; returns the text they add (maybe empty). Sets
  // `finish` once the completion has ended.
  std::string next(std::chrono::milliseconds wait) {
    Job::Update u = job->take(wait);
    std::string out;
    for (const TokenStats& t : u.tokens) {
      if (stop.stopped()) break;
      if (std::find(state.end_tokens.begin(), state.end_tokens.end(), t.token) != state.end_tokens.end())
        continue;  // end of text: not part of the completion
      tokens.push_back(t);
      out += stop.feed(text.push(t.token));
    }
    if (stop.stopped()) {  // the rest is not wanted: free the row now
      finish = Finish::stop;
      job->cancelled = true;
      state.scheduler->wake();
      return out;
    }
    if (u.finish != Finish::none) {
      out += stop.feed(text.flush());
      if (!stop.stopped()) out += stop.finish();
      finish = stop.stopped() ? Finish::stop : u.finish;
      error = u.error;
    }
    return out;
  }
  bool failed() const { return finish == Finish::error || finish == Finish::cancelled; }

  nlohmann::json calm_json() const {
    nlohmann::json out = decision.json(state.policy);
    std::vector<std::size_t> exits;
    std::vector<int> ids;
    double sum = 0;
    for (const TokenStats& t : tokens) exits.push_back(t.exit_layer), ids.push_back(t.token), sum += t.exit_layer;
    out["layers"] = state.num_layers;
    out["mean_exit_layer"] = tokens.empty() ? 0.0 : sum / static_cast<double>(tokens.size());
    out["exit_layers"] = exits;
    out["tokens"] = ids;
    return out;
  }
  nlohmann::json usage() const {
    return {{"prompt_tokens", job->prompt.size()}, {"completion_tokens", tokens.size()},
            {"total_tokens", job->prompt.size() + tokens.size()}};
  }
  nlohmann::json chunk(const std::string& delta, bool last) const {
    nlohmann::json choice = {{"text", delta}, {"index", 0}, {"logprobs", nullptr},
                             {"finish_reason", nullptr}};
    if (last) choice["finish_reason"] = finish == Finish::stop ? "stop" : "length";
    nlohmann::json out = {{"id", id}, {"object", "text_completion"}, {"created", created},
                          {"model", state.model_id}, {"choices", nlohmann::json::array({choice})}};
    if (last) out["calm"] = calm_json();
    return out;
  }
  ApiError failure() const {
    if (finish == Finish::cancelled)
      return ApiError(503, "the completion was cancelled: " + (error.empty() ? std::string("shutting down") : error),
                      "server_error", "", "cancelled");
    return ApiError(400, "the decoder refused the request: " + error, "invalid_request_error", "prompt",
                    "decoder_error");
  }

  const ServerState& state;
  InFlight in_flight;  // until the response is written (the stream's lambdas own this object)
  std::shared_ptr<Job> job;
  Decision decision;
  StreamDecoder text;
  StopScanner stop;
  std::vector<TokenStats> tokens;  // generated, end-of-text tokens left out
  Finish finish = Finish::none;
  std::string error;
  std::string id;
  std::time_t created = std::time(nullptr);
  bool done_sent = false;
  std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
};

std::string completion_id() {
  static std::atomic<std::uint64_t> counter{0};
  static const std::uint64_t salt = std::random_device{}();
  char text[48];
  std::snprintf(text, sizeof text, "cmpl-%08llx%06llx", static_cast<unsigned long long>(salt & 0xffffffff),
                static_cast<unsigned long long>(++counter));
  return text;
}

std::string dump(const nlohmann::json& j) {  // tokens may decode to invalid UTF-8: replaced
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// The SSE stream: called by httplib until it returns false (abort) or the sink is done.
bool stream_events(Completion& c, bool include_usage, httplib::DataSink& sink) {
  const auto send = [&](const std::string& data) {
    c.last_write = std::chrono::steady_clock::now();
    const std::string event = "data: " + data + "\n\n";
    return sink.write(event.data(), event.size());
  };
  if (c.done_sent) return false;
  const std::string delta = c.next(200ms);
  if (!sink.is_writable()) return false;
  if (!delta.empty() && !c.failed() && !send(dump(c.chunk(delta, false)))) return false;
  if (c.finish == Finish::none) {
    // A comment line now and then: a client that went away while nothing was decoded for it
    // (queued) is found by the failed write.
    if (std::chrono::steady_clock::now() - c.last_write > 1s) {
      c.last_write = std::chrono::steady_clock::now();
      return sink.write(": waiting\n\n", 11);
    }
    return true;
  }
  c.done_sent = true;
  if (c.failed()) {
    send(dump(c.failure().body()));
  } else {
    if (!send(dump(c.chunk("", true)))) return false;
    if (include_usage) {
      nlohmann::json u = c.chunk("", false);
      u["choices"] = nlohmann::json::array();
      u["usage"] = c.usage();
      if (!send(dump(u))) return false;
    }
    if (!send("[DONE]")) return false;
  }
  sink.done();
  return true;
}

}  // namespace

void handle_completion(const httplib::Request& req, httplib::Response& res, ServerState& state) {
  const CompletionRequest r = parse_completion_request(req.body, state.request_limits);
  Decision decision = decide(state.policy, r);
  std::vector<int> prompt = state.tokenizer->encode(r.prompt, /*add_bos=*/true);
  if (prompt.size() > state.max_prompt_tokens)
    throw invalid_field("prompt", "is " + std::to_string(prompt.size()) + " tokens, over this "
                        "server's limit of " + std::to_string(state.max_prompt_tokens) +
                        " (--max-prompt-tokens)", "max_prompt_tokens");
  if (prompt.size() + decision.max_tokens > state.max_context)
    throw invalid_field(r.max_tokens ? "max_tokens" : "prompt",
                        "the prompt's " + std::to_string(prompt.size()) + " tokens and max_tokens " +
                        std::to_string(decision.max_tokens) + " exceed the context length " +
                        std::to_string(state.max_context), "context_length_exceeded");

  auto job = std::make_shared<Job>();
  job->prompt = std::move(prompt);
  job->max_new_tokens = decision.max_tokens;
  job->sampling = decision.sampling;
  job->decoder = state.policy.spec.options;
  job->decoder.stop_tokens = state.end_tokens;
  job->measure_name = decision.measure;
  job->full_model = decision.full_model;
  job->lambda = decision.lambda;
  const bool full_model = decision.full_model, certified = decision.certified;
  // In flight from before it is queued: shutdown waits for it from then on.
  auto c = std::make_shared<Completion>(state, job, std::move(decision), r.stop);
  c->id = completion_id();
  switch (state.scheduler->submit(job)) {
    case Scheduler::Admission::queue_full:
      throw ApiError(429, "too many requests: every sequence of the batch is busy and the queue "
                     "is full (--max-sequences, --max-queue); retry later", "rate_limit_error", "",
                     "max_queue");
    case Scheduler::Admission::shutting_down:
      throw ApiError(503, "the server is shutting down", "server_error", "", "shutting_down");
    case Scheduler::Admission::queued:
      break;
  }
  Metrics& m = *state.metrics;
  m.requests.fetch_add(1, std::memory_order_relaxed);
  m.prompt_tokens.fetch_add(job->prompt.size(), std::memory_order_relaxed);
  if (full_model) m.full_model_requests.fetch_add(1, std::memory_order_relaxed);
  else if (certified) m.certified_requests.fetch_add(1, std::memory_order_relaxed);

  if (!r.stream) {
    std::string text;
    while (c->finish == Finish::none) text += c->next(1s);
    if (c->failed()) throw c->failure();
    nlohmann::json out = c->chunk(text, true);
    out["usage"] = c->usage();
    res.set_content(dump(out), "application/json");
    return;
  }
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [c, usage = r.include_usage](std::size_t, httplib::DataSink& sink) {
        return stream_events(*c, usage, sink);
      },
      [c](bool) {  // the stream is over, sent or aborted: a job still running is cancelled
        if (c->finish == Finish::none) {
          c->job->cancelled = true;
          c->state.scheduler->wake();
        }
      });
}

}  // namespace calm::serve
