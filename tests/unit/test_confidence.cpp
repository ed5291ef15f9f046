// Confidence measures on hand-made states and logits; values computed by hand or in double.
#include "test_support.hpp"

#include <calm/confidence/exit_classifier.hpp>
#include <calm/confidence/exit_classifier_training.hpp>
#include <calm/confidence/hidden_saturation.hpp>
#include <calm/confidence/softmax_response.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <doctest/doctest.h>

namespace {

calm::ExitSignal with_logits(const std::vector<float>& l) {
  calm::ExitSignal s;
  s.logits = l;
  return s;
}

std::vector<float> random_vector(std::size_t n, std::uint32_t seed, float scale) {
  std::vector<float> v(n);
  for (float& e : v) {
    seed = seed * 1664525u + 1013904223u;
    e = scale * (float(seed >> 8) / float(1u << 24) * 2.0f - 1.0f);
  }
  return v;
}

}  // namespace

TEST_CASE("softmax response on hand-computed logits") {
  // softmax(2, 1, 0): Z = e^2 + e + 1 = 11.107338; p = 0.665241, 0.244728, 0.090031.
  const std::vector<float> l = {1.0f, 2.0f, 0.0f};
  CHECK(calm::SoftmaxResponse{}.score(with_logits(l)) == doctest::Approx(0.420513).epsilon(1e-5));
  const calm::SoftmaxResponse top1(calm::SoftmaxResponse::Variant::top1);
  CHECK(top1.score(with_logits(l)) == doctest::Approx(0.665241).epsilon(1e-5));
  // A tie at the top: gap 0. One dominant logit: gap -> 1 but never above.
  CHECK(calm::SoftmaxResponse{}.score(with_logits({3.0f, 3.0f, -1.0f})) == 0.0f);
  const float near_one = calm::SoftmaxResponse{}.score(with_logits({100.0f, 0.0f, 0.0f}));
  CHECK(near_one <= 1.0f);
  CHECK(near_one == doctest::Approx(1.0f));
}

TEST_CASE("summarize_logits matches its scalar twin and a double-precision softmax") {
  // Tolerance: xsimd's exp is within a few ulp of std::exp; sums of up to 1000 terms in f32
  // reassociated -> relative 1e-5 on Z.
  for (std::size_t n = 2; n <= 70; ++n) {
    for (std::uint32_t seed : {1u, 7u, 99u}) {
      CAPTURE(n);
      const std::vector<float> l = random_vector(n, seed, 8.0f);
      const calm::LogitSummary a = calm::summarize_logits(l);
      const calm::LogitSummary b = calm::scalar::summarize_logits(l);
      CHECK(a.top1 == b.top1);
      CHECK(a.top2 == b.top2);
      CHECK(a.partition == doctest::Approx(b.partition).epsilon(1e-5));
      double z = 0, m = l[a.top1];
      for (float e : l) z += std::exp(double(e) - m);
      std::vector<double> p;
      for (float e : l) p.push_back(std::exp(double(e) - m) / z);
      std::vector<double> sorted = p;
      std::sort(sorted.rbegin(), sorted.rend());
      CHECK(a.top1_probability() == doctest::Approx(sorted[0]).epsilon(1e-5));
      CHECK(a.probability_gap() == doctest::Approx(sorted[0] - sorted[1]).epsilon(1e-5));
      CHECK(a.log_partition() == doctest::Approx(m + std::log(z)).epsilon(1e-5));
    }
  }
}

TEST_CASE("hidden saturation: cosine of consecutive exit states, 0 at the first") {
  const std::vector<float> prev = {1.0f, 0.0f, 0.0f}, cur = {1.0f, 1.0f, 0.0f};
  calm::ExitSignal s;
  s.state = cur;
  CHECK(calm::HiddenSaturation{}.score(s) == 0.0f);  // no previous exit point
  s.previous_state = prev;
  CHECK(calm::HiddenSaturation{}.score(s) == doctest::Approx(0.70710678));
  s.previous_state = cur;
  CHECK(calm::HiddenSaturation{}.score(s) <= 1.0f);
  CHECK(calm::HiddenSaturation{}.score(s) == doctest::Approx(1.0));
  const std::vector<float> opposite = {-1.0f, -1.0f, 0.0f};
  s.previous_state = opposite;
  CHECK(calm::HiddenSaturation{}.score(s) == doctest::Approx(-1.0));
}

