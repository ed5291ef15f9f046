// calm::PolicyRegistry: names to policies and back, the policy of calm_calibration.json, and a
// measure defined outside the library registered, calibrated and decoded with.
#include <calm/calm.hpp>
#include <calm/policy_registry.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <type_traits>
#include <vector>

#include <doctest/doctest.h>

#include "test_support.hpp"
#include "unit/test_models.hpp"

namespace fs = std::filesystem;
using calm::test::contains;
using calm::test::error_of;

namespace {

using calm::test::kBundled;

// A user's measure: 1 - H(p) / ln V of the exit distribution, with one parameter.
struct Entropy {
  static constexpr bool needs_logits = true;
  static constexpr std::string_view policy_name = "entropy";
  float temperature = 1.0f;

  float score(const calm::ExitSignal& s) const noexcept {
    float m = s.logits[0];
    for (float l : s.logits) m = std::max(m, l);
    double z = 0.0, e = 0.0;
    for (float l : s.logits) z += std::exp((l - m) / temperature);
    for (float l : s.logits) {
      const double p = std::exp((l - m) / temperature) / z;
      if (p > 0) e -= p * std::log(p);
    }
    return static_cast<float>(1.0 - e / std::log(double(s.logits.size())));
  }
  nlohmann::json policy_params() const { return {{"temperature", temperature}}; }
  static Entropy from_policy_params(const nlohmann::json& p, const calm::PolicyContext&) {
    Entropy e;
    if (p.contains("temperature")) e.temperature = p.at("temperature").get<float>();
    return e;
  }
};

using WithEntropy =
    calm::PolicyRegistry<calm::Measures<calm::SoftmaxResponse, Entropy, calm::NoConfidence>,
                         calm::ShippedSchedules>;

// A schedule of a user's own, named like a measure: the threshold halves in the second half of
// the generation.
struct HalvingThreshold {
  static constexpr std::string_view policy_name = "halving";
  static constexpr bool uses_confidence = true;
  float lambda = 0.9f;
  float threshold(std::size_t step, std::size_t max_steps) const noexcept {
    return 2 * step < max_steps ? lambda : 0.5f * lambda;
  }
};
static_assert(calm::ExitSchedule<HalvingThreshold>);

using WithHalving =
    calm::PolicyRegistry<calm::ShippedMeasures,
                         calm::Schedules<calm::ConstantThreshold, HalvingThreshold>>;

// The types visit() hands over, as names.
template <class Registry>
std::string visited(const calm::PolicySpec& spec, const calm::PolicyContext& ctx) {
  return Registry::visit(spec, ctx, []<class M, class S>(M, S) {
    return std::string(calm::policy_traits<M>::name) + "/" +
           std::string(calm::policy_traits<S>::name);
  });
}

}  // namespace

