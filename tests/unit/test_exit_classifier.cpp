// The exit classifier's kinds, its file format (version 1 and 2) and its training
// (docs/design.md §3c). Values computed by hand (Python, double) or against finite differences.
#include "test_support.hpp"

#include <calm/confidence/exit_classifier.hpp>
#include <calm/confidence/exit_classifier_training.hpp>
#include <calm/io/safetensors.hpp>
#include <calm/io/safetensors_writer.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>

namespace {

namespace fs = std::filesystem;
namespace tr = calm::exit_classifier_training;

// The mlp of the hand-computed case: hidden 2, 2 units, inputs (normed0, normed1, i/L, cos,
// log rms).
calm::ExitClassifier small_mlp() {
  return calm::ExitClassifier::mlp(2,
                                   {1.0f, 1.0f, 2.0f, 0.0f, 0.0f,    // a0 = n0 + n1 + 2 i/L + 0.1
                                    0.0f, 0.0f, 0.0f, 1.0f, -1.0f},  // a1 = cos - log rms
                                   {0.1f, 0.0f}, {1.5f, -2.0f}, -0.5f);
}

std::vector<float> to_vector(std::span<const float> s) { return {s.begin(), s.end()}; }

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

using Meta = std::map<std::string, std::string>;

const Meta kMlpMeta = {{"format", "calm-exit-classifier"},
                       {"version", "2"},
                       {"kind", "mlp"},
                       {"features", "normed_state,layer_fraction,cosine_previous,log_rms"},
                       {"hidden_units", "2"},
                       {"activation", "silu"}};

struct Tensor {
  std::string name;
  std::vector<std::size_t> shape;
  std::vector<float> values;
};

// A safetensors file written as given (F32), bypassing ExitClassifier::save's checks.
void write_raw(const fs::path& file, const std::vector<Tensor>& tensors, const Meta& meta) {
  std::vector<calm::io::TensorToWrite> w;
  for (const Tensor& t : tensors)
    w.push_back({t.name, calm::DType::f32, t.shape, std::as_bytes(std::span(t.values))});
  calm::io::write_safetensors(file, w, meta);
}

// The tensors of small_mlp() as save writes them.
std::vector<Tensor> small_mlp_tensors() {
  const calm::ExitClassifier c = small_mlp();
  return {{"calm.exit_classifier.fc1.weight", {2, 5}, to_vector(c.weight())},
          {"calm.exit_classifier.fc1.bias", {2}, to_vector(c.fc1_bias())},
          {"calm.exit_classifier.fc2.weight", {1, 2}, to_vector(c.fc2_weight())},
          {"calm.exit_classifier.fc2.bias", {1}, {c.fc2_bias()}}};
}

}  // namespace

static_assert(calm::ConfidenceMeasure<calm::ExitClassifier>);
static_assert(!calm::ExitClassifier::needs_logits);
static_assert(calm::traits::needs_normed_state<calm::ExitClassifier>());
static_assert(calm::traits::needs_previous_state<calm::ExitClassifier>());

TEST_CASE("exit classifier mlp: sigmoid(w2 . silu(W1 f + b1) + b2) against a hand value") {
  const calm::ExitClassifier c = small_mlp();
  CHECK(c.kind() == calm::ExitClassifierKind::mlp);
  CHECK(c.hidden_size() == 2);
  CHECK(c.hidden_units() == 2);
  CHECK(c.num_inputs() == 5);
  CHECK(c.num_parameters() == 10 + 2 + 2 + 1);
  // The mlp reads the previous exit point's state (its cosine); the linear kind does not, and
  // the decoder copies none for it.
  CHECK(calm::traits::uses_previous_state(c));
  const float bias[2] = {0.0f, 0.0f};
  CHECK(!calm::traits::uses_previous_state(calm::ExitClassifier({1.0f, 0.0f, 0.0f, 1.0f}, bias)));
  const std::vector<float> state = {3.0f, 4.0f}, previous = {4.0f, 3.0f}, normed = {0.2f, -0.4f};
  calm::ExitSignal s;
  s.layer = 2;
  s.num_layers = 4;
  s.state = state;
  s.previous_state = previous;
  s.normed_state = normed;
  // i/L = 0.5, cos = 24/25, log rms = 0.5 ln 12.5 = 1.2628643: a0 = 0.9, a1 = -0.3028643,
  // z = -0.5 + 1.5 silu(0.9) - 2 silu(-0.3028643) = 0.7171301, sigmoid = 0.6719747.
  float extras[3];
  calm::exit_features(s, extras);
  CHECK(extras[0] == 0.5f);
  CHECK(extras[1] == doctest::Approx(0.96).epsilon(1e-6));
  CHECK(extras[2] == doctest::Approx(1.2628643).epsilon(1e-6));
  CHECK(c.score(s) == doctest::Approx(0.6719747).epsilon(1e-5));
  // The same value from a training row (what calm-train-classifier records).
  const std::vector<float> row = {0.2f, -0.4f, extras[0], extras[1], extras[2]};
  CHECK(c.score_row(row) == c.score(s));
  // The first exit point has no previous state: cos = 0, a1 = -1.2628643, score 0.7343210.
  s.previous_state = {};
  CHECK(c.score(s) == doctest::Approx(0.7343210).epsilon(1e-5));
  // Sizes that do not match the classifier never exit.
  const std::vector<float> three = {0.1f, 0.2f, 0.3f};
  calm::ExitSignal wrong = s;
  wrong.normed_state = three;
  CHECK(c.score(wrong) == 0.0f);
  wrong = s;
  wrong.state = three;
  CHECK(c.score(wrong) == 0.0f);
  CHECK(calm::ExitClassifier{}.score(s) == 0.0f);  // unconfigured
  CHECK_THROWS_AS(calm::ExitClassifier::mlp(2, {1.0f}, {0.0f}, {1.0f}, 0.0f), calm::Error);
  CHECK_THROWS_AS(calm::ExitClassifier::mlp(2, {}, {}, {}, 0.0f), calm::Error);
}

