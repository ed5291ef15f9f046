// calm::Decoder on calm::LlamaSession with the fixture checkpoints (tests/fixtures/*/config.json):
// implementation-independent properties of docs/design.md §4-§5, checked against plain loops over the
// backend's per-layer API. Extra model folders can be added with CALM_TEST_MODELS=dir1:dir2.
#include <calm/backends/llama/llama.hpp>
#include <calm/confidence/candidate_softmax.hpp>
#include <calm/confidence/hidden_saturation.hpp>
#include <calm/confidence/softmax_response.hpp>
#include <calm/decoder.hpp>
#include <calm/kernels/argmax.hpp>
#include <calm/schedule/constant.hpp>
#include <calm/schedule/never.hpp>
#include <calm/schedule/static_exit.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "unit/test_models.hpp"

namespace fs = std::filesystem;

static_assert(calm::TransformerBackend<calm::LlamaSession>);

namespace {

using calm::test::same_cache;

std::vector<fs::path> models() {
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(CALM_FIXTURES))
    if (fs::exists(e.path() / "config.json")) dirs.push_back(e.path());
  if (const char* extra = std::getenv("CALM_TEST_MODELS")) {
    std::string s = extra;
    for (std::size_t a = 0, b; a <= s.size(); a = b + 1) {
      b = s.find(':', a);
      if (b == std::string::npos) b = s.size();
      if (b > a) dirs.emplace_back(s.substr(a, b - a));
    }
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

const std::vector<int> kPrompt = {1, 17, 42, 7, 99, 3};

// Greedy decode where every fed token runs layers 1..exit (1-based) and the skipped layers are
// filled per docs/design.md §5 by hand. Returns tokens; exit_states[t] = state of the t-th fed token.
std::vector<int> plain_decode(calm::LlamaSession& m, std::size_t n, std::size_t exit, bool true_cache,
                              std::vector<std::vector<float>>* exit_states = nullptr) {
  std::vector<float> x(m.hidden_size()), logits(m.vocab_size());
  m.prefill(kPrompt, 0, x);
  m.exit_head(x, logits);
  std::vector<int> tokens{int(calm::kernels::scalar::argmax(logits.data(), logits.size()))};
  for (std::size_t pos = kPrompt.size(); tokens.size() < n; ++pos) {
    m.embed(tokens.back(), x);
    for (std::size_t i = 0; i < exit; ++i) m.run_layer(i, x, pos);
    if (true_cache) {
      std::vector<float> copy = x;
      for (std::size_t k = exit; k < m.num_layers(); ++k) m.run_layer(k, copy, pos);
    } else {
      for (std::size_t k = exit; k < m.num_layers(); ++k) m.propagate_kv(k, x, pos);
    }
    if (exit_states) exit_states->push_back(x);
    m.exit_head(x, logits);
    tokens.push_back(int(calm::kernels::scalar::argmax(logits.data(), logits.size())));
  }
  return tokens;
}


template <class C, class S>
std::vector<int> decode(calm::LlamaSession& m, C c, S s, std::size_t n, calm::DecoderOptions o = {}) {
  calm::Decoder<calm::LlamaSession&, C, S> dec(m, c, s, o);
  return dec.generate(kPrompt, n).tokens;
}

}  // namespace

TEST_CASE("fixture models exist") { CHECK(!models().empty()); }

TEST_CASE("Never, unreachable thresholds and static exit at L are the full model") {
  for (const fs::path& dir : models()) {
    CAPTURE(dir.string());
    calm::LlamaSession ref = calm::LlamaSession::load(dir);
    const std::size_t L = ref.num_layers();
    const std::vector<int> full = plain_decode(ref, 12, L, false);
    calm::LlamaSession m = calm::LlamaSession::load(dir);
    CHECK(decode(m, calm::SoftmaxResponse{}, calm::Never{}, 12) == full);
    CHECK(same_cache(m, ref, kPrompt.size() + 11));
    CHECK(decode(m, calm::SoftmaxResponse{}, calm::ConstantThreshold{1.01f}, 12) == full);
    CHECK(decode(m, calm::HiddenSaturation{}, calm::ConstantThreshold{1.5f}, 12) == full);
    CHECK(decode(m, calm::SoftmaxResponse{}, calm::StaticExit{L}, 12) == full);
    CHECK(same_cache(m, ref, kPrompt.size() + 11));
  }
}

TEST_CASE("after an exit at layer i, each skipped layer's K/V is what it computes from d^i") {
  for (const fs::path& dir : models()) {
    CAPTURE(dir.string());
    calm::LlamaSession m = calm::LlamaSession::load(dir), ref = calm::LlamaSession::load(dir),
                direct = calm::LlamaSession::load(dir);
    const std::size_t exit = 1;
    std::vector<std::vector<float>> states;
    CHECK(decode(m, calm::SoftmaxResponse{}, calm::StaticExit{exit}, 8) ==
          plain_decode(ref, 8, exit, false, &states));
    // A layer's K/V at pos depend only on its input there; `direct` just needs cache entries
    // before pos to attend to (any tokens will do), and writing layer k at pos keeps pos + 1.
    std::vector<float> scratch(direct.hidden_size());
    direct.prefill(std::vector<int>(kPrompt.size() + states.size(), 1), 0, scratch);
    for (std::size_t t = 0; t < states.size(); ++t) {
      const std::size_t pos = kPrompt.size() + t;
      for (std::size_t k = exit; k < m.num_layers(); ++k) {
        // run_layer writes layer k's K/V at pos from its input before anything else.
        std::vector<float> x = states[t];
        direct.run_layer(k, x, pos);
        const auto a = m.k_at(k, pos), b = direct.k_at(k, pos);
        const auto va = m.v_at(k, pos), vb = direct.v_at(k, pos);
        CHECK(std::equal(a.begin(), a.end(), b.begin()));
        CHECK(std::equal(va.begin(), va.end(), vb.begin()));
      }
    }
  }
}

TEST_CASE("true_cache fills the same cache as the full model over the same tokens") {
  for (const fs::path& dir : models()) {
    CAPTURE(dir.string());
    calm::LlamaSession m = calm::LlamaSession::load(dir), full = calm::LlamaSession::load(dir);
    calm::DecoderOptions o;
    o.propagation = calm::Propagation::true_cache;
    const std::vector<int> out = decode(m, calm::SoftmaxResponse{}, calm::StaticExit{2}, 8, o);
    std::vector<float> x(full.hidden_size());
    full.prefill(kPrompt, 0, x);
    for (std::size_t t = 0; t + 1 < out.size(); ++t) {
      full.embed(out[t], x);
      for (std::size_t i = 0; i < full.num_layers(); ++i)
        full.run_layer(i, x, kPrompt.size() + t);
    }
    CHECK(same_cache(m, full, kPrompt.size() + out.size() - 1));
  }
}

TEST_CASE("lm_head_rows gives each listed token the bits of lm_head, candidate softmax decodes") {
  for (const fs::path& dir : models()) {
    for (const auto weights :
         {calm::WeightFormat::file, calm::WeightFormat::q8_0, calm::WeightFormat::q4_0,
          calm::WeightFormat::bf16_dot, calm::WeightFormat::q8_0_dot, calm::WeightFormat::q4_0_dot}) {
      CAPTURE(dir.string());
      CAPTURE(int(weights));
      calm::LlamaOptions options;
      options.weights = weights;
      std::shared_ptr<const calm::LlamaModel> model;
      try {
        model = calm::LlamaModel::load(dir, options);
      } catch (const calm::Error&) {
        REQUIRE(weights != calm::WeightFormat::file);  // a fixture without whole blocks of 32
        continue;
      }
      calm::LlamaSession m(model);
      const std::size_t V = m.vocab_size(), d = m.hidden_size();
      std::vector<float> x(d), normed(d), logits(V);
      m.prefill(kPrompt, 0, x);
      m.final_norm(x, normed);
      m.lm_head(normed, logits);
      const std::vector<std::uint32_t> rows = {std::uint32_t(V - 1), 0, 3, 3, std::uint32_t(V / 2)};
      std::vector<float> got(rows.size());
      m.lm_head_rows(normed, rows, got);
      for (std::size_t k = 0; k < rows.size(); ++k)
        CHECK(std::memcmp(&got[k], &logits[rows[k]], sizeof(float)) == 0);
      // k = V: the softmax response itself, token for token.
      calm::LlamaSession a(model), b(model);
      for (float lambda : {0.3f, 0.6f}) {
        CAPTURE(lambda);
        CHECK(decode(b, calm::CandidateSoftmax{V}, calm::ConstantThreshold{lambda}, 12) ==
              decode(a, calm::SoftmaxResponse{}, calm::ConstantThreshold{lambda}, 12));
        CHECK(same_cache(a, b, kPrompt.size() + 11));
      }
    }
  }
}