// NaN logits used to score 1.0 (the clamp `c < 1 ? c : 1` sends NaN to 1): an exit at layer 1.
TEST_CASE("softmax response and hidden saturation: a NaN or infinite state never allows an exit") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const calm::SoftmaxResponse gap, top1(calm::SoftmaxResponse::Variant::top1);
  for (const std::vector<float>& l : std::vector<std::vector<float>>{
           {nan, 0.0f, 1.0f}, {0.0f, 1.0f, nan}, {nan, nan, nan}, {inf, 0.0f, 1.0f},
           {inf, inf, 0.0f}, {-inf, -inf, -inf}, {inf, -inf, nan}}) {
    CAPTURE(l[0]);
    CAPTURE(l[1]);
    CAPTURE(l[2]);
    CHECK(gap.score(with_logits(l)) == 0.0f);
    CHECK(top1.score(with_logits(l)) == 0.0f);
  }
  // -inf logits alone are a probability of 0 for those tokens, not a broken state.
  // gap = (1 - e^-5) / Z with Z = 1 + e^-5.
  CHECK(gap.score(with_logits({-inf, 5.0f, 0.0f})) ==
        doctest::Approx((1 - std::exp(-5.0)) / (1 + std::exp(-5.0))).epsilon(1e-5));

  const std::vector<float> finite = {1.0f, 0.5f, 0.0f};
  for (const std::vector<float>& state : std::vector<std::vector<float>>{
           {nan, 0.0f, 1.0f}, {inf, 0.0f, 0.0f}, {inf, inf, inf}, {-inf, 0.0f, 0.0f}}) {
    CAPTURE(state[0]);
    calm::ExitSignal s;
    s.state = state;
    s.previous_state = finite;
    CHECK(calm::HiddenSaturation{}.score(s) == 0.0f);
    s.previous_state = state;  // a non-finite state equal to the previous one
    CHECK(calm::HiddenSaturation{}.score(s) == 0.0f);
    s.state = finite;
    CHECK(calm::HiddenSaturation{}.score(s) == 0.0f);
  }
}

TEST_CASE("exit classifier: softmax(W n + b)[1]") {
  const float bias[2] = {0.0f, 0.5f};
  const calm::ExitClassifier c({1.0f, 0.0f, 0.0f, 1.0f}, bias);  // W = I (2, 2)
  const std::vector<float> normed = {0.2f, 0.4f};
  calm::ExitSignal s;
  s.normed_state = normed;
  // z = (0.2, 0.9): softmax[1] = 1 / (1 + e^-0.7) = 0.668188
  CHECK(c.score(s) == doctest::Approx(0.668188).epsilon(1e-5));
  const std::vector<float> wrong = {0.2f, 0.4f, 0.1f};
  s.normed_state = wrong;
  CHECK(c.score(s) == 0.0f);  // a state of the wrong size never exits
  CHECK_THROWS_AS(calm::ExitClassifier({1.0f, 2.0f, 3.0f}, bias), calm::Error);
}

TEST_CASE("exit classifier: save then load round-trips, bad files are named") {
  const calm::test::ScratchDir scratch("exit_classifier");
  const auto& dir = scratch.path;
  const auto file = dir / "calm.safetensors";
  const float bias[2] = {-0.25f, 0.75f};
  const std::vector<float> w = {1.0f, -2.0f, 3.5f, 0.5f, 0.0f, -1.0f};  // (2, 3)
  calm::ExitClassifier(w, bias).save(file);
  CHECK(!std::filesystem::exists(file.string() + ".tmp"));
  const calm::ExitClassifier c = calm::ExitClassifier::load(file, 3);
  CHECK(std::vector<float>(c.weight().begin(), c.weight().end()) == w);
  CHECK(c.bias()[0] == -0.25f);
  CHECK(c.bias()[1] == 0.75f);
  try {
    calm::ExitClassifier::load(file, 4);
    FAIL("expected a shape error");
  } catch (const calm::Error& e) {
    CHECK(std::string(e.what()).find("calm.exit_classifier.weight") != std::string::npos);
    CHECK(std::string(e.what()).find("[2, 4]") != std::string::npos);
  }
  CHECK_THROWS_AS(calm::ExitClassifier::load(dir / "missing.safetensors", 3), calm::Error);
}