TEST_CASE("exit classifier mlp: a NaN or infinite state never allows an exit") {
  const calm::ExitClassifier c = small_mlp();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> good = {3.0f, 4.0f}, good_normed = {0.2f, -0.4f};
  for (const std::vector<float>& bad : std::vector<std::vector<float>>{
           {nan, 0.0f}, {inf, 1.0f}, {-inf, 1.0f}, {inf, -inf}}) {
    CAPTURE(bad[0]);
    CAPTURE(bad[1]);
    calm::ExitSignal s;
    s.layer = 2;
    s.num_layers = 4;
    s.state = good;
    s.previous_state = good;
    s.normed_state = bad;  // a non-finite normed state
    CHECK(c.score(s) == 0.0f);
    s.normed_state = good_normed;
    s.state = bad;  // the pre-norm state feeds the cosine and the rms
    CHECK(c.score(s) == 0.0f);
    s.state = good;
    s.previous_state = bad;
    CHECK(c.score(s) == 0.0f);
  }
  // An all-zero state is finite: log rms = 0.5 ln 1e-12, no -inf.
  const std::vector<float> zero = {0.0f, 0.0f};
  calm::ExitSignal s;
  s.layer = 1;
  s.num_layers = 4;
  s.state = zero;
  s.normed_state = zero;
  float extras[3];
  calm::exit_features(s, extras);
  CHECK(std::isfinite(extras[2]));
}

TEST_CASE("exit classifier file: version 1 (no __metadata__) still loads as linear") {
  // The committed classifier of the bundled model is version 2 (the mlp); version 1 is the
  // file below, written as the first bundled classifier was (no __metadata__).
  const fs::path bundled = fs::path(CALM_MODELS) / "shakespeare-8l" / "calm.safetensors";
  CHECK(calm::io::SafeTensorsFile::open(bundled).metadata().at("version") == "2");
  const calm::ExitClassifier b = calm::ExitClassifier::load(bundled, 192);
  CHECK(b.kind() == calm::ExitClassifierKind::mlp);
  CHECK(b.hidden_size() == 192);

  const calm::test::ScratchDir dir("exit_classifier_v1");
  const fs::path file = dir.path / "calm.safetensors";
  const std::vector<float> w = {1.0f, -2.0f, 3.5f, 0.5f, 0.0f, -1.0f};  // (2, 3)
  write_raw(file, {{"calm.exit_classifier.weight", {2, 3}, w},
                   {"calm.exit_classifier.bias", {2}, {-0.25f, 0.75f}}},
            {});
  const calm::ExitClassifier c = calm::ExitClassifier::load(file, 3);
  CHECK(c.kind() == calm::ExitClassifierKind::linear);
  CHECK(to_vector(c.weight()) == w);
  CHECK(c.bias()[1] == 0.75f);
  CHECK_ERROR_NAMES(calm::ExitClassifier::load(file, 4), file.string(),
                    "calm.exit_classifier.weight", "[2, 4]");
}

