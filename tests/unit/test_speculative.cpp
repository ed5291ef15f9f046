// calm::SpeculativeDecoder: greedy output and final cache equal to the full model's, bit for bit,
// for every draft policy (static exits, thresholded measures) and γ, with and without reusing
// the draft's layers; sampling follows the full model's distribution (statistical test whose
// power against a wrong rule is checked too).
#include <calm/calm.hpp>
#include <calm/io/tokenizer.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "unit/test_models.hpp"

namespace fs = std::filesystem;

namespace {

using calm::test::same_cache;
const auto fixture_models = calm::test::checkpoint_fixtures;

const fs::path kBundled = fs::path(CALM_MODELS) / "shakespeare-8l";


// The full model's greedy tokens and its cache after them.
struct Full {
  std::vector<int> tokens;
  calm::FullDecoder<calm::LlamaSession> decoder;
};

Full full_decode(const std::shared_ptr<const calm::LlamaModel>& model,
                 const std::vector<int>& prompt, std::size_t n, calm::DecoderOptions o = {}) {
  Full f{{}, calm::FullDecoder<calm::LlamaSession>(calm::LlamaSession(model), {}, {}, o)};
  f.tokens = f.decoder.generate(prompt, n).tokens;
  return f;
}


// Decodes with SpeculativeDecoder<LlamaSession, C, S> for γ and both reuse settings; checks the
// tokens and the cache against the full model's. Returns the acceptance rate of the last run.
template <class C, class S>
double check_exact(const std::shared_ptr<const calm::LlamaModel>& model,
                   const std::vector<int>& prompt, std::size_t n, C c, S s,
                   std::initializer_list<std::size_t> gammas, calm::DecoderOptions o = {}) {
  const Full full = full_decode(model, prompt, n, o);
  double acceptance = 0.0;
  for (std::size_t gamma : gammas)
    for (bool reuse : {true, false}) {
      CAPTURE(gamma);
      CAPTURE(reuse);
      calm::SpeculativeDecoder<calm::LlamaSession, C, S> spec(
          calm::LlamaSession(model), c, s, o, {.max_draft = gamma, .reuse_draft = reuse});
      const auto r = spec.generate(prompt, n);
      REQUIRE(r.tokens == full.tokens);
      CHECK(same_cache(spec.backend(), full.decoder.backend()));
      CHECK(r.speculation.accepted <= r.speculation.drafted);
      CHECK(r.speculation.accepted + r.speculation.rounds + 1 == r.tokens.size());
      acceptance = r.speculation.acceptance_rate();
    }
  return acceptance;
}

std::vector<std::vector<int>> bundled_test_prompts(std::size_t count) {
  const calm::Tokenizer tok = calm::Tokenizer::load(kBundled / "tokenizer.model");
  std::ifstream in(kBundled / "data" / "test.jsonl");
  std::vector<std::vector<int>> prompts;
  for (std::string line; std::getline(in, line) && prompts.size() < count;)
    if (!line.empty())
      prompts.push_back(tok.encode(nlohmann::json::parse(line).at("prompt").get<std::string>()));
  return prompts;
}

}  // namespace

TEST_CASE("speculative greedy equals the full model on the fixtures, for every static draft") {
  const std::vector<int> prompt = {1, 17, 42, 7, 99, 3};
  for (const fs::path& dir : fixture_models()) {
    CAPTURE(dir.filename().string());
    const auto model = calm::LlamaModel::load(dir);
    for (std::size_t e = 1; e <= model->num_layers(); ++e) {
      CAPTURE(e);
      check_exact(model, prompt, 20, calm::NoConfidence{}, calm::StaticExit{e}, {1, 3, 8});
    }
    check_exact(model, prompt, 20, calm::SoftmaxResponse{}, calm::ConstantThreshold{0.3f},
                {2, 5});
    check_exact(model, prompt, 20, calm::HiddenSaturation{}, calm::ConstantThreshold{0.5f},
                {4});
    calm::DecoderOptions o;
    o.propagation = calm::Propagation::true_cache;
    check_exact(model, prompt, 12, calm::NoConfidence{}, calm::StaticExit{1}, {3}, o);
  }
}

