// The bundled model (models/shakespeare-8l): its files are there and consistent, it matches its
// float64 PyTorch reference dump, and it models its held-out test text (perplexity bound).
#include <calm/backends/llama/llama.hpp>
#include <calm/calibrate/calibration_json.hpp>
#include <calm/confidence/exit_classifier.hpp>
#include <calm/decoder.hpp>
#include <calm/policy_registry.hpp>
#include <calm/io/safetensors.hpp>
#include <calm/io/tokenizer.hpp>
#include <calm/schedule/decaying.hpp>

#include <doctest/doctest.h>
#include "test_support.hpp"
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

// Measured 36.88 (5502 reference tokens of data/test.jsonl) with the committed weights (weighted
// exit loss + self-distillation, models/shakespeare-8l/README.md); the previous bundled model
// (weighted exit loss only) measured 37.37. A retrained model must not be a worse language model.
// Under the sanitizers every 4th row (1412 tokens), whose perplexity measured 36.19: its bound
// keeps the same 1.4% margin.
constexpr std::size_t kPerplexityStride = calm::test::kSanitized ? 4 : 1;
constexpr double kPerplexityBound = calm::test::kSanitized ? 36.7 : 37.4;

const fs::path kModel = fs::path(CALM_MODELS) / "shakespeare-8l";

std::vector<nlohmann::json> read_jsonl(const fs::path& file) {
  std::ifstream in(file);
  REQUIRE_MESSAGE(in.good(), "cannot read " << file);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(calm::test::parse_json(line));
  return rows;
}

double max_abs_diff(const float* a, const float* b, std::size_t n) {
  double m = 0;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

}  // namespace

TEST_CASE("the bundled model's files are present and within the size budget") {
  std::uintmax_t total = 0;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "calm.safetensors",
                        "calm_calibration.json", "README.md", "data/calibration.jsonl",
                        "data/test.jsonl"}) {
    CAPTURE(f);
    REQUIRE(fs::is_regular_file(kModel / f));
  }
  for (const auto& e : fs::recursive_directory_iterator(kModel))
    if (e.is_regular_file()) total += e.file_size();
  CHECK(total <= 16u * 1024 * 1024);  // the bundled model stays at most 16 MB in the repo
}

TEST_CASE("the committed calibration and classifier belong to these weights") {
  const auto record = calm::calibrate::read_calibration_json(kModel / "calm_calibration.json");
  CHECK(record.model_fingerprint == calm::calibrate::model_fingerprint(kModel));
  CHECK(record.result.lambda_star.has_value());
  CHECK(record.decoding.has_value());  // format version 2: the decoding it certifies is recorded
  if (record.measure == "classifier")  // and the classifier it was computed with
    CHECK(record.measure_fingerprint ==
          calm::calibrate::file_fingerprint(kModel / "calm.safetensors"));
  const calm::LlamaSession model = calm::LlamaSession::load(kModel);
  CHECK_NOTHROW(calm::ExitClassifier::load(kModel / "calm.safetensors", model.hidden_size()));
}