TEST_CASE("exit classifier: a NaN or infinite state never allows an exit") {
  const float bias[2] = {0.0f, 0.5f};
  const calm::ExitClassifier c({1.0f, 0.0f, 0.0f, 1.0f}, bias);  // W = I (2, 2)
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  // z = (-inf, inf) used to give softmax[1] = 1: an exit at any threshold.
  for (const std::vector<float>& state : std::vector<std::vector<float>>{
           {nan, 0.0f}, {0.0f, nan}, {-inf, inf}, {inf, -inf}, {inf, inf}, {nan, inf}}) {
    CAPTURE(state[0]);
    CAPTURE(state[1]);
    calm::ExitSignal s;
    s.normed_state = state;
    CHECK(c.score(s) == 0.0f);
  }
  // W = [[1, 1], [-1, -1]]: the state (-inf, 1) gives z = (-inf, +inf), which used to score 1.
  const calm::ExitClassifier c2({1.0f, 1.0f, -1.0f, -1.0f}, bias);
  const std::vector<float> state = {-inf, 1.0f};
  calm::ExitSignal s;
  s.normed_state = state;
  CHECK(c2.score(s) == 0.0f);
}

TEST_CASE("exit classifier: non-finite values are refused at load and never written") {
  calm::test::ScratchDir dir("exit_classifier_nonfinite");
  const auto file = dir.path / "calm.safetensors";
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const float good_bias[2] = {-0.25f, 0.75f};
  const std::vector<float> good_w = {1.0f, -2.0f, 3.5f, 0.5f, 0.0f, -1.0f};  // (2, 3)
  calm::ExitClassifier(good_w, good_bias).save(file);
  const std::string before = calm::test::read_text(file);

  // save refuses, and leaves the file as it was.
  const float inf_bias[2] = {0.0f, inf};
  CHECK_ERROR_NAMES(calm::ExitClassifier(good_w, inf_bias).save(file), file.string(),
                    "calm.exit_classifier.bias", "+inf at index 1");
  CHECK_ERROR_NAMES(calm::ExitClassifier(std::vector<float>(6, nan), good_bias).save(file),
                    file.string(), "calm.exit_classifier.weight", "NaN at index 0");
  CHECK(calm::test::read_text(file) == before);

  // load refuses a file written by other means (raw F32 data patched in place).
  std::string bytes = before;
  std::uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  const auto patch = [&](std::size_t float_index, float v) {
    // The writer puts the weight (24 bytes) first and the bias after it: both F32.
    std::string b = bytes;
    std::memcpy(b.data() + 8 + header + 4 * float_index, &v, 4);
    std::ofstream(file, std::ios::binary).write(b.data(), std::streamsize(b.size()));
  };
  patch(6 + 1, inf);  // the bias' second value: always exits
  CHECK_ERROR_NAMES(calm::ExitClassifier::load(file, 3), file.string(), "calm.exit_classifier.bias",
                    "+inf at index 1");
  patch(4, nan);  // one weight NaN
  CHECK_ERROR_NAMES(calm::ExitClassifier::load(file, 3), file.string(),
                    "calm.exit_classifier.weight", "NaN at index 4");
}