TEST_CASE("the shipped registry names every shipped policy and builds each") {
  using R = calm::PolicyRegistry<>;
  CHECK(R::measure_names() ==
        std::vector<std::string>{"softmax", "softmax-top1", "softmax-candidates", "saturation",
                                 "classifier", "none"});
  CHECK(R::schedule_names() == std::vector<std::string>{"decaying", "decaying-scaled", "constant",
                                                         "static", "never", "full", "oracle"});
  const calm::PolicyContext ctx{kBundled, 192};
  calm::PolicySpec spec;
  spec.measure = "softmax-top1";
  spec.schedule = "constant";
  CHECK(visited<R>(spec, ctx) == "softmax/constant");
  R::visit(spec, ctx, []<class M, class S>(M m, S s) {
    if constexpr (std::is_same_v<M, calm::SoftmaxResponse>) {
      CHECK(m.variant() == calm::SoftmaxResponse::Variant::top1);
    }
    if constexpr (std::is_same_v<S, calm::ConstantThreshold>) CHECK(s.lambda == 0.9f);
    return 0;
  });
  spec.measure = "softmax-candidates";
  spec.measure_params = {{"candidates", 16}, {"variant", "top1"}};
  R::visit(spec, ctx, []<class M, class S>(M m, S) {
    if constexpr (std::is_same_v<M, calm::CandidateSoftmax>) {
      CHECK(m.candidates() == 16);
      CHECK(m.variant() == calm::CandidateSoftmax::Variant::top1);
      CHECK(calm::policy_traits<M>::params(m) ==
            nlohmann::json{{"candidates", 16}, {"variant", "top1"}});
    } else {
      FAIL("expected CandidateSoftmax");
    }
    return 0;
  });
  spec.measure_params = nlohmann::json::object();
  R::visit(spec, ctx, []<class M, class S>(M m, S) {
    if constexpr (std::is_same_v<M, calm::CandidateSoftmax>) CHECK(m.candidates() == 32);
    return 0;
  });
  spec.measure = "classifier";
  spec.schedule = "decaying-scaled";
  spec.schedule_params = {{"tau", 2.0}};
  spec.lambda = 0.5f;
  R::visit(spec, ctx, []<class M, class S>(M, S s) {
    CHECK(std::is_same_v<M, calm::ExitClassifier>);
    if constexpr (std::is_same_v<S, calm::DecayingThreshold>) {
      CHECK(s.form == calm::DecayingThreshold::Form::scaled);
      CHECK(s.tau == 2.0f);
      CHECK(s.lambda == 0.5f);
    } else {
      FAIL("expected DecayingThreshold");
    }
    return 0;
  });
  spec = {};
  spec.measure = "none";
  spec.schedule = "static";
  spec.schedule_params = {{"layer", 3}};
  R::visit(spec, ctx, []<class M, class S>(M, S s) {
    if constexpr (std::is_same_v<S, calm::StaticExit>) CHECK(s.layer == 3);
    else FAIL("expected StaticExit");
    return 0;
  });
  spec.schedule = "full";
  spec.schedule_params = nlohmann::json::object();
  CHECK(visited<R>(spec, ctx) == "none/never");
}

TEST_CASE("bad names and parameters are refused, naming what is wrong") {
  using R = calm::PolicyRegistry<>;
  const calm::PolicyContext ctx{kBundled, 192};
  calm::PolicySpec spec;
  spec.measure = "entropy";
  CHECK(contains(error_of([&] { visited<R>(spec, ctx); }), "unknown confidence measure 'entropy'"));
  spec.measure = "softmax";
  spec.schedule = "sometimes";
  CHECK(contains(error_of([&] { visited<R>(spec, ctx); }), "unknown schedule 'sometimes'"));
  spec.schedule = "decaying";
  spec.schedule_params = {{"tua", 4}};
  CHECK(contains(error_of([&] { visited<R>(spec, ctx); }), "parameter 'tua': unknown parameter"));
  spec.schedule_params = {{"tau", -1}};
  CHECK(contains(error_of([&] { visited<R>(spec, ctx); }), "parameter 'tau'"));
  spec.schedule_params = nlohmann::json::object();
  spec.measure = "none";
  CHECK(contains(error_of([&] { visited<R>(spec, ctx); }), "needs a confidence measure"));
  spec.measure = "softmax";
  spec.schedule = "static";
  CHECK(contains(error_of([&] { visited<R>(spec, ctx); }), "uses no confidence measure"));
  spec.measure = "none";
  spec.schedule_params = {{"layer", 1.5}};
  CHECK(contains(error_of([&] { visited<R>(spec, ctx); }), "parameter 'layer'"));
  spec.measure = "softmax-candidates";
  spec.schedule = "constant";
  spec.schedule_params = nlohmann::json::object();
  for (const nlohmann::json& bad : {nlohmann::json{{"candidates", 1}},
                                    nlohmann::json{{"candidates", 2.5}},
                                    nlohmann::json{{"candidates", "all"}}}) {
    spec.measure_params = bad;
    CHECK(contains(error_of([&] { visited<R>(spec, ctx); }), "parameter 'candidates'"));
  }
  spec.measure_params = {{"variant", "median"}};
  CHECK(contains(error_of([&] { visited<R>(spec, ctx); }), "parameter 'variant'"));
  spec.measure_params = {{"k", 8}};
  CHECK(contains(error_of([&] { visited<R>(spec, ctx); }), "parameter 'k': unknown parameter"));
  spec.measure_params = nlohmann::json::object();
  spec.measure = "classifier";
  const calm::PolicyContext elsewhere{fs::path(CALM_FIXTURES) / "tiny-gqa-f32-untied", 64};
  CHECK(contains(error_of([&] { visited<R>(spec, elsewhere); }), "calm.safetensors"));
}

