// The Llama backend against the independent PyTorch reference (tools/reference.py): every
// layer's residual state and the shared exit head's logits at every layer, for each fixture
// checkpoint under tests/fixtures/, and greedy generation token for token.
#include <calm/backends/llama/llama.hpp>
#include <calm/benchmark/fixtures.hpp>
#include <calm/benchmark/memory.hpp>
#include <calm/io/mapped_file.hpp>
#include <calm/io/safetensors.hpp>

#include <doctest/doctest.h>

#include "test_support.hpp"
#include "unit/test_models.hpp"
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

using calm::test::relative_error;

// Tolerances. The reference runs in float64 on the same (widened) weights; calm accumulates in
// f32, so the token-by-token path agrees to ~1e-6 relative. Prefill may round activations to
// bf16 for AVX-512 BF16 dot products (kernels/matmul.hpp), which costs ~3 significant digits.
constexpr double kDecodeTolerance = 2e-4;   // ||calm - ref|| / ||ref|| per token and layer
constexpr double kPrefillTolerance = 3e-2;  // same, through the matrix-matrix prefill

using Reference = calm::test::ReferenceDump;


// The committed fixtures, plus the model directories listed (':'-separated) in
// $CALM_REFERENCE_MODELS, e.g. the checkpoint the training smoke test exports.
std::vector<fs::path> reference_models() {
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(CALM_FIXTURES))
    if (fs::exists(e.path() / "reference.safetensors")) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  if (const char* extra = std::getenv("CALM_REFERENCE_MODELS")) {
    std::string list = extra;
    for (std::size_t start = 0; start <= list.size();) {
      const std::size_t end = std::min(list.find(':', start), list.size());
      if (end > start) {
        const fs::path dir = list.substr(start, end - start);
        REQUIRE_MESSAGE(fs::exists(dir / "reference.safetensors"), "no reference dump in " << dir);
        dirs.push_back(dir);
      }
      start = end + 1;
    }
  }
  return dirs;
}

}  // namespace

TEST_CASE("fixtures with reference dumps exist") { CHECK(reference_models().size() >= 2); }

TEST_CASE("every layer and every exit head match the PyTorch reference, token by token") {
  for (const fs::path& dir : reference_models()) {
    for (std::size_t threads : {1u, 2u}) {
      CAPTURE(dir.filename().string());
      CAPTURE(threads);
      const Reference ref(dir / "reference.safetensors");
      calm::LlamaSession model = calm::LlamaSession::load(dir, threads);
      const std::size_t L = model.num_layers();
      std::vector<float> x(model.hidden_size()), logits(model.vocab_size());
      for (std::size_t t = 0; t < ref.prompt.size(); ++t) {
        model.embed(ref.prompt[t], x);
        CHECK(relative_error(x, ref.row("hidden.0", t)) < kDecodeTolerance);
        for (std::size_t i = 0; i < L; ++i) {
          model.run_layer(i, x, t);
          const std::string layer = std::to_string(i + 1);
          CAPTURE(t);
          CAPTURE(layer);
          CHECK(relative_error(x, ref.row("hidden." + layer, t)) < kDecodeTolerance);
          model.exit_head(x, logits);
          CHECK(relative_error(logits, ref.row("logits." + layer, t)) < kDecodeTolerance);
        }
      }
    }
  }
}

TEST_CASE("prefill matches the reference and fills the same cache as token-by-token decoding") {
  for (const fs::path& dir : reference_models()) {
    CAPTURE(dir.filename().string());
    const Reference ref(dir / "reference.safetensors");
    calm::LlamaSession stepwise = calm::LlamaSession::load(dir);
    calm::LlamaSession batched = calm::LlamaSession::load(dir);
    const std::size_t L = stepwise.num_layers(), n = ref.prompt.size();
    std::vector<float> x(stepwise.hidden_size());
    for (std::size_t t = 0; t < n; ++t) {
      stepwise.embed(ref.prompt[t], x);
      for (std::size_t i = 0; i < L; ++i) stepwise.run_layer(i, x, t);
    }
    std::vector<float> last(batched.hidden_size());
    batched.prefill(ref.prompt, 0, last);
    CHECK(relative_error(last, ref.row("hidden." + std::to_string(L), n - 1)) < kPrefillTolerance);
    for (std::size_t i = 0; i < L; ++i)
      for (std::size_t t = 0; t < n; ++t) {
        const auto k1 = stepwise.k_at(i, t), k2 = batched.k_at(i, t);
        const auto v1 = stepwise.v_at(i, t), v2 = batched.v_at(i, t);
        CHECK(relative_error({k2.begin(), k2.end()}, {k1.begin(), k1.end()}) < kPrefillTolerance);
        CHECK(relative_error({v2.begin(), v2.end()}, {v1.begin(), v1.end()}) < kPrefillTolerance);
      }
  }
}

