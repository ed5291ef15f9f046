// calm::SpeculativeDecoder: greedy output and final cache equal to the full model's, bit for bit,
// for every draft policy (static exits, thresholded measures, n-gram lookups alone and before
// early exits) and γ, with and without reusing the draft's layers; sampling follows the full
// model's distribution (statistical test whose power against a wrong rule is checked too). Drafts
// over a sub-vocabulary (calm::SubVocabularyHead, calm::TokenFrequencies) change neither.
#include <calm/benchmark/fixtures.hpp>
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

#include "test_support.hpp"
#include "unit/bundled_prompts.hpp"
#include "unit/test_models.hpp"

namespace fs = std::filesystem;

namespace {

using calm::test::bundled_test_prompts;
using calm::test::same_cache;
using calm::test::checkpoint_fixtures;

using calm::test::kBundled;


// The bundled model, its classifier, and decoding that stops at its EOS.
struct Bundled {
  std::shared_ptr<const calm::LlamaModel> model = calm::LlamaModel::load(kBundled);
  calm::ExitClassifier classifier =
      calm::ExitClassifier::load(kBundled / "calm.safetensors", model->hidden_size());
  calm::DecoderOptions options = stopping_at_eos();

  static calm::DecoderOptions stopping_at_eos() {
    calm::DecoderOptions o;
    o.stop_tokens = {calm::Tokenizer::load(kBundled / "tokenizer.model").eos_id()};
    return o;
  }
};

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


// Decodes with SpeculativeDecoder<LlamaSession, C, S, T> for γ and both reuse settings; checks
// the tokens and the cache against the full model's. Returns the speculation of the last run.
// head: drafts over that sub-vocabulary (null: the whole head).
template <class C, class S, class T = calm::NoTokenDrafts>
calm::SpeculationStats check_exact(const std::shared_ptr<const calm::LlamaModel>& model,
                                   const std::vector<int>& prompt, std::size_t n, C c, S s,
                                   std::initializer_list<std::size_t> gammas,
                                   calm::DecoderOptions o = {}, T token_drafts = {},
                                   std::shared_ptr<const calm::SubVocabularyHead> head = {}) {
  const Full full = full_decode(model, prompt, n, o);
  calm::SpeculationStats last;
  for (std::size_t gamma : gammas)
    for (bool reuse : {true, false}) {
      CAPTURE(gamma);
      CAPTURE(reuse);
      calm::SpeculativeDecoder<calm::LlamaSession, C, S, T> spec(
          calm::LlamaSession(model), c, s, o, {.max_draft = gamma, .reuse_draft = reuse},
          token_drafts);
      spec.set_draft_head(head);
      const auto r = spec.generate(prompt, n);
      REQUIRE(r.tokens == full.tokens);
      CHECK(same_cache(spec.backend(), full.decoder.backend()));
      CHECK(r.speculation.accepted <= r.speculation.drafted);
      CHECK(r.speculation.lookup_accepted <= r.speculation.lookup_drafted);
      CHECK(r.speculation.accepted + r.speculation.rounds + 1 == r.tokens.size());
      last = r.speculation;
    }
  return last;
}

}  // namespace

