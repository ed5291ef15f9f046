// Exit schedules against hand-computed values (docs/design.md §4).
#include <calm/schedule/constant.hpp>
#include <calm/schedule/decaying.hpp>
#include <calm/schedule/local_oracle.hpp>
#include <calm/schedule/never.hpp>
#include <calm/schedule/static_exit.hpp>

#include <doctest/doctest.h>

TEST_CASE("constant threshold") {
  const calm::ConstantThreshold s{0.7f};
  CHECK(s.threshold(1, 10) == 0.7f);
  CHECK(s.threshold(10, 10) == 0.7f);
}

TEST_CASE("decaying threshold, paper form: clip01(0.9 lambda + 0.1 exp(-tau t / N))") {
  calm::DecayingThreshold s{0.5f, 2.0f, calm::DecayingThreshold::Form::paper};
  // t = 5, N = 10: 0.45 + 0.1 e^-1 = 0.45 + 0.0367879 = 0.4867879
  CHECK(s.threshold(5, 10) == doctest::Approx(0.4867879).epsilon(1e-6));
  // t = 10: 0.45 + 0.1 e^-2 = 0.4635335
  CHECK(s.threshold(10, 10) == doctest::Approx(0.4635335).epsilon(1e-6));
  // clip at 1: lambda = 1.2, t = 0: 1.08 + 0.1 -> 1
  s.lambda = 1.2f;
  CHECK(s.threshold(0, 10) == 1.0f);
  // clip at 0: lambda = -1, tau large: -0.9 + ~0 -> 0
  s.lambda = -1.0f;
  s.tau = 50.0f;
  CHECK(s.threshold(10, 10) == 0.0f);
  // decreasing in t for tau > 0
  calm::DecayingThreshold d{0.9f, 4.0f};
  CHECK(d.form == calm::DecayingThreshold::Form::paper);  // the default
  for (std::size_t t = 1; t < 20; ++t) CHECK(d.threshold(t + 1, 20) < d.threshold(t, 20));
}

TEST_CASE("decaying threshold, scaled form: lambda (0.9 + 0.1 exp(-tau t / N))") {
  calm::DecayingThreshold s{0.5f, 2.0f, calm::DecayingThreshold::Form::scaled};
  // t = 5, N = 10: 0.5 (0.9 + 0.0367879) = 0.4683940
  CHECK(s.threshold(5, 10) == doctest::Approx(0.4683940).epsilon(1e-6));
  // tau = 0: constant lambda
  s.tau = 0.0f;
  CHECK(s.threshold(3, 10) == doctest::Approx(0.5));
  CHECK(s.threshold(9, 10) == doctest::Approx(0.5));
}

TEST_CASE("static exit, never, local oracle") {
  CHECK(calm::StaticExit{3}.fixed_exit_layer(8) == 3);
  CHECK(calm::StaticExit{12}.fixed_exit_layer(8) == 8);
  CHECK(calm::StaticExit{0}.fixed_exit_layer(8) == 1);
  CHECK(calm::Never{}.fixed_exit_layer(8) == 8);
  CHECK(calm::traits::is_local_oracle<calm::LocalOracle>());
  CHECK(!calm::traits::is_local_oracle<calm::Never>());
}
