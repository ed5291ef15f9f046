// What the weight-format tests share (test_q8_0, test_q4_0, test_bf16_dot, test_q8_0_dot): a
// model's decoding in a format against the float64 reference on the unquantized weights, the
// bundled model's test-split perplexity for any weight format, and speculation's exactness on it.
#pragma once

#include <calm/backends/llama/llama.hpp>
#include <calm/decoder.hpp>
#include <calm/schedule/static_exit.hpp>
#include <calm/io/prompts.hpp>
#include <calm/io/tokenizer.hpp>

#include <doctest/doctest.h>

#include "unit/test_models.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace calm::test {

// Per-layer states of a fixture's reference dump (tools/reference.py), as in test_llama.cpp.
using Reference = calm::test::ReferenceDump;

// The largest relative error of any token's state after any layer, and of any exit head's
// logits, decoding with `format` against the float64 reference (which runs on the file's
// weights).
struct Worst {
  double state = 0, logits = 0;
  std::vector<double> per_layer;  // worst state error after each layer, over the tokens
};

inline Worst quantized_error(const std::filesystem::path& dir, std::size_t threads,
                             calm::WeightFormat format) {
  const Reference ref(dir / "reference.safetensors");
  calm::LlamaSession s = calm::LlamaSession::load(dir, threads, {.weights = format});
  std::vector<float> x(s.hidden_size()), logits(s.vocab_size());
  Worst w;
  for (std::size_t t = 0; t < ref.prompt.size(); ++t) {
    s.embed(ref.prompt[t], x);
    for (std::size_t i = 0; i < s.num_layers(); ++i) {
      s.run_layer(i, x, t);
      const std::string layer = std::to_string(i + 1);
      const double e = calm::test::relative_error(x, ref.row("hidden." + layer, t));
      w.per_layer.resize(s.num_layers());
      w.per_layer[i] = std::max(w.per_layer[i], e);
      w.state = std::max(w.state, e);
      s.exit_head(x, logits);
      w.logits = std::max(w.logits, calm::test::relative_error(logits, ref.row("logits." + layer, t)));
    }
  }
  return w;
}

// Mean negative log-likelihood (nats per token) of the test split's continuations
// (models/shakespeare-8l/data/test.jsonl: each reference given its prompt, BOS first), with
// decode's numerics (Products::matvec) for any weight format; every `stride`-th prompt.
inline double test_split_nll(calm::WeightFormat format, std::size_t stride = 1) {
  const std::filesystem::path dir = std::filesystem::path(CALM_MODELS) / "shakespeare-8l";
  const auto model = calm::LlamaModel::load(dir, {.weights = format});
  const calm::Tokenizer tok = calm::Tokenizer::load_folder(dir);
  const calm::io::PromptFile file = calm::io::read_prompt_file(dir / "data" / "test.jsonl");
  calm::LlamaSession s(model);
  const std::size_t h = s.hidden_size(), vocab = s.vocab_size();
  double nll = 0;
  std::size_t count = 0;
  for (std::size_t i = 0; i < file.prompts.size(); i += stride) {
    const calm::io::PromptRecord& p = file.prompts[i];
    REQUIRE(p.reference.has_value());
    const std::vector<int> prompt = tok.encode(p.prompt);
    std::vector<int> all = prompt;
    const std::vector<int> cont = tok.encode(*p.reference, false);
    all.insert(all.end(), cont.begin(), cont.end());
    if (all.size() > s.max_context()) all.resize(s.max_context());
    const std::size_t n = all.size();
    std::vector<float> xs(n * h), logits(n * vocab);
    for (std::size_t t = 0; t < n; ++t) s.embed(all[t], std::span<float>(xs.data() + t * h, h));
    s.truncate(0);
    s.run_layers(0, s.num_layers(), xs, 0, calm::Products::matvec);
    s.exit_heads(xs, logits);
    for (std::size_t t = prompt.size() - 1; t + 1 < n; ++t) {  // logits at t predict all[t + 1]
      const float* l = logits.data() + t * vocab;
      double m = l[0], z = 0;
      for (std::size_t v = 1; v < vocab; ++v) m = std::max(m, double(l[v]));
      for (std::size_t v = 0; v < vocab; ++v) z += std::exp(double(l[v]) - m);
      nll += m + std::log(z) - double(l[all[t + 1]]);
      ++count;
    }
  }
  REQUIRE(count > 1000 / stride);
  return nll / double(count);
}

// Decodes every fixture checkpoint and the bundled model with `format` against the float64
// reference: the worst errors below the tolerance (`trained` for models/shakespeare-8l,
// `random` for the random-weight fixtures), above 1e-5 (the weights are quantized), and bitwise
// the same on 1 and 2 threads. The measured errors go out as MESSAGEs.
inline void check_against_reference(calm::WeightFormat format, const char* name, double random,
                                    double trained) {
  std::vector<std::filesystem::path> dirs = checkpoint_fixtures();
  dirs.push_back(std::filesystem::path(CALM_MODELS) / "shakespeare-8l");
  for (const std::filesystem::path& dir : dirs) {
    CAPTURE(dir.filename().string());
    const Worst one = quantized_error(dir, 1, format), two = quantized_error(dir, 2, format);
    std::string layers;
    for (double e : one.per_layer) layers.append(" ").append(std::to_string(e));
    MESSAGE(dir.filename().string() << ": " << std::string(name) << " vs float64 reference, worst relative error "
                                    << one.state << " (states), " << one.logits
                                    << " (logits); per layer:" << layers);
    const double tolerance = dir.filename() == "shakespeare-8l" ? trained : random;
    CHECK(one.state < tolerance);
    CHECK(one.logits < tolerance);
    CHECK(one.state > 1e-5);        // quantized: not the file's weights
    CHECK(two.state == one.state);  // bitwise independent of the thread count
    CHECK(two.logits == one.logits);
  }
}