TEST_CASE("a user's schedule joins the registry by naming itself, as a measure does") {
  static_assert(calm::has_policy_name<HalvingThreshold>);
  static_assert(calm::has_policy_name<calm::CandidateSoftmax>);  // shipped: named by its traits
  static_assert(calm::has_policy_name<calm::LocalOracle>);
  static_assert(!calm::has_policy_name<int>);
  const std::vector<std::string> names = WithHalving::schedule_names();
  CHECK(std::find(names.begin(), names.end(), "halving") != names.end());
  CHECK(WithHalving::thresholded("halving"));
  calm::PolicySpec spec;
  spec.measure = "softmax";
  spec.schedule = "halving";
  spec.lambda = 0.6f;
  const auto late_threshold = []<class M, class S>(M, S s) {
    if constexpr (std::is_same_v<S, HalvingThreshold>) return s.threshold(9, 10);
    else return -1.0f;
  };
  const float threshold = WithHalving::visit(spec, calm::PolicyContext{}, late_threshold);
  CHECK(threshold == 0.3f);
  spec.schedule_params = nlohmann::json{{"tau", 2}};  // it takes no parameters: named
  CHECK(contains(error_of([&] {
                   WithHalving::visit(spec, calm::PolicyContext{}, [](auto, auto) { return 0; });
                 }),
                 "tau"));
}

TEST_CASE("a policy round-trips through calm_calibration.json's schedule object") {
  calm::PolicySpec spec = calm::PolicyRegistry<>::spec_of(
      calm::SoftmaxResponse{}, calm::DecayingThreshold{.lambda = 0.7f, .tau = 2.5f},
      calm::DecoderOptions{2, 3, calm::Propagation::true_cache, {}});
  calm::calibrate::CalibrationRecord record;
  record.measure = spec.measure;
  record.schedule = calm::calibration_schedule_json(spec);
  record.result.lambda_star = 0.7;
  const calm::PolicySpec back = *calm::calibrated_policy(record);
  CHECK(back.measure == "softmax");
  CHECK(back.schedule == "decaying");
  CHECK(back.schedule_params == nlohmann::json{{"tau", 2.5}});
  CHECK(back.lambda == 0.7f);
  CHECK(back.options.first_exit == 2);
  CHECK(back.options.interval == 3);
  CHECK(back.options.propagation == calm::Propagation::true_cache);
  // Nothing certified: no policy; bad keys named with the file.
  record.result.lambda_star.reset();
  CHECK(!calm::calibrated_policy(record).has_value());
  record.result.lambda_star = 0.5;
  record.schedule["first_exit"] = 0;
  CHECK(contains(error_of([&] { calm::calibrated_policy(record, {}, "c.json"); }),
                 "c.json: key 'schedule.first_exit'"));
  record.schedule["first_exit"] = 1;
  record.schedule["propagation"] = "sideways";
  CHECK(contains(error_of([&] { calm::calibrated_policy(record, {}, "c.json"); }),
                 "c.json: key 'schedule.propagation'"));
}