TEST_CASE("exit classifier file: version 2 linear and mlp round-trip bit-exactly") {
  const calm::test::ScratchDir dir("exit_classifier_v2");
  const fs::path file = dir.path / "calm.safetensors";
  // Values that do not survive a decimal or f16 round trip.
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> lw(2 * 7);
  for (float& x : lw) x = normal(rng);
  const float lb[2] = {normal(rng), normal(rng)};
  const calm::ExitClassifier linear(lw, lb);
  linear.save(file);
  const auto lfile = calm::io::SafeTensorsFile::open(file);
  const auto& lmeta = lfile.metadata();
  CHECK(lmeta.at("format") == "calm-exit-classifier");
  CHECK(lmeta.at("version") == "2");
  CHECK(lmeta.at("kind") == "linear");
  CHECK(lmeta.size() == 3);
  const calm::ExitClassifier l2 = calm::ExitClassifier::load(file, 7);
  CHECK(l2.kind() == calm::ExitClassifierKind::linear);
  CHECK(same_bits(l2.weight(), linear.weight()));
  CHECK(same_bits(l2.bias(), linear.bias()));

  const std::size_t h = 7, units = 5;
  std::vector<float> w1(units * (h + 3)), b1(units), w2(units);
  for (float& x : w1) x = normal(rng);
  for (float& x : b1) x = normal(rng);
  for (float& x : w2) x = normal(rng);
  const float b2 = normal(rng);
  const calm::ExitClassifier mlp = calm::ExitClassifier::mlp(h, w1, b1, w2, b2);
  mlp.save(file);
  const auto st = calm::io::SafeTensorsFile::open(file);
  CHECK(st.metadata().at("kind") == "mlp");
  CHECK(st.metadata().at("hidden_units") == "5");
  CHECK(st.metadata().at("features") == "normed_state,layer_fraction,cosine_previous,log_rms");
  CHECK(st.metadata().at("activation") == "silu");
  CHECK(st.find("calm.exit_classifier.fc2.weight")->shape == std::vector<std::size_t>{1, 5});
  const calm::ExitClassifier m2 = calm::ExitClassifier::load(file, h);
  CHECK(m2.kind() == calm::ExitClassifierKind::mlp);
  CHECK(m2.hidden_units() == units);
  CHECK(same_bits(m2.weight(), w1));
  CHECK(same_bits(m2.fc1_bias(), b1));
  CHECK(same_bits(m2.fc2_weight(), w2));
  const float b2_loaded = m2.fc2_bias();
  CHECK(std::memcmp(&b2, &b2_loaded, 4) == 0);
  CHECK(!fs::exists(file.string() + ".tmp"));
}