// The bundled model in `format` (a dot-product format on `blocks`' blocks, formats::Id `id`)
// against the same model in `blocks`: its worst errors against the float64 reference below
// `state_factor` and `logits_factor` times `blocks`' (both go out as a MESSAGE), and exactly
// `blocks`' codes and scales in every layer matrix and the untied head; the embedding bf16.
inline void check_dot_on_blocks(calm::WeightFormat format, calm::formats::Id id,
                                calm::WeightFormat blocks, double state_factor,
                                double logits_factor) {
  const std::filesystem::path dir = std::filesystem::path(CALM_MODELS) / "shakespeare-8l";
  const Worst dot = quantized_error(dir, 1, format), plain_error = quantized_error(dir, 1, blocks);
  MESSAGE("shakespeare-8l: " << calm::formats::name(id) << " " << dot.state << " / " << dot.logits
                             << ", its blocks' format " << plain_error.state << " / "
                             << plain_error.logits << " (states / logits)");
  CHECK(dot.state < state_factor * plain_error.state);
  CHECK(dot.logits < logits_factor * plain_error.logits);
  const auto model = calm::LlamaModel::load(dir, {.weights = format});
  const auto plain = calm::LlamaModel::load(dir, {.weights = blocks});
  std::vector<std::pair<const calm::Linear*, const calm::Linear*>> pairs = {
      {&model->weights().lm_head, &plain->weights().lm_head}};
  for (std::size_t i = 0; i < model->weights().layers.size(); ++i) {
    const auto& l = model->weights().layers[i];
    const auto& p = plain->weights().layers[i];
    for (auto [a, b] : {std::pair{&l.q, &p.q}, {&l.k, &p.k}, {&l.v, &p.v}, {&l.o, &p.o},
                        {&l.gate, &p.gate}, {&l.up, &p.up}, {&l.down, &p.down}})
      pairs.emplace_back(a, b);
  }
  for (const auto& [mine, theirs] : pairs) {
    CHECK(mine->format == id);
    REQUIRE(mine->bytes() == theirs->bytes());
    CHECK(std::memcmp(mine->data, theirs->data, mine->data_bytes()) == 0);
    CHECK(std::memcmp(mine->scales, theirs->scales, mine->scale_bytes()) == 0);
  }
  CHECK(model->weights().embed.format == calm::formats::Id::bf16);
}

// The bundled model's test-split perplexity with `format` over bf16's (as stored), which must
// lie in [0.995, max_ratio]; both go out as a MESSAGE. Under the sanitizers every 8th prompt
// (about 700 scored tokens): the same path and bounds at an eighth of the time. The bounds are
// ratios of two formats on the same tokens; every 16th prompt was too few (q4_0 0.987 of bf16).
inline void check_perplexity(calm::WeightFormat format, const char* name, double max_ratio) {
  constexpr std::size_t stride = kSanitized ? 8 : 1;
  const double bf16 = test_split_nll(calm::WeightFormat::file, stride);
  const double quantized = test_split_nll(format, stride);
  MESSAGE("test-split perplexity: bf16 " << std::exp(bf16) << ", " << std::string(name) << " "
                                          << std::exp(quantized) << " (mean NLL " << bf16
                                          << " vs " << quantized << " nats)");
  CHECK(std::exp(quantized) / std::exp(bf16) < max_ratio);
  CHECK(std::exp(quantized) / std::exp(bf16) > 0.995);
}

// Speculative greedy decoding (static drafts at layer 3, γ 2, 4, 8) on the bundled model loaded
// in `format`: the full model's tokens and cache, bit for bit -- what a format whose rows of a
// batch equal the row alone (bf16_dot, q8_0_dot) must give.
inline void check_speculation_exact(calm::WeightFormat format) {
  const auto model = calm::LlamaModel::load(std::filesystem::path(CALM_MODELS) / "shakespeare-8l",
                                            {.weights = format});
  const std::vector<int> prompt = {1, 17, 42, 7, 99, 3, 17, 42};
  calm::FullDecoder<calm::LlamaSession> full{calm::LlamaSession(model)};
  const auto want = full.generate(prompt, 40).tokens;
  for (std::size_t gamma : {2u, 4u, 8u}) {
    CAPTURE(gamma);
    calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> spec(
        calm::LlamaSession(model), {}, calm::StaticExit{3}, {}, {.max_draft = gamma});
    CHECK(spec.generate(prompt, 40).tokens == want);
    CHECK(same_cache(spec.backend(), full.backend()));
  }
}

}  // namespace calm::test