TEST_CASE("speculative greedy equals the full model on the bundled model's test prompts") {
  const auto model = calm::LlamaModel::load(kBundled);
  const auto classifier =
      calm::ExitClassifier::load(kBundled / "calm.safetensors", model->hidden_size());
  const calm::Tokenizer tok = calm::Tokenizer::load(kBundled / "tokenizer.model");
  calm::DecoderOptions o;
  o.stop_tokens = {tok.eos_id()};
  double accepted = 0.0;
  std::size_t runs = 0;
  for (const auto& prompt : bundled_test_prompts(145)) {
    accepted += check_exact(model, prompt, 24, calm::SoftmaxResponse{},
                            calm::DecayingThreshold{.lambda = 0.6f, .tau = 4.0f}, {4}, o);
    ++runs;
    if (runs % 8 == 0) {  // the other draft policies on a sample of the prompts
      check_exact(model, prompt, 24, calm::NoConfidence{}, calm::StaticExit{3}, {3, 6}, o);
      check_exact(model, prompt, 24, classifier, calm::ConstantThreshold{0.8f}, {4}, o);
    }
  }
  REQUIRE(runs > 100);
  MESSAGE("mean acceptance (softmax 0.6, gamma 4): " << accepted / double(runs));
  CHECK(accepted / double(runs) > 0.3);  // the drafts are mostly right, or this tests little
}

TEST_CASE("speculative decoding stops as the full model does: stop tokens, max tokens, context") {
  const auto model = calm::LlamaModel::load(fixture_models().front(), {.max_context = 16});
  const std::vector<int> prompt = {1, 17, 42, 7};
  const Full full = full_decode(model, prompt, 40);  // runs into the context end
  CHECK(full.tokens.size() == 16 - prompt.size() + 1);
  calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> spec(
      calm::LlamaSession(model), {}, {1}, {}, {.max_draft = 5});
  CHECK(spec.generate(prompt, 40).tokens == full.tokens);
  CHECK(spec.generate(prompt, 1).tokens == std::vector<int>(full.tokens.begin(), full.tokens.begin() + 1));
  CHECK(spec.generate(prompt, 0).tokens.empty());
  calm::DecoderOptions o;
  o.stop_tokens = {full.tokens[3]};
  calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> stopping(
      calm::LlamaSession(model), {}, {1}, o, {.max_draft = 5});
  const auto stopped = stopping.generate(prompt, 40).tokens;
  const auto first_stop = std::find(full.tokens.begin(), full.tokens.end(), full.tokens[3]);
  CHECK(stopped == std::vector<int>(full.tokens.begin(), first_stop + 1));
  CHECK(stopped == full_decode(model, prompt, 40, o).tokens);
  int seen = 0;
  spec.generate(prompt, 40, [&](const calm::TokenStats&) { return ++seen < 5; });
  CHECK(seen == 5);
  CHECK_THROWS_AS((calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence,
                                            calm::StaticExit>(calm::LlamaSession(model), {}, {1},
                                                              {}, {.max_draft = 0})),
                  calm::Error);
}