TEST_CASE("greedy generation reproduces the reference token for token") {
  for (const fs::path& dir : reference_models()) {
    CAPTURE(dir.filename().string());
    const Reference ref(dir / "reference.safetensors");
    calm::LlamaSession model = calm::LlamaSession::load(dir);
    std::vector<float> x(model.hidden_size()), logits(model.vocab_size());
    // Token by token (no prefill), so bf16 rounding of prefill activations cannot flip a choice.
    std::size_t pos = 0;
    auto step = [&](int token) {
      model.embed(token, x);
      for (std::size_t i = 0; i < model.num_layers(); ++i) model.run_layer(i, x, pos);
      model.exit_head(x, logits);
      ++pos;
    };
    for (int token : ref.prompt) step(token);
    std::vector<int> generated;
    for (std::size_t n = 0; n < ref.greedy.size(); ++n) {
      const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
      generated.push_back(static_cast<int>(best));
      step(generated.back());
    }
    CHECK(generated == ref.greedy);
  }
}

TEST_CASE("propagate_kv writes exactly the K/V that run_layer computes from the same state") {
  const fs::path dir = reference_models().front();
  calm::LlamaSession a = calm::LlamaSession::load(dir), b = calm::LlamaSession::load(dir);
  std::vector<float> x(a.hidden_size()), y(a.hidden_size());
  a.embed(5, x);
  y = x;
  a.run_layer(0, x, 0);  // fills layer 0's cache at position 0 from the embedding
  b.propagate_kv(0, y, 0);
  const auto ka = a.k_at(0, 0), kb = b.k_at(0, 0), va = a.v_at(0, 0), vb = b.v_at(0, 0);
  CHECK(std::equal(ka.begin(), ka.end(), kb.begin()));
  CHECK(std::equal(va.begin(), va.end(), vb.begin()));
}

TEST_CASE("bad use is refused with a clear error") {
  const fs::path dir = reference_models().front();
  calm::LlamaSession model = calm::LlamaSession::load(dir, 1, {.max_context = 8});
  std::vector<float> x(model.hidden_size());
  CHECK_THROWS_WITH_AS(model.embed(-1, x), doctest::Contains("outside the vocabulary"), calm::Error);
  CHECK_THROWS_WITH_AS(model.embed(int(model.vocab_size()), x), doctest::Contains("outside the vocabulary"), calm::Error);
  CHECK_THROWS_WITH_AS(model.run_layer(0, x, 8), doctest::Contains("context length"), calm::Error);
  std::vector<int> long_prompt(9, 1);
  CHECK_THROWS_WITH_AS(model.prefill(long_prompt, 0, x), doctest::Contains("exceeds the context"), calm::Error);
  CHECK_THROWS_AS(calm::LlamaSession::load(dir, 1, {.max_context = 1u << 30}), calm::Error);
  CHECK_THROWS_AS(calm::LlamaSession::load(fs::path(CALM_FIXTURES) / "no-such-model"), calm::Error);
}

TEST_CASE("weights copied to huge-page memory and weights read from the file mapping agree bit for bit") {
  for (const fs::path& dir : reference_models()) {
    CAPTURE(dir.filename().string());
    calm::LlamaSession copied = calm::LlamaSession::load(dir, 1, {.copy_weights = true});
    calm::LlamaSession mapped = calm::LlamaSession::load(dir, 1, {.copy_weights = false});
    CHECK(copied.model().weights().embed.data != mapped.model().weights().embed.data);
    std::vector<float> a(copied.hidden_size()), b(a.size());
    std::vector<float> la(copied.vocab_size()), lb(la.size());
    for (std::size_t pos = 0; pos < 4; ++pos) {
      copied.embed(int(7 + pos), a);
      mapped.embed(int(7 + pos), b);
      for (std::size_t i = 0; i < copied.num_layers(); ++i) {
        copied.run_layer(i, a, pos);
        mapped.run_layer(i, b, pos);
      }
      copied.exit_head(a, la);
      mapped.exit_head(b, lb);
      CHECK(a == b);
      CHECK(la == lb);
    }
  }
}