TEST_CASE("a user's measure, registered, calibrates, round-trips through the JSON and decodes") {
  const auto model = calm::LlamaModel::load(kBundled);
  const calm::PolicyContext ctx{kBundled, model->hidden_size()};
  const calm::PolicySpec spec = WithEntropy::spec_of(Entropy{.temperature = 0.5f},
                                                     calm::ConstantThreshold{0.6f});
  CHECK(spec.measure == "entropy");
  CHECK(spec.measure_params == nlohmann::json{{"temperature", 0.5}});
  // Calibrate its threshold on a few prompts (loss: tokens differing from the full model's).
  const std::vector<std::vector<int>> prompts = {{1, 30, 200}, {1, 17, 99}, {1, 400, 12},
                                                 {1, 8, 600}, {1, 77, 31}, {1, 5, 9}};
  calm::FullDecoder<calm::LlamaSession> full{calm::LlamaSession(model)};
  std::vector<std::vector<int>> reference;
  for (const auto& p : prompts) reference.push_back(full.generate(p, 12).tokens);
  calm::calibrate::LearnThenTestOptions options;
  options.delta = 0.5;
  options.epsilon = 0.2;
  options.method = calm::calibrate::PValueMethod::hoeffding;
  calm::calibrate::CalibrationRecord record;
  record.result = calm::calibrate::calibrate(
      [&](double lambda) {
        calm::PolicySpec at = spec;
        at.lambda = static_cast<float>(lambda);
        std::vector<double> losses;
        for (std::size_t i = 0; i < prompts.size(); ++i)
          losses.push_back(WithEntropy::with_decoder(calm::LlamaSession(model), at, ctx,
                                                     [&](auto&& d) {
            return calm::calibrate::token_mismatch_distance(d.generate(prompts[i], 12).tokens,
                                                            reference[i]);
          }));
        return losses;
      },
      options);
  REQUIRE(record.result.table.front().tested);
  CHECK(*record.result.table.front().mean_loss == 0.0);  // lambda = 1 never exits
  REQUIRE(record.result.lambda_star.has_value());
  // Written and read by the library, then looked up by name in the user's registry.
  record.measure = spec.measure;
  record.schedule = calm::calibration_schedule_json(spec);
  record.model_fingerprint = calm::calibrate::model_fingerprint(kBundled);
  const calm::test::ScratchDir dir("registry");
  const fs::path file = dir.path / "calm_calibration.json";
  calm::calibrate::write_calibration_json(file, record);
  const calm::PolicySpec back = *calm::calibrated_policy(calm::calibrate::read_calibration_json(file));
  CHECK(back.measure == "entropy");
  // Every shipped measure name the registry knows survives the file and names a measure of the
  // registry again (the file has no table of names of its own).
  record.schedule.erase("measure_params");  // the entropy measure's, which no other takes
  for (const std::string& name : calm::PolicyRegistry<>::measure_names()) {
    CAPTURE(name);
    record.measure = name;
    calm::calibrate::write_calibration_json(file, record);
    const auto read = calm::calibrated_policy(calm::calibrate::read_calibration_json(file));
    REQUIRE(read.has_value());
    CHECK(read->measure == name);
    CHECK(calm::PolicyRegistry<>::has_measure(read->measure));
  }
  CHECK(back.lambda == static_cast<float>(*record.result.lambda_star));
  WithEntropy::visit(back, ctx, []<class M, class S>(M m, S) {
    if constexpr (std::is_same_v<M, Entropy>) CHECK(m.temperature == 0.5f);
    else FAIL("expected Entropy");
    return 0;
  });
  const auto decoded = WithEntropy::with_decoder(calm::LlamaSession(model), back, ctx,
                                                 [&](auto&& d) { return d.generate(prompts[0], 12); });
  CHECK(decoded.tokens.size() == 12);
  // The shipped registry does not know it, and says so.
  CHECK(contains(error_of([&] { visited<calm::PolicyRegistry<>>(back, ctx); }),
                 "unknown confidence measure 'entropy'"));
}
