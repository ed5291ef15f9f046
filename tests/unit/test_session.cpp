// calm::LlamaModel shared by calm::LlamaSession: sessions are independent (also on threads),
// continue and rewind, keep their model alive; the batched layer primitive against the
// one-token path. Fixture checkpoints (tests/fixtures) and the bundled model.
#include <calm/calm.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "unit/test_models.hpp"

namespace fs = std::filesystem;

namespace {

using calm::test::relative_error;
using calm::test::checkpoint_fixtures;

// Batched products (matmul) against the one-token path (matvec): same math, other summation
// order, and bf16-rounded activations where the host has AVX-512 BF16 dot products
// (kernels/matmul.hpp). The same bound as prefill against token-by-token decoding.
constexpr double kBatchTolerance = 3e-2;  // ||batched - one token|| / ||one token||

using calm::test::kBundled;


bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

const std::vector<int> kPrompt = {1, 17, 42, 7, 99, 3};

using Early = calm::Decoder<calm::LlamaSession, calm::SoftmaxResponse, calm::DecayingThreshold>;

}  // namespace

TEST_CASE("a session keeps its model alive, a decoder owns its session and may move") {
  const fs::path dir = checkpoint_fixtures().front();
  auto model = calm::LlamaModel::load(dir);
  const std::weak_ptr<const calm::LlamaModel> watch = model;
  Early early(calm::LlamaSession(std::move(model)), {}, {.lambda = 0.5f, .tau = 4.0f});
  CHECK(!watch.expired());  // only the session holds it now
  const auto a = early.generate(kPrompt, 6).tokens;
  Early moved = std::move(early);
  CHECK(moved.generate(kPrompt, 6).tokens == a);
  CHECK_THROWS_AS(calm::LlamaSession(nullptr), calm::Error);
}

TEST_CASE("the cache is written in order: gaps are refused, writing a position drops later ones") {
  calm::LlamaSession s = calm::LlamaSession::load(checkpoint_fixtures().front());
  std::vector<float> x(s.hidden_size());
  s.embed(5, x);
  CHECK_THROWS_WITH_AS(s.run_layer(0, x, 1), doctest::Contains("gap"), calm::Error);
  CHECK_THROWS_AS(s.prefill(kPrompt, 2, x), calm::Error);
  s.append(kPrompt, x);
  CHECK(s.length() == kPrompt.size());
  s.embed(5, x);
  s.run_layer(0, x, 2);  // layer 0 now ends at position 2
  CHECK(s.filled(0) == 3);
  CHECK(s.filled(1) == kPrompt.size());
  CHECK(s.length() == 3);
  CHECK_THROWS_AS(s.k_at(0, 3), calm::Error);
  CHECK_THROWS_AS(s.truncate(4), calm::Error);
  s.truncate(1);
  CHECK(s.length() == 1);
  CHECK_THROWS_AS(s.run_layers(1, 1, x, 1), calm::Error);  // empty layer range
  CHECK_THROWS_AS(s.run_layers(0, s.num_layers() + 1, x, 1), calm::Error);
}

TEST_CASE("run_layers over n tokens at consecutive positions matches the one-token path") {
  for (const fs::path& dir : checkpoint_fixtures()) {
    CAPTURE(dir.filename().string());
    const auto model = calm::LlamaModel::load(dir);
    calm::LlamaSession one(model), batch(model);
    const std::size_t h = model->hidden_size(), L = model->num_layers(), n = 5;
    std::vector<float> last(h);
    one.append(kPrompt, last);
    batch.append(kPrompt, last);
    // Layers [1, L) of 5 more tokens, from their states after layer 0 (computed in both
    // sessions from the same inputs, so layer 0's entries and the states agree bit for bit).
    calm::LlamaSession& b = batch;
    std::vector<float> states(n * h);
    for (std::size_t t = 0; t < n; ++t) {
      std::span<float> x(states.data() + t * h, h);
      std::vector<float> xb(h);
      one.embed(int(10 + t), x);
      one.embed(int(10 + t), xb);
      one.run_layer(0, x, kPrompt.size() + t);
      b.run_layer(0, xb, kPrompt.size() + t);
    }
    std::vector<float> batched = states;
    b.run_layers(1, L, batched, kPrompt.size());
    for (std::size_t t = 0; t < n; ++t) {
      std::span<float> x(states.data() + t * h, h);
      for (std::size_t i = 1; i < L; ++i) one.run_layer(i, x, kPrompt.size() + t);
    }
    CHECK(one.length() == kPrompt.size() + n);
    CHECK(b.length() == kPrompt.size() + n);
    for (std::size_t t = 0; t < n; ++t)
      CHECK(relative_error({batched.data() + t * h, h}, {states.data() + t * h, h}) <
            kBatchTolerance);
    for (std::size_t i = 0; i < L; ++i)
      for (std::size_t p = 0; p < kPrompt.size() + n; ++p) {
        CHECK(relative_error(b.k_at(i, p), one.k_at(i, p)) < kBatchTolerance);
        CHECK(relative_error(b.v_at(i, p), one.v_at(i, p)) < kBatchTolerance);
      }
  }
}