TEST_CASE("exit classifier file: each refusal names the file and the key or tensor") {
  const calm::test::ScratchDir dir("exit_classifier_refusals");
  const fs::path file = dir.path / "calm.safetensors";
  const std::string f = file.string();
  const auto with = [](Meta m, const std::string& key, const std::string& value) {
    if (value.empty())
      m.erase(key);
    else
      m[key] = value;
    return m;
  };
  const auto refuses = [&](const std::vector<Tensor>& tensors, const Meta& meta,
                           const std::string& needle, std::size_t hidden = 2) {
    CAPTURE(needle);
    write_raw(file, tensors, meta);
    CHECK_ERROR_NAMES(calm::ExitClassifier::load(file, hidden), f, needle);
  };
  const std::vector<Tensor> mlp = small_mlp_tensors();
  write_raw(file, mlp, kMlpMeta);
  CHECK_NOTHROW(calm::ExitClassifier::load(file, 2));

  // Metadata: format, version, kind, the kind's keys, unknown keys.
  refuses(mlp, with(kMlpMeta, "format", "safetensors"), "__metadata__ key 'format' is 'safetensors'");
  refuses(mlp, with(kMlpMeta, "format", ""), "__metadata__ has no key 'format'");
  refuses(mlp, {{"note", "hello"}}, "__metadata__ has no key 'format'");
  refuses(mlp, with(kMlpMeta, "version", "3"), "__metadata__ key 'version' is '3'");
  refuses(mlp, with(kMlpMeta, "version", "1"), "version 1 files have no __metadata__");
  refuses(mlp, with(kMlpMeta, "kind", "conv"), "__metadata__ key 'kind' is 'conv'");
  refuses(mlp, with(kMlpMeta, "kind", ""), "__metadata__ has no key 'kind'");
  refuses(mlp, with(kMlpMeta, "trained_by", "me"), "__metadata__ key 'trained_by' is unknown");
  refuses(mlp, with(kMlpMeta, "features", "normed_state"), "__metadata__ key 'features'");
  refuses(mlp, with(kMlpMeta, "features", ""), "__metadata__ has no key 'features'");
  refuses(mlp, with(kMlpMeta, "activation", "relu"), "__metadata__ key 'activation' is 'relu'");
  for (const std::string units : {"0", "two", "2x", "-1", "99999"})
    refuses(mlp, with(kMlpMeta, "hidden_units", units), "__metadata__ key 'hidden_units'");
  const Meta linear_meta = {{"format", "calm-exit-classifier"}, {"version", "2"}, {"kind", "linear"}};
  const std::vector<Tensor> linear = {{"calm.exit_classifier.weight", {2, 2}, {1, 2, 3, 4}},
                                      {"calm.exit_classifier.bias", {2}, {0, 1}}};
  write_raw(file, linear, linear_meta);
  CHECK_NOTHROW(calm::ExitClassifier::load(file, 2));
  refuses(linear, with(linear_meta, "hidden_units", "2"),
          "__metadata__ key 'hidden_units' is unknown to a classifier of kind 'linear'");

  // Tensors: missing, mis-shaped against the model's hidden size or the units, unknown.
  for (std::size_t drop = 0; drop < mlp.size(); ++drop) {
    std::vector<Tensor> t = mlp;
    t.erase(t.begin() + std::ptrdiff_t(drop));
    refuses(t, kMlpMeta, "no tensor '" + mlp[drop].name + "'");
  }
  refuses(mlp, kMlpMeta, "tensor 'calm.exit_classifier.fc1.weight' in '" + f + "' has shape [2, 5], expected [2, 6]", 3);
  refuses(mlp, with(kMlpMeta, "hidden_units", "3"), "expected [3, 5]");
  {
    std::vector<Tensor> t = mlp;
    t[2].shape = {2};  // fc2.weight as a vector
    refuses(t, kMlpMeta, "'calm.exit_classifier.fc2.weight' in '" + f + "' has shape [2], expected [1, 2]");
  }
  {
    std::vector<Tensor> t = mlp;
    t.push_back({"calm.exit_classifier.weight", {2, 2}, {1, 2, 3, 4}});
    refuses(t, kMlpMeta, "tensor 'calm.exit_classifier.weight' is unknown to a classifier of kind 'mlp'");
    std::vector<Tensor> l = linear;
    l.push_back({"extra", {1}, {0}});
    refuses(l, linear_meta, "tensor 'extra' is unknown to a classifier of kind 'linear'");
  }
  refuses(linear, linear_meta, "expected [2, 3]", 3);

  // Non-finite values, in every tensor; save refuses them too and leaves the file.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (std::size_t k = 0; k < mlp.size(); ++k) {
    std::vector<Tensor> t = mlp;
    t[k].values.back() = k % 2 == 0 ? nan : inf;
    refuses(t, kMlpMeta, "tensor '" + mlp[k].name + "' in '" + f + "' holds " +
                             (k % 2 == 0 ? "NaN" : "+inf") + " at index " +
                             std::to_string(mlp[k].values.size() - 1));
  }
  small_mlp().save(file);
  const std::string before = calm::test::read_text(file);
  CHECK_ERROR_NAMES(calm::ExitClassifier::mlp(2, small_mlp_tensors()[0].values, {0.0f, nan},
                                              {1.0f, 1.0f}, 0.0f)
                        .save(file),
                    f, "calm.exit_classifier.fc1.bias", "NaN at index 1");
  CHECK_ERROR_NAMES(calm::ExitClassifier::mlp(2, small_mlp_tensors()[0].values, {0.0f, 0.0f},
                                              {1.0f, 1.0f}, -inf)
                        .save(file),
                    f, "calm.exit_classifier.fc2.bias", "-inf at index 0");
  CHECK(calm::test::read_text(file) == before);
}