TEST_CASE("classifier training flags: each out-of-range value is refused, naming the flag") {
  namespace tr = calm::exit_classifier_training;
  CHECK_NOTHROW(tr::check_training_flags({}));
  const auto with = [](auto set) {
    tr::TrainingFlags f;
    set(f);
    return f;
  };
  CHECK_ERROR_NAMES(tr::check_training_flags(with([](auto& f) { f.window = 0; })), "--window 0",
                    "[1, inf)");
  CHECK_ERROR_NAMES(tr::check_training_flags(with([](auto& f) { f.threads = 10000; })),
                    "--threads 10000", "[1, 256]");
  CHECK_ERROR_NAMES(tr::check_training_flags(with([](auto& f) { f.threads = 0; })), "--threads 0");
  CHECK_ERROR_NAMES(tr::check_training_flags(with([](auto& f) { f.epochs = 0; })), "--epochs 0");
  CHECK_ERROR_NAMES(tr::check_training_flags(with([](auto& f) { f.max_tokens = 3; })),
                    "--max-tokens 3");
  for (const float lr : {std::numeric_limits<float>::quiet_NaN(),
                         std::numeric_limits<float>::infinity(), 0.0f, -0.01f}) {
    CAPTURE(lr);
    CHECK_ERROR_NAMES(tr::check_training_flags(with([&](auto& f) { f.lr = lr; })), "--lr",
                      "(0, inf)");
  }
  CHECK_ERROR_NAMES(tr::check_training_flags(with([](auto& f) { f.kind = "svm"; })), "--kind 'svm'",
                    "linear or mlp");
  CHECK_ERROR_NAMES(tr::check_training_flags(with([](auto& f) { f.hidden_units = 0; })),
                    "--hidden-units 0", "[1, 4096]");
  CHECK_ERROR_NAMES(tr::check_training_flags(with([](auto& f) { f.hidden_units = 5000; })),
                    "--hidden-units 5000", "[1, 4096]");
  CHECK_ERROR_NAMES(tr::check_training_flags(with([](auto& f) { f.batch = 0; })), "--batch 0",
                    "[1, inf)");
  for (const float holdout : {std::numeric_limits<float>::quiet_NaN(), 0.0f, 0.01f, 0.6f}) {
    CAPTURE(holdout);
    CHECK_ERROR_NAMES(tr::check_training_flags(with([&](auto& f) { f.holdout = holdout; })),
                      "--holdout", "[0.05, 0.5]");
  }
  CHECK_NOTHROW(tr::check_training_flags(with([](auto& f) {
    f.kind = "linear";
    f.hidden_units = 1;
    f.batch = 1;
    f.holdout = 0.5f;
    f.window = 1;
    f.threads = 256;
    f.epochs = 1;
    f.lr = 1e-6f;
  })));
}

TEST_CASE("classifier training: labels, class-balanced weights, loss and gradient") {
  namespace tr = calm::exit_classifier_training;
  CHECK(tr::label(4, 4) == 1);
  CHECK(tr::label(3, 4) == 0);
  const tr::ClassWeights w = tr::balanced_weights(1, 4);  // 1 positive of 4
  CHECK(w.positive == doctest::Approx(0.75));
  CHECK(w.negative == doctest::Approx(0.25));
  CHECK_THROWS_AS(tr::balanced_weights(5, 4), calm::Error);

  // Zero classifier: every sample costs ln 2, weighted: (0.75 ln2 + 3 * 0.25 ln2) / 4. Rows are
  // [normed state (hidden 1), the 3 extras], which the linear kind does not read. The gradient
  // against central differences, for both kinds: tests/unit/test_exit_classifier.cpp.
  const float zero_b[2] = {0.0f, 0.0f};
  const calm::ExitClassifier c({0.0f, 0.0f}, zero_b);  // hidden 1
  const std::vector<float> rows = {1.0f, 9, 9, 9, -2.0f, 9, 9, 9, 0.5f, 9, 9, 9, 3.0f, 9, 9, 9};
  const std::vector<int> y = {1, 0, 0, 0};
  std::vector<float> grad(c.num_parameters());
  CHECK(tr::batch_loss_and_gradient(c, rows, 4, y, w, grad) ==
        doctest::Approx(1.5 * std::log(2.0) / 4));
}
