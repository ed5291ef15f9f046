// calm::Sampler against hand-computed expectations: greedy is the first argmax, top-k = 1 and a
// tiny top-p collapse to it, a seed reproduces its draws, and temperature sampling follows
// softmax(logits / T) (frequencies over 40000 draws, 4-sigma tolerance).
#include <calm/sampling/sampler.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

TEST_CASE("greedy picks the first index of the largest logit") {
  calm::Sampler greedy;
  CHECK(greedy.greedy());
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f};
  CHECK(greedy.sample(logits) == 1);
}

TEST_CASE("top-k = 1 and a tiny top-p reduce sampling to greedy") {
  const std::vector<float> logits = {0.1f, 0.3f, 0.2f, -0.4f};
  calm::Sampler top1({.temperature = 5.0f, .top_k = 1, .seed = 3});
  calm::Sampler nucleus({.temperature = 1.0f, .top_p = 1e-6f, .seed = 3});
  for (int i = 0; i < 100; ++i) {
    CHECK(top1.sample(logits) == 1);
    CHECK(nucleus.sample(logits) == 1);
  }
}

TEST_CASE("the same seed reproduces the same draws, another seed does not") {
  const std::vector<float> logits = {0.0f, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f};
  calm::Sampler a({.temperature = 1.0f, .seed = 42}), b({.temperature = 1.0f, .seed = 42}),
      c({.temperature = 1.0f, .seed = 43});
  std::vector<int> da, db, dc;
  for (int i = 0; i < 64; ++i) {
    da.push_back(a.sample(logits));
    db.push_back(b.sample(logits));
    dc.push_back(c.sample(logits));
  }
  CHECK(da == db);
  CHECK(da != dc);
}

TEST_CASE("temperature sampling follows softmax(logits / T), and top-k / top-p cut the tail") {
  // logits / T = ln 1, ln 2, ln 3, ln 4 -> probabilities 0.1, 0.2, 0.3, 0.4.
  const float T = 2.0f;
  const std::vector<float> logits = {T * std::log(1.0f), T * std::log(2.0f), T * std::log(3.0f),
                                     T * std::log(4.0f)};
  const int n = 40000;
  auto frequencies = [&](calm::SamplingOptions o) {
    calm::Sampler s(o);
    std::vector<double> f(4, 0.0);
    for (int i = 0; i < n; ++i) f[s.sample(logits)] += 1.0 / n;
    return f;
  };
  auto check = [&](const std::vector<double>& got, const std::vector<double>& want) {
    for (std::size_t i = 0; i < want.size(); ++i) {
      const double sigma = std::sqrt(std::max(want[i] * (1 - want[i]), 1e-12) / n);
      CHECK(std::abs(got[i] - want[i]) <= 4 * sigma + 1e-12);
    }
  };
  check(frequencies({.temperature = T, .seed = 1}), {0.1, 0.2, 0.3, 0.4});
  // top-k 2 keeps ids 3 and 2: 0.4 / 0.7 and 0.3 / 0.7.
  check(frequencies({.temperature = T, .top_k = 2, .seed = 2}), {0.0, 0.0, 3.0 / 7, 4.0 / 7});
  // top-p 0.65: 0.4 + 0.3 = 0.7 is the smallest prefix reaching it.
  check(frequencies({.temperature = T, .top_p = 0.65f, .seed = 3}), {0.0, 0.0, 3.0 / 7, 4.0 / 7});
}

TEST_CASE("bad sampling options and empty logits are refused") {
  CHECK_THROWS_AS(calm::Sampler({.temperature = -1.0f}), calm::Error);
  CHECK_THROWS_AS(calm::Sampler({.temperature = NAN}), calm::Error);
  CHECK_THROWS_AS(calm::Sampler({.temperature = 1.0f, .top_p = 0.0f}), calm::Error);
  CHECK_THROWS_AS(calm::Sampler({.temperature = 1.0f, .top_p = 1.5f}), calm::Error);
  calm::Sampler s;
  CHECK_THROWS_AS(s.sample(std::vector<float>{}), calm::Error);
}

TEST_CASE("a tiny positive temperature samples the most likely token, as T -> 0 should") {
  // logits / T overflows float below T ~ 1e-37: the weights must not be computed that way.
  const std::vector<float> logits = {1.0f, 5.0f, -3.0f, 4.9f, -80.0f};
  for (const float t : {1e-20f, 1e-37f, 1e-38f, 1e-45f}) {
    CAPTURE(t);
    for (const std::size_t top_k : {std::size_t{0}, std::size_t{3}}) {
      calm::Sampler sampler({.temperature = t, .top_k = top_k, .top_p = 0.9f, .seed = 5});
      for (int i = 0; i < 50; ++i) CHECK(sampler.sample(logits) == 1);
    }
  }
}