TEST_CASE("speculative greedy equals the full model on the fixtures, for every static draft") {
  const std::vector<int> prompt = {1, 17, 42, 7, 99, 3};
  for (const fs::path& dir : checkpoint_fixtures()) {
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
  const Bundled bundled;
  const auto& [model, classifier, o] = bundled;
  double accepted = 0.0;
  std::size_t runs = 0;
  for (const auto& prompt : bundled_test_prompts(calm::test::kSanitized ? 16 : 145)) {
    accepted += check_exact(model, prompt, 24, calm::SoftmaxResponse{},
                            calm::DecayingThreshold{.lambda = 0.6f, .tau = 4.0f}, {4}, o)
                    .acceptance_rate();
    ++runs;
    if (runs % 8 == 0) {  // the other draft policies on a sample of the prompts
      check_exact(model, prompt, 24, calm::NoConfidence{}, calm::StaticExit{3}, {3, 6}, o);
      check_exact(model, prompt, 24, classifier, calm::ConstantThreshold{0.8f}, {4}, o);
    }
  }
  REQUIRE(runs >= (calm::test::kSanitized ? 16u : 100u));
  MESSAGE("mean acceptance (softmax 0.6, gamma 4): " << accepted / double(runs));
  CHECK(accepted / double(runs) > 0.3);  // the drafts are mostly right, or this tests little
}

TEST_CASE("speculative decoding stops as the full model does: stop tokens, max tokens, context") {
  const auto model = calm::LlamaModel::load(checkpoint_fixtures().front(), {.max_context = 16});
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

TEST_CASE("prompt lookup: what followed the latest earlier occurrence of the longest suffix") {
  using Tokens = std::vector<int>;
  const auto propose = [](const calm::PromptLookup& lookup, const Tokens& history, std::size_t n) {
    const std::span<const int> p = lookup.propose(history, n);
    return Tokens(p.begin(), p.end());
  };
  const calm::PromptLookup lookup{.max_ngram = 3};
  //                 0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
  const Tokens h = {1, 2, 3, 4, 9, 1, 2, 3, 5, 6, 8, 3, 0, 7, 2, 3};
  // [7 2 3] occurs nowhere earlier; [2 3] at 1 and 6: the latest, 6, then 5 6 8 3 0 ...
  CHECK(propose(lookup, h, 4) == Tokens{5, 6, 8, 3});
  CHECK(lookup.propose(h, 4).data() == h.data() + 8);  // the history's own tokens
  CHECK(propose(lookup, h, 2) == Tokens{5, 6});        // k capped by γ
  // The longest suffix first: [3] alone was seen later (at 11), followed by 0 7 2 3.
  CHECK(propose({.max_ngram = 1}, h, 4) == Tokens{0, 7, 2, 3});
  // k capped by what follows: [4 5] at 0 is followed by 6 4 5 only; [7 7] at 0 by one 7.
  CHECK(propose(lookup, {4, 5, 6, 4, 5}, 8) == Tokens{6, 4, 5});
  CHECK(propose(lookup, {7, 7, 7}, 4) == Tokens{7});
  // Nothing to propose.
  CHECK(propose(lookup, {1, 2, 3}, 4).empty());
  CHECK(propose(lookup, {5}, 4).empty());
  CHECK(propose(lookup, {}, 4).empty());
  CHECK(propose(lookup, h, 0).empty());
  CHECK(propose({.max_ngram = 3, .min_ngram = 2}, {3, 9, 3}, 4).empty());  // only [3] recurs
  CHECK(propose({.max_ngram = 0}, h, 4).empty());
  CHECK_THROWS_AS((calm::PromptLookup{.max_ngram = 2, .min_ngram = 3}.validate()), calm::Error);
  CHECK_THROWS_AS((calm::PromptLookupDecoder<calm::LlamaSession>(
                      calm::LlamaSession(calm::LlamaModel::load(checkpoint_fixtures().front())), {},
                      {}, {}, {}, {.max_ngram = 2, .min_ngram = 0})),
                  calm::Error);
}

TEST_CASE("n-gram drafts, alone and before early exits: the full model's greedy output") {
  const calm::PromptLookup trigrams{.max_ngram = 3}, bigrams{.max_ngram = 2};
  for (const fs::path& dir : checkpoint_fixtures()) {
    CAPTURE(dir.filename().string());
    const auto model = calm::LlamaModel::load(dir);
    for (const std::vector<int>& prompt :
         {std::vector<int>{1, 17, 42, 7, 99, 3}, std::vector<int>{1, 17, 42, 7, 17, 42, 7, 17, 42}}) {
      check_exact(model, prompt, 20, calm::NoConfidence{}, calm::Never{}, {1, 4, 8}, {}, trigrams);
      check_exact(model, prompt, 20, calm::NoConfidence{}, calm::StaticExit{1}, {3}, {}, bigrams);
    }
  }
  // The bundled model: passages written twice, which it continues by copying, and its ordinary
  // test prompts.
  const auto model = calm::LlamaModel::load(kBundled);
  const calm::Tokenizer tok = calm::Tokenizer::load(kBundled / "tokenizer.model");
  calm::DecoderOptions o;
  o.stop_tokens = {tok.eos_id()};
  const calm::DecayingThreshold decaying{.lambda = 0.6f, .tau = 4.0f};
  const std::size_t copy_prompts = calm::test::kSanitized ? 2 : 12;
  const auto copying = calm::bench::copy_heavy_prompts(kBundled / "data" / "test.jsonl", tok,
                                                       copy_prompts, /*copies=*/2, 32,
                                                       model->max_context());
  REQUIRE(copying.size() == copy_prompts);
  std::size_t alone_drafted = 0, alone_accepted = 0, before_exits_accepted = 0;
  for (const auto& prompt : copying) {
    const calm::SpeculationStats alone = check_exact(model, prompt, 32, calm::NoConfidence{},
                                                     calm::Never{}, {4, 8}, o, trigrams);
    CHECK(alone.lookup_drafted == alone.drafted);
    alone_drafted += alone.drafted;
    alone_accepted += alone.accepted;
    before_exits_accepted +=
        check_exact(model, prompt, 32, calm::SoftmaxResponse{}, decaying, {4}, o, trigrams)
            .lookup_accepted;
  }
  MESSAGE("n-gram acceptance on copying prompts: " << double(alone_accepted) / double(alone_drafted));
  // The small model copies only in part (about 0.15 of the lookups are right), but some are.
  CHECK(alone_accepted > alone_drafted / 20);
  CHECK(before_exits_accepted > 0);
  for (const auto& prompt : bundled_test_prompts(calm::test::kSanitized ? 2 : 16)) {
    check_exact(model, prompt, 24, calm::NoConfidence{}, calm::Never{}, {4}, o, trigrams);
    check_exact(model, prompt, 24, calm::NoConfidence{}, calm::StaticExit{3}, {4}, o, bigrams);
  }
}

TEST_CASE("token frequencies: counts, the top of the ranking, and the file") {
  using Ids = std::vector<std::uint32_t>;
  const std::vector<int> text = {3, 1, 3, 2, 3, 1};
  const calm::TokenFrequencies f = calm::TokenFrequencies::count(text, 5, "hand");
  CHECK(f.counts == std::vector<std::uint64_t>{0, 2, 1, 3, 0});
  CHECK(f.total() == 6);
  CHECK(f.top(2) == Ids{1, 3});           // 3 (three times), 1 (twice); ascending by id
  CHECK(f.top(3) == Ids{1, 2, 3});
  CHECK(f.top(4) == Ids{0, 1, 2, 3});     // unseen tokens by id: 0 before 4
  CHECK(f.top(9) == Ids{0, 1, 2, 3, 4});  // clamped to the vocabulary
  const std::vector<int> eos = {4};
  CHECK(f.top(2, eos) == Ids{3, 4});      // a stop token takes the last place
  CHECK_THROWS_WITH_AS(calm::TokenFrequencies::count(std::vector<int>{1, 5}, 5, "x"),
                       doctest::Contains("token 5 at position 1"), calm::Error);
  CHECK_THROWS_AS(f.top(2, std::vector<int>{-1}), calm::Error);

  const calm::test::ScratchDir dir("token_frequencies");
  const fs::path path = dir.path / "token_frequencies.json";
  calm::write_token_frequencies(path, f);
  const calm::TokenFrequencies back = calm::read_token_frequencies(path, 5);
  CHECK(back.counts == f.counts);
  CHECK(back.source == "hand");
  CHECK_THROWS_WITH_AS(calm::read_token_frequencies(path, 6), doctest::Contains("\"vocab_size\""),
                       calm::Error);
  // Each broken field is named.
  const nlohmann::json good = calm::test::parse_json(calm::test::read_text(path));
  const auto broken = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json doc = good;
    if (value.is_discarded()) doc.erase(key);
    else doc[key] = value;
    const std::string file = key + ".json";
    return calm::test::error_of(
        [&] { calm::read_token_frequencies(dir.write(file, doc.dump()), 5); });
  };
  using calm::test::contains;
  CHECK(contains(broken("format", "calm-something-else"), "\"format\""));
  CHECK(contains(broken("version", 2), "\"version\""));
  CHECK(contains(broken("counts", {0, 2, 1, 3}), "\"counts\""));
  CHECK(contains(broken("counts", {0, 2, 1, -3, 0}), "\"counts[3]\""));
  CHECK(contains(broken("counts", {0, 2, 1, 3.5, 0}), "\"counts[3]\""));
  CHECK(contains(broken("tokens_counted", 7), "\"tokens_counted\""));
  CHECK(contains(broken("source", 3), "\"source\""));
  CHECK(contains(broken("counts", nlohmann::json::value_t::discarded), "no \"counts\""));
  CHECK(contains(broken("extra", 1), "unknown key \"extra\""));
  CHECK(contains(calm::test::error_of([&] {
                   calm::read_token_frequencies(dir.write("cut.json", good.dump().substr(0, 30)));
                 }),
                 "cut.json"));
}

TEST_CASE("a sub-vocabulary head: the whole head's logits for its tokens, in every format") {
  const fs::path dir = checkpoint_fixtures().front();
  std::vector<calm::WeightFormat> formats = {calm::WeightFormat::file, calm::WeightFormat::q8_0,
                                             calm::WeightFormat::q4_0, calm::WeightFormat::bf16_dot,
                                             calm::WeightFormat::q8_0_dot};
  for (const calm::WeightFormat format : formats) {
    const auto model = calm::LlamaModel::load(dir, {.weights = format});
    CAPTURE(calm::formats::name(model->weights().lm_head.format));
    calm::LlamaSession session(model);
    const std::size_t h = model->hidden_size(), v = model->vocab_size();
    std::vector<float> normed(h), full(v);
    for (std::size_t i = 0; i < h; ++i) normed[i] = std::sin(0.37f * float(i) + 0.1f);
    session.lm_head(normed, full);
    std::vector<std::uint32_t> tokens;
    for (std::uint32_t t = 0; t < v; t += 3) tokens.push_back(t);
    tokens.push_back(std::uint32_t(v - 1));
    const calm::SubVocabularyHead head(model->weights().lm_head, tokens);
    REQUIRE(head.size() == tokens.size());
    std::vector<float> sub(head.size());
    head.apply(normed, sub, session.pool());
    bool same = true;
    std::size_t best = 0;
    for (std::size_t k = 0; k < sub.size(); ++k) {
      same = same && std::memcmp(&sub[k], &full[tokens[k]], sizeof(float)) == 0;
      if (full[tokens[k]] > full[tokens[best]]) best = k;
    }
    CHECK(same);  // bitwise
    CHECK(head.argmax(sub) == int(tokens[best]));
    std::vector<float> scattered(v);
    head.scatter(sub, scattered);
    CHECK(scattered[tokens[1]] == sub[1]);
    CHECK(std::isinf(scattered[1]));
    CHECK(head.bytes() < model->weights().lm_head.bytes() / 2);
  }
  const auto model = calm::LlamaModel::load(dir);
  const calm::Linear& lm = model->weights().lm_head;
  CHECK_THROWS_AS(calm::SubVocabularyHead(lm, {}), calm::Error);
  CHECK_THROWS_WITH_AS(calm::SubVocabularyHead(lm, {3, 2}), doctest::Contains("ascending"),
                       calm::Error);
  CHECK_THROWS_AS(calm::SubVocabularyHead(lm, {std::uint32_t(lm.rows)}), calm::Error);
}

TEST_CASE("drafts over a sub-vocabulary: the full model's greedy output, every size") {
  const std::vector<int> prompt = {1, 17, 42, 7, 99, 3};
  for (const fs::path& dir : checkpoint_fixtures()) {
    CAPTURE(dir.filename().string());
    const auto model = calm::LlamaModel::load(dir);
    const std::size_t v = model->vocab_size();
    // Counts from the full model's own greedy text, so the draft vocabulary holds what it says.
    const Full full = full_decode(model, prompt, 40);
    const calm::TokenFrequencies f = calm::TokenFrequencies::count(full.tokens, v, "greedy");
    for (const std::size_t size : {std::size_t{1}, std::size_t{8}, v / 2, v}) {
      CAPTURE(size);
      const auto head = std::make_shared<const calm::SubVocabularyHead>(
          model->weights().lm_head, f.top(size));
      for (std::size_t e : {std::size_t{1}, model->num_layers() - 1, model->num_layers()})
        check_exact(model, prompt, 20, calm::NoConfidence{}, calm::StaticExit{e}, {1, 4}, {}, {},
                    head);
      check_exact(model, prompt, 20, calm::HiddenSaturation{}, calm::ConstantThreshold{0.5f}, {3},
                  {}, {}, head);
      check_exact(model, prompt, 16, calm::SoftmaxResponse{}, calm::ConstantThreshold{0.3f}, {3},
                  {}, calm::PromptLookup{.max_ngram = 2}, head);
    }
    // The whole vocabulary as a sub-vocabulary drafts what the whole head drafts.
    const auto all = std::make_shared<const calm::SubVocabularyHead>(model->weights().lm_head, f.top(v));
    for (std::size_t e : {std::size_t{1}, std::size_t{2}}) {
      calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> a(
          calm::LlamaSession(model), {}, {e}, {}, {.max_draft = 4}),
          b(calm::LlamaSession(model), {}, {e}, {}, {.max_draft = 4});
      b.set_draft_head(all);
      const auto ra = a.generate(prompt, 24), rb = b.generate(prompt, 24);
      CHECK(ra.speculation.accepted == rb.speculation.accepted);
      CHECK(ra.speculation.drafted == rb.speculation.drafted);
    }
  }
  // The bundled model with its classifier (which leaves the head to the draft): a frequency table
  // from its test prompts, the drafts over the top 256 of its 1024 tokens.
  const Bundled bundled;
  const auto& [model, classifier, o] = bundled;
  const auto prompts = bundled_test_prompts(calm::test::kSanitized ? 6 : 24);
  std::vector<int> text;
  for (const auto& p : prompts) text.insert(text.end(), p.begin(), p.end());
  const calm::TokenFrequencies f = calm::TokenFrequencies::count(text, model->vocab_size(), "test");
  const auto head = std::make_shared<const calm::SubVocabularyHead>(model->weights().lm_head,
                                                                    f.top(256, o.stop_tokens));
  double sub_accepted = 0.0, whole_accepted = 0.0;
  for (const auto& prompt : prompts) {
    sub_accepted += check_exact(model, prompt, 24, classifier, calm::ConstantThreshold{0.8f}, {4},
                                o, {}, head).acceptance_rate();
    whole_accepted += check_exact(model, prompt, 24, classifier, calm::ConstantThreshold{0.8f},
                                  {4}, o).acceptance_rate();
  }
  MESSAGE("acceptance, 256 of 1024 tokens: " << sub_accepted / double(prompts.size())
                                             << ", the whole head: "
                                             << whole_accepted / double(prompts.size()));
  CHECK(sub_accepted > 0.5 * whole_accepted);  // the frequent tokens are most of the drafts
  // A head for another model is refused.
  calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> spec(
      calm::LlamaSession(calm::LlamaModel::load(checkpoint_fixtures().front())), {}, {1});
  CHECK_THROWS_AS(spec.set_draft_head(head), calm::Error);
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

// Samples of n tokens from `spec`, one seed each; adds their speculation to `total`.
template <class Spec>
std::vector<std::vector<int>> speculative_samples(Spec& spec, const std::vector<int>& prompt,
                                                  std::size_t count, std::size_t n,
                                                  float temperature, std::size_t top_k,
                                                  calm::SpeculationStats& total) {
  std::vector<std::vector<int>> samples;
  for (std::size_t s = 0; s < count; ++s) {
    calm::SamplingOptions o{.temperature = temperature, .top_k = top_k, .seed = 1000 + s};
    const auto r = spec.generate(prompt, n, o);
    REQUIRE(r.tokens.size() == n);
    samples.push_back(r.tokens);
    total.add(r.speculation);
  }
  return samples;
}

// conditional(prefix) for each sample's first `pos` tokens, computed once per distinct prefix.
template <class Conditional>
std::vector<std::vector<double>> per_sample(const std::vector<std::vector<int>>& samples,
                                            std::size_t pos, Conditional conditional) {
  std::map<std::vector<int>, std::vector<double>> memo;
  std::vector<std::vector<double>> out;
  for (const auto& s : samples) {
    std::vector<int> prefix(s.begin(), s.begin() + pos);
    auto it = memo.find(prefix);
    if (it == memo.end()) it = memo.emplace(prefix, conditional(prefix)).first;
    out.push_back(it->second);
  }
  return out;
}

// The full model's p(. | prompt + prefix) under temperature and top-k.
auto full_conditional(calm::FullDecoder<calm::LlamaSession>& full, const std::vector<int>& prompt,
                      float temperature, std::size_t top_k) {
  return [&full, &prompt, temperature, top_k](const std::vector<int>& prefix) {
    std::vector<int> context = prompt;
    context.insert(context.end(), prefix.begin(), prefix.end());
    full.generate(context, 1);
    return sampling_distribution(full.last_logits(), temperature, top_k);
  };
}

// Each position 1..n-1 of `samples` follows the full model's p(. | prompt + prefix).
void check_full_distribution(const std::vector<std::vector<int>>& samples,
                             calm::FullDecoder<calm::LlamaSession>& full,
                             const std::vector<int>& prompt, std::size_t n, float temperature,
                             std::size_t top_k) {
  for (std::size_t pos = 1; pos < n; ++pos) {
    CAPTURE(pos);
    const Fit right =
        fit(samples, pos, per_sample(samples, pos, full_conditional(full, prompt, temperature, top_k)));
    MESSAGE("pos " << pos << ": statistic " << right.statistic << ", dof " << right.dof);
    CHECK(plausible(right));
  }
}

}  // namespace

TEST_CASE("speculative sampling follows the full model's distribution") {
  // A random fixture: the layer-1 draft distribution is far from the full model's, so many
  // drafts are rejected and the correction path is exercised.
  const auto model = calm::LlamaModel::load(checkpoint_fixtures().front());
  const std::vector<int> prompt = {1, 17, 42};
  constexpr std::size_t kSamples = 1500, kNew = 4;
  for (const auto& [temperature, top_k] :
       std::vector<std::pair<float, std::size_t>>{{1.0f, 0}, {0.7f, 12}}) {
    CAPTURE(temperature);
    calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> spec(
        calm::LlamaSession(model), {}, {1}, {}, {.max_draft = 3});
    calm::SpeculationStats total;
    const auto samples =
        speculative_samples(spec, prompt, kSamples, kNew, temperature, top_k, total);
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
      const auto draft_conditional = [&](const std::vector<int>& prefix) {
        std::vector<int> context = prompt;  // exact cache up to there, the last token at layer 1
        context.insert(context.end(), prefix.begin(), prefix.end() - 1);
        draft.generate(context, 1);
        draft.rewind(draft.length());
        calm::detail::StepTimes times;
        draft.advance(prefix.back(), pos + 1, kNew, times);
        return sampling_distribution(draft.last_logits(), temperature, top_k);
      };
      const Fit right =
          fit(samples, pos, per_sample(samples, pos, full_conditional(full, prompt, temperature, top_k)));
      MESSAGE("pos " << pos << ": statistic " << right.statistic << ", dof " << right.dof);
      CHECK(plausible(right));
      const Fit wrong = fit(samples, pos, per_sample(samples, pos, draft_conditional));
      MESSAGE("against the draft's distribution: " << wrong.statistic);  // as if drafts were kept
      CHECK(!plausible(wrong));
    }
  }
}