// The copy (or quantization) drops the file mapping's pages behind it, so the weights are
// resident once: without that the peak was 2.0x (copy) and 2.7x (q8_0) the weights in memory.
TEST_CASE("a checkpoint copied or quantized at load is resident once, not twice") {
  const calm::test::ScratchDir scratch("load_memory");
  const calm::bench::ModelShape shape{.name = "load-memory", .hidden = 512, .intermediate = 1408,
                                      .layers = 4, .heads = 8, .kv_heads = 4, .vocab = 2048};
  const fs::path dir = calm::bench::random_checkpoint(shape, scratch.path);  // 28 MB of bf16
  for (const calm::WeightFormat format :
       {calm::WeightFormat::file, calm::WeightFormat::q8_0, calm::WeightFormat::q4_0}) {
    CAPTURE(int(format));
    const std::size_t before = calm::bench::resident_bytes();
    const bool peak_reset = calm::bench::reset_peak_resident();
    const auto model = calm::LlamaModel::load(dir, {.max_context = 64, .weights = format});
    const double resident = double(model->resident_weight_bytes());
    const double slack = 4.0 * (1 << 20);  // one release chunk in flight, allocator, RoPE tables
#if defined(__SANITIZE_ADDRESS__)
    // AddressSanitizer's shadow of the mapping and the copy (1/8 of each) is resident too.
    const double factor = 1.0 + 2.0 / 8.0;
#else
    const double factor = 1.0;
#endif
    CHECK(double(calm::bench::resident_bytes()) - double(before) <= factor * 1.05 * resident + slack);
    if (peak_reset)
      CHECK(double(calm::bench::peak_resident_bytes()) - double(before) <=
            factor * 1.1 * resident + slack);
    // The model still decodes from its own copy.
    calm::LlamaSession session(model);
    std::vector<float> x(session.hidden_size());
    session.embed(3, x);
    session.run_layer(0, x, 0);
    CHECK(std::all_of(x.begin(), x.end(), [](float v) { return std::isfinite(v); }));
  }
}

// Frequencies computed by hand from the formulas (docs/design.md §10), for head_dim 16 and
// theta 500000: f_j = 500000^(-j/8); wavelengths 2π/f_j = 6.28, 32.4, 167.4, ...
TEST_CASE("rope_frequencies: plain, linear and llama3 scaling against hand-computed values") {
  calm::LlamaConfig c{};
  c.head_dim = 16;
  c.rope_theta = 500000.0f;
  const std::vector<float> base = calm::rope_frequencies(c);
  REQUIRE(base.size() == 8);
  for (std::size_t j = 0; j < 8; ++j)
    CHECK(base[j] == doctest::Approx(std::pow(500000.0, -static_cast<double>(j) / 8)).epsilon(1e-6));

  c.rope_scaling.type = calm::RopeScaling::Type::linear;
  c.rope_scaling.factor = 4.0f;
  const std::vector<float> linear = calm::rope_frequencies(c);
  for (std::size_t j = 0; j < 8; ++j) CHECK(linear[j] == doctest::Approx(base[j] / 4).epsilon(1e-6));

  // llama3 with C = 64, a = 1, b = 4: wavelengths below C/b = 16 keep their frequency (j = 0),
  // above C/a = 64 are divided by s = 8 (j >= 2), and j = 1 (wavelength 2π·500000^(1/8) =
  // 32.40) blends with μ = (64 / 32.40 − 1) / 3 = 0.3251: ratio (1 − μ)/8 + μ = 0.4095.
  c.rope_scaling = {calm::RopeScaling::Type::llama3, 8.0f, 1.0f, 4.0f, 64};
  const std::vector<float> llama3 = calm::rope_frequencies(c);
  CHECK(llama3[0] == base[0]);
  const double w1 = 2 * 3.14159265358979323846 / base[1];
  CHECK(w1 == doctest::Approx(32.40).epsilon(1e-3));
  const double mu = (64 / w1 - 1) / 3;
  CHECK(llama3[1] / base[1] == doctest::Approx((1 - mu) / 8 + mu).epsilon(1e-6));
  CHECK(llama3[1] / base[1] == doctest::Approx(0.4095).epsilon(1e-3));
  for (std::size_t j = 2; j < 8; ++j)
    CHECK(llama3[j] == doctest::Approx(base[j] / 8).epsilon(1e-6));

  // Llama 3.x itself (C = 8192, s = 32, head_dim 64, theta 500000): the blend band is
  // wavelengths 2048..8192, which holds 3 of the 32 frequencies; 15 are kept, 14 divided.
  c.head_dim = 64;
  c.rope_scaling = {calm::RopeScaling::Type::llama3, 32.0f, 1.0f, 4.0f, 8192};
  const std::vector<float> real = calm::rope_frequencies(c);
  const std::vector<float> real_base = calm::kernels::rope_inv_freq(64, 500000.0f);
  int kept = 0, divided = 0, blended = 0;
  for (std::size_t j = 0; j < real.size(); ++j) {
    const double ratio = static_cast<double>(real[j]) / real_base[j];
    if (ratio == 1.0) ++kept;
    else if (std::abs(ratio - 1.0 / 32) < 1e-7) ++divided;
    else ++blended;
    if (j > 0) CHECK(real[j] < real[j - 1]);  // still strictly decreasing
  }
  CHECK(kept == 15);
  CHECK(blended == 3);
  CHECK(divided == 14);
}