TEST_CASE("run_layers over n sessions at one position each matches each session alone") {
  for (const fs::path& dir : checkpoint_fixtures()) {
    CAPTURE(dir.filename().string());
    const auto model = calm::LlamaModel::load(dir);
    const std::size_t h = model->hidden_size(), L = model->num_layers();
    // Three sessions of different lengths, and their twins run one by one.
    std::vector<calm::LlamaSession> together, alone;
    std::vector<float> x(h);
    for (std::size_t i = 0; i < 3; ++i) {
      const std::vector<int> prompt(kPrompt.begin(), kPrompt.begin() + 2 + 2 * i);
      together.emplace_back(model).append(prompt, x);
      alone.emplace_back(model).append(prompt, x);
    }
    std::vector<float> rows(3 * h), want(3 * h);
    for (std::size_t i = 0; i < 3; ++i) {
      model->embed(int(20 + i), rows.data() + i * h);
      std::span<float> w(want.data() + i * h, h);
      model->embed(int(20 + i), w.data());
      for (std::size_t l = 0; l < L; ++l) alone[i].run_layer(l, w, alone[i].length());
    }
    std::vector<calm::LlamaSession*> ptrs{&together[0], &together[1], &together[2]};
    calm::LlamaSession::run_layers(ptrs, 0, L, rows);
    for (std::size_t i = 0; i < 3; ++i) {
      CAPTURE(i);
      CHECK(together[i].length() == alone[i].length());
      CHECK(relative_error({rows.data() + i * h, h}, {want.data() + i * h, h}) < kBatchTolerance);
      const std::size_t p = together[i].length() - 1;
      for (std::size_t l = 0; l < L; ++l)
        CHECK(relative_error(together[i].k_at(l, p), alone[i].k_at(l, p)) < kBatchTolerance);
    }
    // A session listed twice, or one of another model, is refused.
    std::vector<calm::LlamaSession*> twice{&together[0], &together[0]};
    std::vector<float> two(2 * h);
    CHECK_THROWS_AS(calm::LlamaSession::run_layers(twice, 0, L, two), calm::Error);
    calm::LlamaSession other(calm::LlamaModel::load(dir));
    std::vector<calm::LlamaSession*> mixed{&together[0], &other};
    CHECK_THROWS_AS(calm::LlamaSession::run_layers(mixed, 0, L, two), calm::Error);
  }
}

TEST_CASE("append after generate equals one long prefill") {
  for (const fs::path& dir : checkpoint_fixtures()) {
    CAPTURE(dir.filename().string());
    const auto model = calm::LlamaModel::load(dir);
    calm::FullDecoder<calm::LlamaSession> chat{calm::LlamaSession(model)};
    const auto first = chat.generate(kPrompt, 5).tokens;
    const std::vector<int> turn = {11, 12, 13};
    const auto second = chat.generate_more(turn, 4).tokens;
    REQUIRE(second.size() == 4);
    // The same sequence in one go: prompt, the generated tokens, the next turn.
    std::vector<int> all = kPrompt;
    all.insert(all.end(), first.begin(), first.end());
    all.insert(all.end(), turn.begin(), turn.end());
    calm::FullDecoder<calm::LlamaSession> once{calm::LlamaSession(model)};
    const auto again = once.generate(all, 4).tokens;
    CHECK(again == second);
    CHECK(chat.length() == once.length());
    const calm::LlamaSession& a = chat.backend();
    const calm::LlamaSession& b = once.backend();
    for (std::size_t l = 0; l < model->num_layers(); ++l)
      for (std::size_t p = 0; p < all.size(); ++p) {
        CHECK(relative_error(a.k_at(l, p), b.k_at(l, p)) < kBatchTolerance);
        CHECK(relative_error(a.v_at(l, p), b.v_at(l, p)) < kBatchTolerance);
      }
    CHECK(relative_error(chat.last_logits(), once.last_logits()) < kBatchTolerance);
  }
}