namespace {

// p(v) under temperature and top-k, computed here from the logits (independent of the library).
std::vector<double> sampling_distribution(std::span<const float> logits, double temperature,
                                          std::size_t top_k) {
  std::vector<std::pair<double, int>> order;
  for (std::size_t i = 0; i < logits.size(); ++i) order.push_back({logits[i] / temperature, int(i)});
  std::sort(order.begin(), order.end(), [](auto& a, auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  const std::size_t keep = top_k ? std::min(top_k, order.size()) : order.size();
  std::vector<double> p(logits.size(), 0.0);
  double total = 0.0;
  for (std::size_t i = 0; i < keep; ++i) total += std::exp(order[i].first - order[0].first);
  for (std::size_t i = 0; i < keep; ++i)
    p[order[i].second] = std::exp(order[i].first - order[0].first) / total;
  return p;
}

// For generated position `pos` (0-based) over many samples: observed counts O_v against
// E_v = sum over samples of p(v | that sample's prefix), the full model's conditional. Under the
// right rule, (O_v - E_v) has variance sum p(1 - p); the statistic sums the squared z-scores of
// the cells with E_v >= 5 (the rest pooled), ~ chi-square with (cells - 1) degrees of freedom.
struct Fit {
  double statistic = 0.0;
  double dof = 0.0;
};

Fit fit(const std::vector<std::vector<int>>& samples, std::size_t pos,
        const std::vector<std::vector<double>>& conditionals /* [sample] -> p(.|prefix) */) {
  const std::size_t vocab = conditionals.front().size();
  std::vector<double> observed(vocab, 0.0), expected(vocab, 0.0), variance(vocab, 0.0);
  for (std::size_t s = 0; s < samples.size(); ++s) {
    observed[samples[s][pos]] += 1.0;
    for (std::size_t v = 0; v < vocab; ++v) {
      const double p = conditionals[s][v];
      expected[v] += p;
      variance[v] += p * (1.0 - p);
    }
  }
  Fit f;
  double po = 0.0, pe = 0.0, pv = 0.0;
  std::size_t cells = 0;
  for (std::size_t v = 0; v < vocab; ++v) {
    if (expected[v] >= 5.0) {
      f.statistic += (observed[v] - expected[v]) * (observed[v] - expected[v]) / variance[v];
      ++cells;
    } else {
      po += observed[v], pe += expected[v], pv += variance[v];
    }
  }
  if (pe > 0.0 && pv > 0.0) {
    f.statistic += (po - pe) * (po - pe) / pv;
    ++cells;
  }
  f.dof = double(cells) - 1.0;
  return f;
}

// Rejects at about 6 standard deviations above the mean of chi-square(dof): a right rule
// passes essentially always (seeded, so the run is reproducible anyway).
bool plausible(const Fit& f) { return f.statistic < f.dof + 6.0 * std::sqrt(2.0 * f.dof); }

}  // namespace

TEST_CASE("speculative sampling follows the full model's distribution") {
  // A random fixture: the layer-1 draft distribution is far from the full model's, so many
  // drafts are rejected and the correction path is exercised.
  const auto model = calm::LlamaModel::load(fixture_models().front());
  const std::vector<int> prompt = {1, 17, 42};
  constexpr std::size_t kSamples = 1500, kNew = 4;
  for (const auto& [temperature, top_k] :
       std::vector<std::pair<float, std::size_t>>{{1.0f, 0}, {0.7f, 12}}) {
    CAPTURE(temperature);
    calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> spec(
        calm::LlamaSession(model), {}, {1}, {}, {.max_draft = 3});
    std::vector<std::vector<int>> samples;
    calm::SpeculationStats total;
    for (std::size_t s = 0; s < kSamples; ++s) {
      calm::SamplingOptions o{.temperature = temperature, .top_k = top_k, .seed = 1000 + s};
      const auto r = spec.generate(prompt, kNew, o);
      REQUIRE(r.tokens.size() == kNew);
      samples.push_back(r.tokens);
      total.drafted += r.speculation.drafted;
      total.accepted += r.speculation.accepted;
    }
    MESSAGE("acceptance " << total.acceptance_rate());
    CHECK(total.acceptance_rate() > 0.05);
    CHECK(total.acceptance_rate() < 0.95);
    // The full model's conditionals for every prefix, and the layer-1 draft's (for the power
    // check: samples that followed the draft instead would fail).
    calm::FullDecoder<calm::LlamaSession> full{calm::LlamaSession(model)};
    calm::Decoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> draft(
        calm::LlamaSession(model), {}, {1});
    for (std::size_t pos = 1; pos < kNew; ++pos) {
      CAPTURE(pos);
      std::vector<std::vector<double>> p_cond, q_cond;
      std::map<std::vector<int>, std::pair<std::vector<double>, std::vector<double>>> memo;
      for (const auto& s : samples) {
        std::vector<int> prefix(s.begin(), s.begin() + pos);
        auto it = memo.find(prefix);
        if (it == memo.end()) {
          std::vector<int> context = prompt;  // the full model after prompt + prefix
          context.insert(context.end(), prefix.begin(), prefix.end());
          full.generate(context, 1);
          context.pop_back();  // the draft: exact cache up to there, the last token at layer 1
          draft.generate(context, 1);
          draft.rewind(draft.length());
          calm::detail::StepTimes times;
          draft.advance(prefix.back(), pos + 1, kNew, times);
          it = memo.emplace(prefix, std::pair{sampling_distribution(full.last_logits(), temperature, top_k),
                                              sampling_distribution(draft.last_logits(), temperature, top_k)})
                   .first;
        }
        p_cond.push_back(it->second.first);
        q_cond.push_back(it->second.second);
      }
      const Fit right = fit(samples, pos, p_cond);
      MESSAGE("pos " << pos << ": statistic " << right.statistic << ", dof " << right.dof);
      CHECK(plausible(right));
      const Fit wrong = fit(samples, pos, q_cond);  // as if the draft's samples were kept
      MESSAGE("against the draft's distribution: " << wrong.statistic);
      CHECK(!plausible(wrong));
    }
  }
}

TEST_CASE("speculative sampling at a tiny positive temperature gives the greedy tokens") {
  const auto model = calm::LlamaModel::load(fixture_models().front());
  const std::vector<int> prompt = {1, 17, 42};
  const Full full = full_decode(model, prompt, 8);
  calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> spec(
      calm::LlamaSession(model), {}, {1}, {}, {.max_draft = 3});
  for (const float t : {1e-38f, 1e-45f}) {
    CAPTURE(t);
    CHECK(spec.generate(prompt, 8, calm::SamplingOptions{.temperature = t, .seed = 3}).tokens ==
          full.tokens);
  }
}