TEST_CASE("exit classifier training: the analytic gradient matches central differences") {
  // 6 samples of hidden 2 in rows of stride 6 (one unused column: the stride is honoured).
  const std::size_t stride = 6;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> rows(6 * stride);
  for (float& x : rows) x = normal(rng);
  const std::vector<int> labels = {1, 0, 0, 1, 1, 0};
  const tr::ClassWeights w = tr::balanced_weights(3, 6);
  std::vector<float> w1(3 * 5), b1(3), w2(3);
  for (float& x : w1) x = normal(rng);
  for (float& x : b1) x = 0.5f * normal(rng);
  for (float& x : w2) x = normal(rng);
  const float lb[2] = {0.3f, -0.2f};
  for (const calm::ExitClassifier& c0 :
       {calm::ExitClassifier::mlp(2, w1, b1, w2, 0.1f),
        calm::ExitClassifier({0.7f, -0.4f, 0.2f, 0.9f}, lb)}) {
    CAPTURE(c0.hidden_units());
    std::vector<float> grad(c0.num_parameters()), scratch(c0.num_parameters());
    const double loss = tr::batch_loss_and_gradient(c0, rows, stride, labels, w, grad);
    CHECK(loss == doctest::Approx(tr::weighted_loss(c0, {stride, rows, labels, {}}, w)).epsilon(1e-5));
    std::size_t k = 0;
    calm::ExitClassifier c = c0;
    for (std::span<float> p : c.parameters())
      for (float& param : p) {
        // f32 forward: h = 1e-2 balances rounding (~1e-7 / h) against truncation (~h^2).
        const float h = 1e-2f, saved = param;
        param = saved + h;
        const double up = tr::batch_loss_and_gradient(c, rows, stride, labels, w, scratch);
        param = saved - h;
        const double down = tr::batch_loss_and_gradient(c, rows, stride, labels, w, scratch);
        param = saved;
        const double numeric = (up - down) / (2.0 * h);
        CAPTURE(k);
        CHECK(grad[k] == doctest::Approx(numeric).epsilon(2e-3).scale(1.0));
        ++k;
      }
    CHECK(k == c0.num_parameters());
  }
}

TEST_CASE("exit classifier training: standardisation folds into the first layer exactly") {
  const calm::ExitClassifier c = small_mlp();
  const std::vector<float> mean = {0.5f, -1.0f, 0.25f, 0.0f, 2.0f}, scale = {2.0f, 0.5f, 1.0f, 4.0f, 0.25f};
  const std::vector<float> raw = {0.7f, -0.3f, 0.5f, 0.9f, 1.4f};
  std::vector<float> standard(5);
  for (std::size_t j = 0; j < 5; ++j) standard[j] = (raw[j] - mean[j]) / scale[j];
  calm::ExitClassifier folded = c;
  tr::fold_standardisation(folded, mean, scale);
  CHECK(folded.score_row(raw) == doctest::Approx(c.score_row(standard)).epsilon(1e-5));
}

TEST_CASE("exit classifier training: the mlp learns XOR, which no linear classifier can") {
  // Label = [sign(x0) == sign(x1)] of two state features, the rest noise: the positives fill
  // two opposite quadrants, so any linear score is at most about chance on one class.
  const std::size_t h = 6, stride = h + calm::kExitClassifierExtras;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto make = [&](std::size_t n) {
    tr::Dataset d;
    d.stride = stride;
    for (std::size_t s = 0; s < n; ++s) {
      std::vector<float> row(stride);
      for (float& x : row) x = 0.3f * normal(rng);
      row[0] = (rng() % 2 ? 1.0f : -1.0f) + 0.2f * normal(rng);
      row[3] = (rng() % 2 ? 1.0f : -1.0f) + 0.2f * normal(rng);
      d.rows.insert(d.rows.end(), row.begin(), row.end());
      d.labels.push_back((row[0] > 0) == (row[3] > 0) ? 1 : 0);
      d.layers.push_back(1);
    }
    return d;
  };
  const tr::Dataset train_set = make(4000), heldout = make(1000);
  const auto accuracy = [&](const calm::ExitClassifier& c) {
    std::size_t ok = 0;
    for (std::size_t s = 0; s < heldout.size(); ++s)
      ok += std::size_t((c.score_row(heldout.row(s)) >= 0.5f ? 1 : 0) == heldout.labels[s]);
    return double(ok) / double(heldout.size());
  };
  tr::TrainingFlags flags;
  flags.epochs = 30;
  flags.batch = 64;
  flags.lr = 0.01f;
  flags.hidden_units = 8;
  flags.patience = 30;
  flags.kind = "mlp";
  tr::Dataset copy = train_set;  // train standardises its rows in place
  std::size_t epochs_seen = 0;
  const calm::ExitClassifier mlp =
      tr::train(copy, heldout, h, flags, [&](const tr::EpochReport&) { ++epochs_seen; });
  CHECK(epochs_seen == flags.epochs + 1);
  CHECK(mlp.kind() == calm::ExitClassifierKind::mlp);
  CHECK(accuracy(mlp) > 0.95);
  // Deterministic: the same seed gives the same classifier, bit for bit.
  copy = train_set;
  const calm::ExitClassifier again = tr::train(copy, heldout, h, flags);
  CHECK(same_bits(again.weight(), mlp.weight()));
  CHECK(same_bits(again.fc2_weight(), mlp.fc2_weight()));

  flags.kind = "linear";
  copy = train_set;
  const calm::ExitClassifier linear = tr::train(copy, heldout, h, flags);
  CHECK(linear.kind() == calm::ExitClassifierKind::linear);
  CHECK(accuracy(linear) < 0.75);
}
