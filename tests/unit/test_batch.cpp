// calm::BatchDecoder: each row's tokens, exit layers, confidences and final cache equal the
// sequence decoded alone by calm::Decoder, bit for bit — greedy and sampled, with per-row
// thresholds, under random join and leave orders, on every fixture's weight format, q8_0 and
// q4_0, and the bundled model with its classifier; and the batch's bookkeeping and errors.
#include <calm/calm.hpp>
#include <calm/decoding/batch.hpp>
#include <calm/io/tokenizer.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "unit/bundled_prompts.hpp"
#include "unit/test_models.hpp"

namespace fs = std::filesystem;

namespace {

using calm::test::bundled_test_prompts;
using calm::test::same_cache;
using calm::test::kBundled;

template <class C, class S>
struct Job {
  calm::SequenceRequest request;
  C measure;
  S schedule;
  std::size_t cancel_after = 0;  // > 0: the caller leaves after this many tokens
};

bool same_stats(const calm::TokenStats& a, const calm::TokenStats& b) {
  const auto bits = [](float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
  };
  return a.token == b.token && a.step == b.step && a.exit_layer == b.exit_layer &&
         a.checks == b.checks && bits(a.confidence) == bits(b.confidence) &&
         bits(a.threshold) == bits(b.threshold);
}

// Decodes the jobs through one BatchDecoder of `capacity` rows, joining and leaving in an order
// drawn from `seed`, and checks each against the same job decoded alone. Returns the mean exit
// layer over the batch's tokens (so callers can check the exits were exercised).
template <class C, class S>
double check_against_alone(const std::shared_ptr<const calm::LlamaModel>& model,
                           const std::vector<Job<C, S>>& jobs, std::size_t capacity,
                           unsigned seed) {
  using Alone = calm::Decoder<calm::LlamaSession, C, S>;
  std::vector<std::unique_ptr<Alone>> alone;
  std::vector<std::vector<calm::TokenStats>> want;
  for (const auto& job : jobs) {
    alone.push_back(std::make_unique<Alone>(calm::LlamaSession(model), job.measure, job.schedule,
                                            job.request.decoder));
    calm::Sampler sampler(job.request.sampling);
    alone.back()->generate(job.request.prompt, job.request.max_new_tokens, sampler);
    want.push_back(alone.back()->report().tokens);
  }

  calm::BatchDecoder<C, S> batch(model, {.max_rows = capacity});
  std::mt19937 rng(seed);
  std::vector<std::size_t> waiting(jobs.size());
  for (std::size_t i = 0; i < jobs.size(); ++i) waiting[i] = jobs.size() - 1 - i;  // a stack
  std::map<calm::SequenceId, std::size_t> job_of;
  std::vector<std::vector<calm::TokenStats>> got(jobs.size());
  double layers = 0.0;
  std::size_t tokens = 0, steps = 0, widest = 0;
  while (!waiting.empty() || batch.size() > 0) {
    REQUIRE(++steps < 10000);
    for (int k = std::uniform_int_distribution<int>(batch.size() == 0 ? 1 : 0, 2)(rng);
         k > 0 && !waiting.empty() && batch.size() < batch.capacity(); --k) {
      const std::size_t j = waiting.back();
      waiting.pop_back();
      job_of[batch.join(jobs[j].request, jobs[j].measure, jobs[j].schedule)] = j;
    }
    widest = std::max(widest, batch.active());
    for (const calm::BatchToken& t : batch.step()) {
      REQUIRE_MESSAGE(t.error.empty(), t.error);
      got[job_of.at(t.id)].push_back(t.stats);
      layers += double(t.stats.exit_layer);
      ++tokens;
    }
    for (auto it = job_of.begin(); it != job_of.end();) {
      const auto [id, j] = *it;
      const bool cancel = jobs[j].cancel_after > 0 && got[j].size() >= jobs[j].cancel_after;
      // A finished row may stay a while before its caller collects it.
      if ((batch.done(id) && rng() % 3 != 0) || cancel) {
        if (batch.done(id)) {
          CAPTURE(j);
          CHECK(same_cache(batch.row(id).backend(), alone[j]->backend()));
          CHECK(batch.report(id).tokens.size() == got[j].size());
        }
        batch.leave(id);
        it = job_of.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    CAPTURE(j);
    if (jobs[j].cancel_after == 0) REQUIRE(got[j].size() == want[j].size());
    REQUIRE(got[j].size() <= want[j].size());
    for (std::size_t t = 0; t < got[j].size(); ++t) {
      CAPTURE(t);
      REQUIRE(same_stats(got[j][t], want[j][t]));
    }
  }
  if (jobs.size() >= 4 && capacity >= 4) CHECK(widest >= 3);  // rows really ran together
  return tokens ? layers / double(tokens) : 0.0;
}

std::vector<int> random_prompt(std::mt19937& rng, std::size_t vocab, std::size_t n) {
  std::vector<int> p(n);
  for (int& t : p) t = int(rng() % vocab);
  return p;
}

// Jobs with random prompts, lengths and sampling; every third sampled, every fifth cancelled.
template <class C, class S, class MakeSchedule>
std::vector<Job<C, S>> random_jobs(std::size_t count, std::size_t vocab, unsigned seed, C measure,
                                   MakeSchedule make_schedule, std::size_t max_new = 16) {
  std::mt19937 rng(seed);
  std::vector<Job<C, S>> jobs;
  for (std::size_t j = 0; j < count; ++j) {
    Job<C, S> job{{}, measure, make_schedule(j), 0};
    job.request.prompt = random_prompt(rng, vocab, 1 + rng() % 9);
    job.request.max_new_tokens = 1 + rng() % max_new;
    if (j % 3 == 1) job.request.sampling = {.temperature = 0.9f, .top_p = 0.95f, .seed = 100 + j};
    if (j % 4 == 3) job.request.decoder.stop_tokens = {int(rng() % vocab), int(rng() % vocab)};
    if (j % 5 == 4) job.cancel_after = 1 + rng() % 4;
    jobs.push_back(job);
  }
  return jobs;
}

}  // namespace

TEST_CASE("a batch's rows equal their sequences decoded alone, on every fixture") {
  for (const fs::path& dir : calm::test::checkpoint_fixtures()) {
    CAPTURE(dir.filename().string());
    const auto model = calm::LlamaModel::load(dir);
    const std::size_t V = model->vocab_size(), L = model->num_layers();
    for (unsigned seed : {1u, 2u}) {
      CAPTURE(seed);
      // Per-row thresholds: rows of one batch leave at different layers.
      const auto thresholds = [](std::size_t j) {
        return calm::ConstantThreshold{.lambda = 0.05f + 0.1f * float(j % 8)};
      };
      const double softmax_layers = check_against_alone(
          model,
          random_jobs<calm::SoftmaxResponse, calm::ConstantThreshold>(10, V, seed,
                                                                      calm::SoftmaxResponse{},
                                                                      thresholds),
          4, seed);
      if (L > 1) CHECK(softmax_layers < double(L));  // some rows left early
      check_against_alone(
          model,
          random_jobs<calm::HiddenSaturation, calm::ConstantThreshold>(8, V, seed + 10,
                                                                       calm::HiddenSaturation{},
                                                                       thresholds),
          3, seed);
      check_against_alone(
          model,
          random_jobs<calm::NoConfidence, calm::StaticExit>(
              8, V, seed + 20, calm::NoConfidence{},
              [L](std::size_t j) { return calm::StaticExit{1 + j % L}; }),
          8, seed);
    }
  }
}

TEST_CASE("batched rows equal alone on quantized and bf16-dot weights, and with the true cache") {
  const fs::path dir = calm::test::checkpoint_fixtures().front();
  CAPTURE(dir.filename().string());
  for (calm::WeightFormat f :
       {calm::WeightFormat::q8_0, calm::WeightFormat::q4_0, calm::WeightFormat::bf16_dot,
        calm::WeightFormat::q8_0_dot, calm::WeightFormat::q4_0_dot}) {
    // The first fixture's matrices are whole blocks of 32 wide: every format loads.
    const auto model = calm::LlamaModel::load(dir, {.weights = f});
    check_against_alone(
        model,
        random_jobs<calm::SoftmaxResponse, calm::ConstantThreshold>(
            8, model->vocab_size(), 7, calm::SoftmaxResponse{},
            [](std::size_t j) { return calm::ConstantThreshold{.lambda = 0.1f * float(j % 7)}; }),
        4, 7);
  }
  const auto model = calm::LlamaModel::load(dir);
  auto jobs = random_jobs<calm::SoftmaxResponse, calm::ConstantThreshold>(
      8, model->vocab_size(), 8, calm::SoftmaxResponse{},
      [](std::size_t) { return calm::ConstantThreshold{.lambda = 0.2f}; });
  for (auto& j : jobs) j.request.decoder.propagation = calm::Propagation::true_cache;
  check_against_alone(model, jobs, 4, 8);
}

TEST_CASE("batched rows equal alone on the bundled model with its classifier and candidates") {
  const auto model = calm::LlamaModel::load(kBundled);
  const auto classifier =
      calm::ExitClassifier::load(kBundled / "calm.safetensors", model->hidden_size());
  const calm::Tokenizer tok = calm::Tokenizer::load(kBundled / "tokenizer.model");
  const auto prompts = bundled_test_prompts(12);
  std::vector<Job<calm::ExitClassifier, calm::DecayingThreshold>> jobs;
  std::vector<Job<calm::CandidateSoftmax, calm::ConstantThreshold>> candidate_jobs;
  for (std::size_t j = 0; j < prompts.size(); ++j) {
    calm::SequenceRequest r;
    r.prompt = prompts[j];
    r.max_new_tokens = 12 + 3 * (j % 5);
    r.decoder.stop_tokens = {tok.eos_id()};
    if (j % 2 == 1) r.sampling = {.temperature = 0.8f, .seed = 7 * j + 1};
    jobs.push_back({r, classifier, {.lambda = 0.6f + 0.05f * float(j % 5), .tau = 4.0f},
                    j == 5 ? 3u : 0u});
    candidate_jobs.push_back({r, calm::CandidateSoftmax{}, {.lambda = 0.5f}, 0});
  }
  const double layers = check_against_alone(model, jobs, 8, 3);
  MESSAGE("mean exit layer of the classifier batch: " << layers << " of "
                                                      << model->num_layers());
  CHECK(layers < double(model->num_layers()));
  check_against_alone(model, candidate_jobs, 5, 4);
}

TEST_CASE("a batch row ends where its sequence ends alone: a full context") {
  const auto model =
      calm::LlamaModel::load(calm::test::checkpoint_fixtures().front(), {.max_context = 16});
  auto jobs = random_jobs<calm::SoftmaxResponse, calm::ConstantThreshold>(
      6, model->vocab_size(), 9, calm::SoftmaxResponse{},
      [](std::size_t) { return calm::ConstantThreshold{.lambda = 0.3f}; }, 40);
  for (auto& j : jobs) j.request.max_new_tokens = 40;  // more than the context holds
  check_against_alone(model, jobs, 3, 9);
}

TEST_CASE("BatchDecoder bookkeeping and errors") {
  const auto model = calm::LlamaModel::load(calm::test::checkpoint_fixtures().front());
  using Batch = calm::BatchDecoder<calm::NoConfidence, calm::Never>;
  Batch batch(model, {.max_rows = 2});
  calm::SequenceRequest r;
  r.prompt = {1, 2, 3};
  r.max_new_tokens = 2;

  r.prompt = {};
  CHECK_THROWS_WITH_AS(batch.join(r), doctest::Contains("prompt is empty"), calm::Error);
  r.prompt = {1, int(model->vocab_size())};
  CHECK_THROWS_WITH_AS(batch.join(r), doctest::Contains("outside the vocabulary"), calm::Error);
  CHECK(batch.size() == 0);  // a refused join holds nothing
  r.sampling.top_p = 0.0f;
  r.prompt = {1, 2, 3};
  CHECK_THROWS_WITH_AS(batch.join(r), doctest::Contains("top_p"), calm::Error);
  r.sampling.top_p = 1.0f;

  const calm::SequenceId a = batch.join(r);
  r.max_new_tokens = 0;  // nothing to generate: held, done at once
  const calm::SequenceId b = batch.join(r);
  CHECK(a != b);
  CHECK(batch.done(b));
  CHECK(batch.active() == 1);
  CHECK_THROWS_WITH_AS(batch.join(r), doctest::Contains("max_rows"), calm::Error);
  CHECK(batch.step().size() == 1);
  const auto last = batch.step();
  REQUIRE(last.size() == 1);
  CHECK(last[0].id == a);
  CHECK(last[0].finished);
  CHECK(batch.step().empty());  // nothing in flight
  batch.leave(a);
  CHECK_THROWS_WITH_AS(batch.leave(a), doctest::Contains("no sequence with id"), calm::Error);
  CHECK_THROWS_WITH_AS(batch.report(a), doctest::Contains("no sequence with id"), calm::Error);
  batch.leave(b);
  CHECK(batch.size() == 0);
  CHECK_THROWS_WITH_AS(Batch(model, {.max_rows = 0}), doctest::Contains("max_rows"), calm::Error);
  CHECK_THROWS_WITH_AS(Batch(nullptr), doctest::Contains("null"), calm::Error);
}

TEST_CASE("the README's batch example") {
  const auto model = calm::LlamaModel::load(kBundled);
  const auto classifier =
      calm::ExitClassifier::load(kBundled / "calm.safetensors", model->hidden_size());
  const std::vector<int> tokens = bundled_test_prompts(1).front();
  std::size_t seen = 0;
  // As README.md shows it:
  calm::BatchDecoder<calm::ExitClassifier, calm::DecayingThreshold> batch(model, {.max_rows = 8});
  const calm::SequenceId id = batch.join({.prompt = tokens, .max_new_tokens = 64}, classifier,
                                         {.lambda = 0.9f, .tau = 4.0f});
  while (batch.active() > 0)
    for (const calm::BatchToken& t : batch.step()) {
      CHECK(t.id == id);
      CHECK(t.stats.exit_layer >= 1);
      ++seen;
    }
  batch.leave(id);
  CHECK(seen == 64);
}