TEST_CASE("speculative sampling at a tiny positive temperature gives the greedy tokens") {
  const auto model = calm::LlamaModel::load(checkpoint_fixtures().front());
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

TEST_CASE("speculative sampling with n-gram drafts follows the full model's distribution") {
  // Point-mass drafts: accepted with probability p(d), else the token is drawn from p without d.
  // A random fixture rejects most lookups (the correction path; early exits draft when none
  // matches), the bundled model copying a passage accepts most.
  constexpr std::size_t kSamples = 1500, kNew = 4;
  // Every sample prefills its prompt anew; instrumented, the bundled model's long copy-heavy
  // prompt made this the longest test of the sanitizer run (over 10 minutes, then 84 s with a
  // sixth of the samples). There it copies the passage twice, with 40 samples: the same paths
  // (the fixture's repeating prompt accepts most lookups too), a weak but still deterministic
  // frequency check.
  constexpr std::size_t kCopies = calm::test::kSanitized ? 2 : 4;
  constexpr std::size_t kBundledSamples = calm::test::kSanitized ? 40 : kSamples;
  const auto fixture = calm::LlamaModel::load(checkpoint_fixtures().front());
  const auto bundled = calm::LlamaModel::load(kBundled);
  const calm::Tokenizer tok = calm::Tokenizer::load(kBundled / "tokenizer.model");
  const std::vector<int> copying = calm::bench::copy_heavy_prompts(
      kBundled / "data" / "test.jsonl", tok, 1, kCopies, kNew, bundled->max_context())[0];
  const std::vector<int> repeating = {1, 17, 42, 7, 17, 42, 7, 17, 42};
  struct Case {
    std::shared_ptr<const calm::LlamaModel> model;
    const std::vector<int>& prompt;
    bool before_exits;  // n-gram drafts before layer-1 exits, else alone
    float temperature;
    std::size_t top_k;
  };
  for (const Case& c : {Case{fixture, repeating, true, 1.0f, 0}, Case{fixture, repeating, false, 0.7f, 12},
                        Case{bundled, copying, false, 0.8f, 40}}) {
    CAPTURE(c.model->vocab_size());
    CAPTURE(c.before_exits);
    calm::SpeculationStats total;
    std::vector<std::vector<int>> samples;
    const std::size_t count = c.model == bundled ? kBundledSamples : kSamples;
    const calm::PromptLookup lookup{.max_ngram = 3};
    if (c.before_exits) {
      calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit,
                               calm::PromptLookup>
          spec(calm::LlamaSession(c.model), {}, {1}, {}, {.max_draft = 3}, lookup);
      samples = speculative_samples(spec, c.prompt, count, kNew, c.temperature, c.top_k, total);
    } else {
      calm::PromptLookupDecoder<calm::LlamaSession> spec(calm::LlamaSession(c.model), {}, {}, {},
                                                         {.max_draft = 3}, lookup);
      samples = speculative_samples(spec, c.prompt, count, kNew, c.temperature, c.top_k, total);
    }
    MESSAGE("n-gram drafts " << total.lookup_drafted << ", accepted " << total.lookup_accepted);
    CHECK(total.lookup_drafted > count / 25);  // enough rounds decided by a lookup
    if (c.model == bundled) CHECK(total.lookup_accepted > total.lookup_drafted / 10);
    calm::FullDecoder<calm::LlamaSession> full{calm::LlamaSession(c.model)};
    check_full_distribution(samples, full, c.prompt, kNew, c.temperature, c.top_k);
  }
}

TEST_CASE("speculative sampling with drafts over a sub-vocabulary follows the full model's") {
  // q is the draft's distribution renormalised over V' (zero elsewhere): tokens outside V' are
  // never drafted but still come out, through the correction max(0, p - q).
  const auto model = calm::LlamaModel::load(checkpoint_fixtures().front());
  const std::vector<int> prompt = {1, 17, 42};
  constexpr std::size_t kSamples = 1500, kNew = 4;
  std::vector<std::uint32_t> half;
  for (std::uint32_t t = 0; t < model->vocab_size(); t += 2) half.push_back(t);
  calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> spec(
      calm::LlamaSession(model), {}, {1}, {}, {.max_draft = 3});
  spec.set_draft_head(std::make_shared<const calm::SubVocabularyHead>(model->weights().lm_head, half));
  calm::SpeculationStats total;
  const auto samples = speculative_samples(spec, prompt, kSamples, kNew, 1.0f, 0, total);
  MESSAGE("acceptance " << total.acceptance_rate());
  CHECK(total.acceptance_rate() > 0.05);
  std::size_t odd = 0;  // tokens no draft could propose
  for (const auto& s : samples) odd += std::size_t(std::count_if(s.begin() + 1, s.end(), [](int t) { return t % 2 == 1; }));
  CHECK(odd > kSamples / 10);
  calm::FullDecoder<calm::LlamaSession> full{calm::LlamaSession(model)};
  check_full_distribution(samples, full, prompt, kNew, 1.0f, 0);
}

// --- Adaptive γ (SpeculativeOptions::adaptive_gamma; DEL, 2025) ---------------------------------

namespace {

// check_exact with γ chosen per round up to max_draft: two generations on one decoder (the second
// starts from what the first learnt), both reuse settings; tokens and cache against the full
// model's. Returns the speculation of the last run.
template <class C, class S, class T = calm::NoTokenDrafts>
calm::SpeculationStats check_exact_adaptive(
    const std::shared_ptr<const calm::LlamaModel>& model, const std::vector<int>& prompt,
    std::size_t n, C c, S s, std::size_t max_draft, calm::DecoderOptions o = {},
    T token_drafts = {}, std::shared_ptr<const calm::SubVocabularyHead> head = {}) {
  const Full full = full_decode(model, prompt, n, o);
  calm::SpeculationStats last;
  for (bool reuse : {true, false}) {
    CAPTURE(reuse);
    calm::SpeculativeOptions so{.max_draft = max_draft, .reuse_draft = reuse};
    so.adaptive_gamma = true;
    calm::SpeculativeDecoder<calm::LlamaSession, C, S, T> spec(calm::LlamaSession(model), c, s,
                                                                o, so, token_drafts);
    spec.set_draft_head(head);
    for (int run = 0; run < 2; ++run) {
      CAPTURE(run);
      const auto r = spec.generate(prompt, n);
      REQUIRE(r.tokens == full.tokens);
      CHECK(same_cache(spec.backend(), full.decoder.backend()));
      CHECK(r.speculation.accepted + r.speculation.rounds + 1 == r.tokens.size());
      CHECK(r.speculation.adaptive_gamma);
      if (r.speculation.drafted > 0) {
        CHECK(r.speculation.min_gamma() >= 1);
        CHECK(r.speculation.max_gamma() <= max_draft);
      }
      last = r.speculation;
    }
  }
  return last;
}

// Draft sources for the γ-movement test: the full model's own next tokens (always accepted), or
// each of them plus one (always rejected). `tokens` is prompt + the full model's output.
struct ScriptedDrafts {
  const std::vector<int>* tokens = nullptr;
  std::span<const int> propose(std::span<const int> history, std::size_t n) const noexcept {
    if (history.size() >= tokens->size()) return {};
    return std::span<const int>(*tokens).subspan(
        history.size(), std::min(n, tokens->size() - history.size()));
  }
};
static_assert(calm::TokenDraftSource<ScriptedDrafts>);

}  // namespace

TEST_CASE("adaptive gamma: the choice and the tracker against hand-computed values") {
  // choose_gamma: argmax over γ in [1, size] of T(γ) / C(γ), the smallest γ on ties, with
  //   T(γ) = 1 + Σ_{i≤γ} Π_{k≤i} α_k,   C(γ) = γ·d + 1 + c·γ.
  // α = (0.9, 0.8, 0.5, 0.1), d = 0.2, c = 0.25:
  //   T = 1.9, 2.62, 2.98, 3.016;  C = 1.45, 1.9, 2.35, 2.8;
  //   T/C = 1.3103, 1.3789, 1.2681, 1.0771  ->  γ = 2.
  const std::vector<double> falling = {0.9, 0.8, 0.5, 0.1};
  CHECK(calm::choose_gamma(falling, 0.2, 0.25) == 2);
  // The same without the last position: still 2; only the first: 1.
  CHECK(calm::choose_gamma(std::span(falling).first(3), 0.2, 0.25) == 2);
  CHECK(calm::choose_gamma(std::span(falling).first(1), 0.2, 0.25) == 1);
  // Free drafts (d = 0, n-gram lookups), α = 0.8 everywhere, c = 0.25:
  //   T/C = 1.8/1.25, 2.44/1.5, 2.952/1.75, 3.3616/2.0 = 1.44, 1.6267, 1.6869, 1.6808, falling
  //   after  ->  γ = 3.
  const std::vector<double> flat(8, 0.8);
  CHECK(calm::choose_gamma(flat, 0.0, 0.25) == 3);
  // Always accepted: T/C = (1 + γ) / (1 + 0.25γ) rises with γ -> the longest.
  const std::vector<double> ones(8, 1.0);
  CHECK(calm::choose_gamma(ones, 0.0, 0.25) == 8);
  // α_1 = 0.3, d = c = 0.5: T/C = 1.3/2 = 0.65, 1.39/3 = 0.463 -> 1.
  CHECK(calm::choose_gamma(std::vector<double>{0.3, 0.3}, 0.5, 0.5) == 1);
  // A tie (d = c = 0, α_1 = 0: every γ gives T/C = 1) goes to the smallest γ.
  CHECK(calm::choose_gamma(std::vector<double>{0.0, 1.0, 1.0}, 0.0, 0.0) == 1);
  // Costlier verification rows shorten γ: α = 0.8, d = 0, c = 1: T/C = 1.8/2 = 0.9,
  // 2.44/3 = 0.813 -> 1.
  CHECK(calm::choose_gamma(flat, 0.0, 1.0) == 1);

  // The tracker (weight w = 0.5, prior 0.8): α_k += w (observed - α_k).
  calm::AcceptanceTracker t(4, 0.5, 0.8);
  // 3 drafted, the first accepted, the second rejected: α = (0.9, 0.4, 0.8, 0.8) (the third is
  // not observed: it came after a rejection).
  t.update(3, 1, /*capped=*/false);
  CHECK(t.acceptance()[0] == doctest::Approx(0.9));
  CHECK(t.acceptance()[1] == doctest::Approx(0.4));
  CHECK(t.acceptance()[2] == doctest::Approx(0.8));
  CHECK(t.acceptance()[3] == doctest::Approx(0.8));
  // 2 drafted at γ = 2, both accepted: α_1 = 0.95, α_2 = 0.7; the positions past γ move toward
  // α_2: 0.8 + 0.5 (0.7 - 0.8) = 0.75.
  t.update(2, 2, /*capped=*/true);
  CHECK(t.acceptance()[0] == doctest::Approx(0.95));
  CHECK(t.acceptance()[1] == doctest::Approx(0.7));
  CHECK(t.acceptance()[2] == doctest::Approx(0.75));
  CHECK(t.acceptance()[3] == doctest::Approx(0.75));
  // Both accepted but the source had no more (not capped): nothing past them moves.
  t.update(2, 2, /*capped=*/false);
  CHECK(t.acceptance()[2] == doctest::Approx(0.75));
  t.reset();
  CHECK(t.acceptance()[1] == doctest::Approx(0.8));

  // A draft's cost: E/L (1 - head) + head, E the mean exit layer so far (L/2 before any).
  const auto model = calm::LlamaModel::load(checkpoint_fixtures().front());
  const double L = double(model->num_layers());
  calm::SpeculativeOptions so{.max_draft = 4};
  so.adaptive_gamma = true;
  so.cost.head = 0.2;
  calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> spec(
      calm::LlamaSession(model), {}, {1}, {}, so);
  CHECK(spec.exit_draft_cost() == doctest::Approx(0.5 * 0.8 + 0.2));
  spec.generate(std::vector<int>{1, 17, 42}, 12);
  CHECK(spec.exit_draft_cost() == doctest::Approx(1.0 / L * 0.8 + 0.2));
  // A draft head over half the vocabulary pays half the head.
  std::vector<std::uint32_t> half;
  for (std::uint32_t t = 0; t < model->vocab_size(); t += 2) half.push_back(t);
  spec.set_draft_head(
      std::make_shared<const calm::SubVocabularyHead>(model->weights().lm_head, half));
  CHECK(spec.exit_draft_cost() == doctest::Approx(1.0 / L * 0.8 + 0.2 * 0.5));
  so.cost.draft_token = 0.35;  // declared
  calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> declared(
      calm::LlamaSession(model), {}, {1}, {}, so);
  CHECK(declared.exit_draft_cost() == doctest::Approx(0.35));
  CHECK(declared.next_gamma(false) == calm::choose_gamma(std::vector<double>(4, 0.8), 0.35, 0.25));
  // The head's share from the weights when not declared: in (0, 1).
  so.cost = {};
  calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> derived(
      calm::LlamaSession(model), {}, {1}, {}, so);
  CHECK(derived.exit_draft_cost() > 0.0);
  CHECK(derived.exit_draft_cost() < 1.0);
  // Refused settings.
  for (const auto& bad : {calm::SpeculativeOptions{.acceptance_weight = 0.0},
                          calm::SpeculativeOptions{.prior_acceptance = 1.5},
                          calm::SpeculativeOptions{.cost = {.verify_row = -1.0}},
                          calm::SpeculativeOptions{.cost = {.draft_token = std::nan("")}},
                          calm::SpeculativeOptions{.cost = {.head = 2.0}}})
    CHECK_THROWS_AS(bad.validate(), calm::Error);
}

TEST_CASE("adaptive gamma moves: up while drafts are accepted, down while they are rejected") {
  const auto model = calm::LlamaModel::load(checkpoint_fixtures().front());
  const std::vector<int> prompt = {1, 17, 42, 7, 99, 3};
  constexpr std::size_t kNew = 48;
  const Full full = full_decode(model, prompt, kNew);
  std::vector<int> right = prompt, wrong = prompt;
  right.insert(right.end(), full.tokens.begin(), full.tokens.end());
  for (int t : full.tokens) wrong.push_back((t + 1) % int(model->vocab_size()));
  calm::SpeculativeOptions so{.max_draft = 8};
  so.adaptive_gamma = true;
  so.acceptance_weight = 0.5;  // quick to move, for a short test
  using Spec = calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::Never,
                                        ScriptedDrafts>;
  // Prior 0.8, free drafts, c = 0.25: γ = 3 first (the hand-computed case above).
  Spec accepted(calm::LlamaSession(model), {}, {}, {}, so, {&right});
  CHECK(accepted.next_gamma(true) == 3);
  const auto up = accepted.generate(prompt, kNew);
  CHECK(up.tokens == full.tokens);
  CHECK(up.speculation.accepted == up.speculation.drafted);
  REQUIRE(up.speculation.gamma_rounds.size() == 9);  // the first round asked for 3, later 8
  CHECK(up.speculation.gamma_rounds[3] >= 1);
  CHECK(up.speculation.gamma_rounds[8] >= 1);
  CHECK(up.speculation.max_gamma() == 8);
  CHECK(accepted.next_gamma(true) == 8);
  CHECK(accepted.lookup_acceptance().acceptance()[7] > 0.95);

  Spec rejected(calm::LlamaSession(model), {}, {}, {}, so, {&wrong});
  const auto down = rejected.generate(prompt, kNew);
  CHECK(down.tokens == full.tokens);
  CHECK(down.speculation.accepted == 0);
  CHECK(down.speculation.max_gamma() == 3);
  CHECK(down.speculation.min_gamma() == 1);
  CHECK(rejected.next_gamma(true) == 1);
  CHECK(rejected.lookup_acceptance().acceptance()[0] < 0.01);
  CHECK(same_cache(rejected.backend(), full.decoder.backend()));
  // The fixed γ asks for 8 every round.
  Spec fixed(calm::LlamaSession(model), {}, {}, {}, {.max_draft = 8}, {&wrong});
  const auto still = fixed.generate(prompt, kNew);
  CHECK(still.speculation.max_gamma() == 8);  // less only in the last rounds (max_new_tokens)
  CHECK(still.speculation.gamma_rounds[8] + 8 >= still.speculation.rounds);
  CHECK(!still.speculation.adaptive_gamma);
  CHECK(fixed.next_gamma(true) == 8);
  // Starting again from the prior.
  rejected.reset_adaptation();
  CHECK(rejected.next_gamma(true) == 3);
}

TEST_CASE("adaptive gamma: the full model's greedy output for every draft source") {
  const std::vector<int> prompt = {1, 17, 42, 7, 99, 3};
  const calm::PromptLookup trigrams{.max_ngram = 3};
  for (const fs::path& dir : checkpoint_fixtures()) {
    CAPTURE(dir.filename().string());
    const auto model = calm::LlamaModel::load(dir);
    for (std::size_t e = 1; e <= model->num_layers(); ++e) {
      CAPTURE(e);
      check_exact_adaptive(model, prompt, 20, calm::NoConfidence{}, calm::StaticExit{e}, 6);
    }
    check_exact_adaptive(model, prompt, 20, calm::SoftmaxResponse{}, calm::ConstantThreshold{0.3f},
                         5);
    check_exact_adaptive(model, prompt, 20, calm::HiddenSaturation{},
                         calm::ConstantThreshold{0.5f}, 4);
    const std::vector<int> repeating = {1, 17, 42, 7, 17, 42, 7, 17, 42};
    check_exact_adaptive(model, repeating, 20, calm::NoConfidence{}, calm::Never{}, 8, {},
                         trigrams);
    check_exact_adaptive(model, repeating, 20, calm::NoConfidence{}, calm::StaticExit{1}, 4, {},
                         trigrams);
  }
  // The bundled model: its classifier (λ 0.8), softmax with a decaying threshold, static exits,
  // n-gram drafts alone and before the classifier on passages written twice, the classifier over
  // a sub-vocabulary of 256 tokens.
  const Bundled bundled;
  const auto& [model, classifier, o] = bundled;
  const auto prompts = bundled_test_prompts(calm::test::kSanitized ? 3 : 8);
  const calm::Tokenizer tok = calm::Tokenizer::load(kBundled / "tokenizer.model");
  const auto copying = calm::bench::copy_heavy_prompts(kBundled / "data" / "test.jsonl", tok,
                                                       calm::test::kSanitized ? 2 : 4, 2, 32,
                                                       model->max_context());
  std::vector<int> text;
  for (const auto& p : prompts) text.insert(text.end(), p.begin(), p.end());
  const auto head = std::make_shared<const calm::SubVocabularyHead>(
      model->weights().lm_head,
      calm::TokenFrequencies::count(text, model->vocab_size(), "test").top(256, o.stop_tokens));
  double tokens_per_round = 0.0;
  for (const auto& prompt : prompts) {
    const auto s = check_exact_adaptive(model, prompt, 32, classifier,
                                        calm::ConstantThreshold{0.8f}, 8, o);
    tokens_per_round += s.tokens_per_round();
    check_exact_adaptive(model, prompt, 32, calm::SoftmaxResponse{},
                         calm::DecayingThreshold{.lambda = 0.6f, .tau = 4.0f}, 6, o);
    check_exact_adaptive(model, prompt, 32, calm::NoConfidence{}, calm::StaticExit{3}, 6, o);
    check_exact_adaptive(model, prompt, 32, classifier, calm::ConstantThreshold{0.8f}, 6, o, {},
                         head);
  }
  MESSAGE("classifier 0.8, adaptive gamma up to 8: tokens per verification "
          << tokens_per_round / double(prompts.size()));
  CHECK(tokens_per_round / double(prompts.size()) > 1.5);
  for (const auto& prompt : copying) {
    const auto s = check_exact_adaptive(model, prompt, 32, calm::NoConfidence{}, calm::Never{}, 8,
                                        o, trigrams);
    CHECK(s.lookup_drafted == s.drafted);
    check_exact_adaptive(model, prompt, 32, classifier, calm::ConstantThreshold{0.8f}, 6, o,
                         trigrams);
  }
}

TEST_CASE("speculative sampling with adaptive gamma follows the full model's distribution") {
  // γ varies from round to round and carries over from one sample to the next, but it is chosen
  // before each round's draws: every sample is still the full model's.
  const auto model = calm::LlamaModel::load(checkpoint_fixtures().front());
  const std::vector<int> prompt = {1, 17, 42};
  constexpr std::size_t kSamples = 1000, kNew = 4;
  calm::SpeculativeOptions so{.max_draft = 3};
  so.adaptive_gamma = true;
  so.acceptance_weight = 0.25;
  so.cost.draft_token = 0.05;  // cheap drafts: γ moves over 1..3 with the acceptance
  calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> spec(
      calm::LlamaSession(model), {}, {1}, {}, so);
  calm::SpeculationStats total;
  const auto samples = speculative_samples(spec, prompt, kSamples, kNew, 1.0f, 0, total);
  MESSAGE("acceptance " << total.acceptance_rate() << ", gamma mean " << total.mean_gamma()
                        << " (" << total.min_gamma() << " to " << total.max_gamma() << ")");
  CHECK(total.max_gamma() > total.min_gamma());  // it did adapt
  calm::FullDecoder<calm::LlamaSession> full{calm::LlamaSession(model)};
  check_full_distribution(samples, full, prompt, kNew, 1.0f, 0);
}