TEST_CASE("truncate, then regenerate: the same tokens and cache as a fresh decode, bit for bit") {
  const auto model = calm::LlamaModel::load(kBundled);
  const std::vector<int> prompt = {1, 30, 200, 45, 17, 99, 3, 250};
  // Full model: rewind into the generated part and feed the token that stood there.
  calm::FullDecoder<calm::LlamaSession> full{calm::LlamaSession(model)};
  const auto a = full.generate(prompt, 12).tokens;
  const std::size_t keep = prompt.size() + 5;  // a[0..4] stay cached
  full.rewind(keep);
  const auto b = full.generate_more(std::vector<int>{a[5]}, 12 - 6).tokens;
  CHECK(std::vector<int>(a.begin() + 6, a.end()) == b);
  calm::FullDecoder<calm::LlamaSession> fresh{calm::LlamaSession(model)};
  fresh.generate(prompt, 12);
  REQUIRE(fresh.length() == full.length());
  for (std::size_t l = 0; l < model->num_layers(); ++l)
    for (std::size_t p = 0; p < fresh.length(); ++p) {
      CHECK(same_bits(full.backend().k_at(l, p), fresh.backend().k_at(l, p)));
      CHECK(same_bits(full.backend().v_at(l, p), fresh.backend().v_at(l, p)));
    }
  // Early exits: a session reused after a long generation (truncated to 0 by start) decodes a
  // new prompt exactly as a new session does.
  Early reused(calm::LlamaSession(model), {}, {.lambda = 0.6f, .tau = 4.0f});
  reused.generate(std::vector<int>{1, 5, 9, 13, 200, 201}, 40);
  const auto r = reused.generate(prompt, 20);
  Early once(calm::LlamaSession(model), {}, {.lambda = 0.6f, .tau = 4.0f});
  const auto o = once.generate(prompt, 20);
  CHECK(r.tokens == o.tokens);
  for (std::size_t t = 0; t < r.tokens.size(); ++t)
    CHECK(r.report.tokens[t].exit_layer == o.report.tokens[t].exit_layer);
  CHECK(reused.length() == once.length());
  for (std::size_t l = 0; l < model->num_layers(); ++l)
    for (std::size_t p = 0; p < once.length(); ++p)
      CHECK(same_bits(reused.backend().k_at(l, p), once.backend().k_at(l, p)));
  reused.rewind(prompt.size());
  CHECK_THROWS_AS(reused.resume({}, 3), calm::Error);  // nothing to feed: no token is pending
}

TEST_CASE("one model, four sessions on four threads: each decodes as it does alone") {
  const auto model = calm::LlamaModel::load(kBundled);
  const std::vector<std::vector<int>> prompts = {
      {1, 30, 200, 45}, {1, 17, 99, 3, 250}, {1, 400, 12}, {1, 8, 8, 600, 31, 77}};
  std::vector<std::vector<int>> alone, threaded(prompts.size());
  std::vector<std::vector<std::size_t>> exits_alone, exits_threaded(prompts.size());
  for (const auto& p : prompts) {
    Early d(calm::LlamaSession(model), {}, {.lambda = 0.5f, .tau = 4.0f});
    const auto r = d.generate(p, 24);
    alone.push_back(r.tokens);
    exits_alone.emplace_back();
    for (const auto& t : r.report.tokens) exits_alone.back().push_back(t.exit_layer);
  }
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < prompts.size(); ++i)
    threads.emplace_back([&, i] {
      Early d(calm::LlamaSession(model), {}, {.lambda = 0.5f, .tau = 4.0f});
      for (int round = 0; round < 3; ++round) {  // overlap the sessions' lifetimes well
        const auto r = d.generate(prompts[i], 24);
        threaded[i] = r.tokens;
        exits_threaded[i].clear();
        for (const auto& t : r.report.tokens) exits_threaded[i].push_back(t.exit_layer);
      }
    });
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    CAPTURE(i);
    CHECK(threaded[i] == alone[i]);
    CHECK(exits_threaded[i] == exits_alone[i]);
  }
}

TEST_CASE("a context no memory holds is refused before the RoPE tables or the cache are allocated") {
  calm::LlamaConfig config = calm::load_llama_config(kBundled / "config.json");
  config.max_position_embeddings = std::size_t{1} << 60;
  const auto load = [&](std::size_t context) {
    return calm::LlamaModel::create(config, calm::io::Checkpoint::open(kBundled),
                                    {.max_context = context, .copy_weights = false});
  };
  std::string message;
  try {
    (void)load(1'000'000'000);
  } catch (const calm::Error& e) {
    message = e.what();
  }
  CHECK(message.find("max_context 1000000000") != std::string::npos);
  CHECK(message.find("MiB of memory") != std::string::npos);
  CHECK(message.find("--context") != std::string::npos);
  message.clear();
  try {
    (void)load(std::size_t{1} << 60);  // the bytes overflow size_t
  } catch (const calm::Error& e) {
    message = e.what();
  }
  CHECK(message.find("more bytes than size_t holds") != std::string::npos);
  CHECK(load(512)->max_context() == 512);
}