// Tolerance: the dump is float64 from the bf16 weights; calm computes in f32. Max |x| of the
// states is ~32; observed float32-vs-float64 differences are ~1e-5 (tools/README.md).
TEST_CASE("every layer of the bundled model matches its float64 reference, and greedy decoding too") {
  const auto ref = calm::io::SafeTensorsFile::open(kModel / "reference.safetensors");
  const auto meta = ref.metadata();
  const auto prompt = calm::test::parse_json(meta.at("prompt_tokens")).get<std::vector<int>>();
  const auto greedy = calm::test::parse_json(meta.at("greedy_tokens")).get<std::vector<int>>();
  calm::LlamaSession model = calm::LlamaSession::load(kModel);
  const std::size_t h = model.hidden_size(), V = model.vocab_size(), L = model.num_layers();
  std::vector<float> x(h), logits(V);
  std::size_t pos = 0;
  for (; pos < prompt.size(); ++pos) {
    model.embed(prompt[pos], x);
    for (std::size_t i = 0; i < L; ++i) {
      model.run_layer(i, x, pos);
      CAPTURE(pos);
      CAPTURE(i);
      const float* want = ref.find("hidden." + std::to_string(i + 1))->as<float>() + pos * h;
      CHECK(max_abs_diff(x.data(), want, h) < 1e-3);
      model.exit_head(x, logits);
      const float* want_logits = ref.find("logits." + std::to_string(i + 1))->as<float>() + pos * V;
      CHECK(max_abs_diff(logits.data(), want_logits, V) < 1e-3);
    }
  }
  // Greedy continuation, token by token; the reference reruns the full sequence each step.
  std::vector<int> got;
  for (std::size_t n = 0; n < greedy.size(); ++n, ++pos) {
    got.push_back(int(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    model.embed(got.back(), x);
    for (std::size_t i = 0; i < L; ++i) model.run_layer(i, x, pos);
    model.exit_head(x, logits);
  }
  CHECK(got == greedy);
}

// Perplexity of the full model on the test split's references, given their prompts. Measured
// 2026-11-24: 37.4; the bound leaves 15% headroom for a retrained model, while a
// model that did not learn (a uniform one scores 1024) or a broken backend fails it.
TEST_CASE("the bundled model's perplexity on the test split is below the stated bound") {
  const calm::Tokenizer tok = calm::Tokenizer::load(kModel / "tokenizer.model");
  calm::LlamaSession model = calm::LlamaSession::load(kModel);
  std::vector<float> x(model.hidden_size()), logits(model.vocab_size());
  double nll = 0;
  std::size_t count = 0;
  const std::vector<nlohmann::json> rows = read_jsonl(kModel / "data" / "test.jsonl");
  for (std::size_t r = 0; r < rows.size(); r += kPerplexityStride) {
    const nlohmann::json& row = rows[r];
    std::vector<int> tokens = tok.encode(row.at("prompt").get<std::string>());
    const std::size_t n_prompt = tokens.size();
    for (int t : tok.encode(row.at("reference").get<std::string>(), /*add_bos=*/false)) tokens.push_back(t);
    if (tokens.size() > model.max_context()) continue;
    for (std::size_t pos = 0; pos + 1 < tokens.size(); ++pos) {
      model.embed(tokens[pos], x);
      for (std::size_t i = 0; i < model.num_layers(); ++i) model.run_layer(i, x, pos);
      if (pos + 1 < n_prompt) continue;  // score only the reference tokens
      model.exit_head(x, logits);
      const float m = *std::max_element(logits.begin(), logits.end());
      double z = 0;
      for (float l : logits) z += std::exp(double(l) - m);
      nll += std::log(z) + m - logits[tokens[pos + 1]];
      ++count;
    }
  }
  REQUIRE(count > 1000 / kPerplexityStride);
  const double perplexity = std::exp(nll / double(count));
  MESSAGE("test-split perplexity " << perplexity << " over " << count << " tokens");
  CHECK(perplexity < kPerplexityBound);
}

TEST_CASE("decoding at the calibrated threshold exits early and yields text") {
  const calm::Tokenizer tok = calm::Tokenizer::load(kModel / "tokenizer.model");
  calm::LlamaSession model = calm::LlamaSession::load(kModel);
  // The policy the shipped calibration certifies, looked up by name as calm-generate does.
  const auto record = calm::calibrate::read_calibration_json(kModel / "calm_calibration.json");
  const std::optional<calm::PolicySpec> policy = calm::calibrated_policy(record);
  REQUIRE(policy.has_value());
  const calm::PolicyContext context{kModel, model.hidden_size()};
  calm::PolicyRegistry<>::with_decoder(model, *policy, context, [&](auto&& decoder) {
    const auto result = decoder.generate(tok.encode("ROMEO:\n"), 48);
    CHECK(result.tokens.size() == 48);
    CHECK(result.report.average_layers() < double(model.num_layers()));
    const std::string text = tok.decode(result.tokens);
    MESSAGE(record.measure << " at lambda " << policy->lambda << ": " << text);
    CHECK(text.size() > 40);
  });
}
