// Policies by name: the one table that maps the names a program or a calibration file uses
// ("softmax", "decaying", ...) to calm's compile-time policies and their parameters, both ways.
//
//   PolicySpec      a decoding policy as data: measure and schedule names with their JSON
//                   parameters, the threshold lambda and the DecoderOptions.
//   PolicyRegistry  PolicyRegistry<Measures<...>, Schedules<...>>::visit(spec, context, f) calls
//                   f(measure, schedule) with the objects the spec names (one instantiation per
//                   pair that can decode: a thresholded measure with a thresholded schedule, or
//                   NoConfidence with a fixed-exit schedule); with_decoder() builds the Decoder.
//
// A policy joins the table by naming itself: `static constexpr std::string_view policy_name`
// (optionally more `policy_aliases`), and, if it has parameters, `nlohmann::json policy_params()
// const` and `static P from_policy_params(const nlohmann::json&, const calm::PolicyContext&)`;
// or by a specialisation of calm::policy_traits<P>. A user's measure is one more type in the
// list: PolicyRegistry<Measures<ShippedMeasureList..., MyMeasure>> (see
// examples/custom_measure.cpp, which calibrates and decodes with one).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "calm/calibrate/calibration_json.hpp"
#include "calm/confidence/candidate_softmax.hpp"
#include "calm/confidence/exit_classifier.hpp"
#include "calm/confidence/hidden_saturation.hpp"
#include "calm/confidence/none.hpp"
#include "calm/confidence/softmax_response.hpp"
#include "calm/core/error.hpp"
#include "calm/decoder.hpp"
#include "calm/schedule/constant.hpp"
#include "calm/schedule/decaying.hpp"
#include "calm/schedule/local_oracle.hpp"
#include "calm/schedule/never.hpp"
#include "calm/schedule/static_exit.hpp"

namespace calm {

// What a policy may need to be built from its parameters: the model's folder (files such as
// calm.safetensors live there) and its hidden size.
struct PolicyContext {
  PolicyContext() = default;
  PolicyContext(std::filesystem::path dir, std::size_t hidden,
                std::shared_ptr<const ExitClassifier> classifier = nullptr)
      : model_dir(std::move(dir)), hidden_size(hidden), exit_classifier(std::move(classifier)) {}

  std::filesystem::path model_dir;
  std::size_t hidden_size = 0;
  // The classifier, once read: a program that builds many decoders reads calm.safetensors once.
  std::shared_ptr<const ExitClassifier> exit_classifier;
};

// A decoding policy as data.
struct PolicySpec {
  std::string measure = "softmax";
  nlohmann::json measure_params = nlohmann::json::object();
  std::string schedule = "decaying";
  nlohmann::json schedule_params = nlohmann::json::object();
  float lambda = 0.9f;  // threshold of thresholded schedules
  DecoderOptions options;
};

// --- names and parameters of one policy -------------------------------------------------------

namespace detail {
[[noreturn]] inline void bad_param(std::string_view policy, const std::string& key,
                                   const std::string& problem) {
  throw Error("policy '" + std::string(policy) + "': parameter '" + key + "': " + problem);
}
// Refuses keys other than `known`: a misspelt parameter must not be ignored in silence.
inline void check_keys(std::string_view policy, const nlohmann::json& params,
                       std::initializer_list<std::string_view> known) {
  if (!params.is_object())
    throw Error("policy '" + std::string(policy) + "': parameters must be a JSON object, got " +
                params.type_name());
  for (const auto& [key, value] : params.items()) {
    bool ok = false;
    for (std::string_view k : known) ok = ok || key == k;
    if (!ok) bad_param(policy, key, "unknown parameter");
  }
}
inline double number_param(std::string_view policy, const nlohmann::json& params,
                           const std::string& key, double fallback, double lo, double hi) {
  if (!params.contains(key)) return fallback;
  const nlohmann::json& v = params.at(key);
  if (!v.is_number() || !(v.get<double>() >= lo && v.get<double>() <= hi))
    bad_param(policy, key, "expected a number in [" + std::to_string(lo) + ", " +
                               std::to_string(hi) + "]");
  return v.get<double>();
}
}  // namespace detail

// The default traits read the policy's own members; the shipped policies are specialised below.
template <class P>
struct policy_traits {
  static constexpr std::string_view name = P::policy_name;
  static std::vector<std::string_view> names() {
    std::vector<std::string_view> out{P::policy_name};
    if constexpr (requires { P::policy_aliases; })
      for (std::string_view a : P::policy_aliases) out.push_back(a);
    return out;
  }
  static P make(std::string_view /*as*/, const nlohmann::json& params, const PolicyContext& ctx) {
    if constexpr (requires { P::from_policy_params(params, ctx); }) {
      return P::from_policy_params(params, ctx);
    } else {
      detail::check_keys(name, params, {});
      return P{};
    }
  }
  // A schedule is made from its parameters and the threshold lambda: by its own
  // `from_policy_params(params, lambda)`, else default-constructed with its `lambda` member set
  // (when it has one: a thresholded schedule).
  static P make(std::string_view /*as*/, const nlohmann::json& params, float lambda) {
    if constexpr (requires { P::from_policy_params(params, lambda); }) {
      return P::from_policy_params(params, lambda);
    } else {
      detail::check_keys(name, params, {});
      P p{};
      if constexpr (requires { p.lambda = lambda; }) p.lambda = lambda;
      return p;
    }
  }
  static std::string name_of(const P&) { return std::string(name); }
  static nlohmann::json params(const P& p) {
    if constexpr (requires { p.policy_params(); }) return p.policy_params();
    else return nlohmann::json::object();
  }
};

template <>
struct policy_traits<SoftmaxResponse> {
  static constexpr std::string_view name = "softmax";
  static std::vector<std::string_view> names() { return {"softmax", "softmax-top1"}; }
  static SoftmaxResponse make(std::string_view as, const nlohmann::json& params,
                              const PolicyContext&) {
    detail::check_keys(as, params, {"variant"});
    std::string variant = as == "softmax-top1" ? "top1" : "gap";
    if (params.contains("variant")) {
      if (!params["variant"].is_string()) detail::bad_param(as, "variant", "expected a string");
      variant = params["variant"].get<std::string>();
    }
    if (variant == "gap") return SoftmaxResponse{};
    if (variant == "top1") return SoftmaxResponse{SoftmaxResponse::Variant::top1};
    detail::bad_param(as, "variant", "expected \"gap\" or \"top1\", got \"" + variant + "\"");
  }
  static std::string name_of(const SoftmaxResponse& m) {
    return m.variant() == SoftmaxResponse::Variant::top1 ? "softmax-top1" : "softmax";
  }
  static nlohmann::json params(const SoftmaxResponse&) { return nlohmann::json::object(); }
};

// {"candidates": k (default 32, >= 2), "variant": "gap" | "top1"}.
template <>
struct policy_traits<CandidateSoftmax> {
  static constexpr std::string_view name = "softmax-candidates";
  static std::vector<std::string_view> names() { return {name}; }
  static CandidateSoftmax make(std::string_view as, const nlohmann::json& params,
                               const PolicyContext&) {
    detail::check_keys(as, params, {"candidates", "variant"});
    const double k = detail::number_param(as, params, "candidates",
                                          double(CandidateSoftmax::kDefaultCandidates), 2.0,
                                          double(1u << 20));
    if (k != static_cast<double>(static_cast<std::size_t>(k)))
      detail::bad_param(as, "candidates", "expected a whole number");
    std::string variant = "gap";
    if (params.contains("variant")) {
      if (!params["variant"].is_string()) detail::bad_param(as, "variant", "expected a string");
      variant = params["variant"].get<std::string>();
    }
    if (variant != "gap" && variant != "top1")
      detail::bad_param(as, "variant", "expected \"gap\" or \"top1\", got \"" + variant + "\"");
    return CandidateSoftmax{static_cast<std::size_t>(k), variant == "top1"
                                                             ? CandidateSoftmax::Variant::top1
                                                             : CandidateSoftmax::Variant::gap};
  }
  static std::string name_of(const CandidateSoftmax&) { return std::string(name); }
  static nlohmann::json params(const CandidateSoftmax& m) {
    nlohmann::json p = {{"candidates", m.candidates()}};
    if (m.variant() == CandidateSoftmax::Variant::top1) p["variant"] = "top1";
    return p;
  }
};

template <>
struct policy_traits<HiddenSaturation> {
  static constexpr std::string_view name = "saturation";
  static std::vector<std::string_view> names() { return {name}; }
  static HiddenSaturation make(std::string_view as, const nlohmann::json& params,
                               const PolicyContext&) {
    detail::check_keys(as, params, {});
    return {};
  }
  static std::string name_of(const HiddenSaturation&) { return std::string(name); }
  static nlohmann::json params(const HiddenSaturation&) { return nlohmann::json::object(); }
};

// The classifier's weights: {"file": path} (relative to the model folder), default
// calm.safetensors next to the model.
template <>
struct policy_traits<ExitClassifier> {
  static constexpr std::string_view name = "classifier";
  static std::vector<std::string_view> names() { return {name}; }
  static ExitClassifier make(std::string_view as, const nlohmann::json& params,
                             const PolicyContext& ctx) {
    detail::check_keys(as, params, {"file"});
    // Already read by the caller (from the file these parameters name): no reading per decoder.
    if (ctx.exit_classifier) return *ctx.exit_classifier;
    std::filesystem::path file = ctx.model_dir / "calm.safetensors";
    if (params.contains("file")) {
      if (!params["file"].is_string()) detail::bad_param(as, "file", "expected a path string");
      file = ctx.model_dir / params["file"].get<std::string>();
    }
    if (!std::filesystem::exists(file))
      throw Error("the classifier measure needs '" + file.string() +
                  "': train it with calm-train-classifier");
    return ExitClassifier::load(file, ctx.hidden_size);
  }
  static std::string name_of(const ExitClassifier&) { return std::string(name); }
  static nlohmann::json params(const ExitClassifier&) { return nlohmann::json::object(); }
};

template <>
struct policy_traits<NoConfidence> {
  static constexpr std::string_view name = "none";
  static std::vector<std::string_view> names() { return {name}; }
  static NoConfidence make(std::string_view as, const nlohmann::json& params,
                           const PolicyContext&) {
    detail::check_keys(as, params, {});
    return {};
  }
  static std::string name_of(const NoConfidence&) { return std::string(name); }
  static nlohmann::json params(const NoConfidence&) { return nlohmann::json::object(); }
};

// Thresholded schedules take lambda from the spec; the rest from their parameters.
template <>
struct policy_traits<ConstantThreshold> {
  static constexpr std::string_view name = "constant";
  static std::vector<std::string_view> names() { return {name}; }
  static ConstantThreshold make(std::string_view as, const nlohmann::json& params, float lambda) {
    detail::check_keys(as, params, {});
    return ConstantThreshold{lambda};
  }
  static std::string name_of(const ConstantThreshold&) { return std::string(name); }
  static nlohmann::json params(const ConstantThreshold&) { return nlohmann::json::object(); }
};

template <>
struct policy_traits<DecayingThreshold> {
  static constexpr std::string_view name = "decaying";
  static std::vector<std::string_view> names() { return {"decaying", "decaying-scaled"}; }
  static DecayingThreshold make(std::string_view as, const nlohmann::json& params, float lambda) {
    detail::check_keys(as, params, {"tau"});
    const float tau = static_cast<float>(detail::number_param(as, params, "tau", 4.0, 0.0, 1000.0));
    return DecayingThreshold{lambda, tau,
                             as == "decaying-scaled" ? DecayingThreshold::Form::scaled
                                                     : DecayingThreshold::Form::paper};
  }
  static std::string name_of(const DecayingThreshold& s) {
    return s.form == DecayingThreshold::Form::scaled ? "decaying-scaled" : "decaying";
  }
  static nlohmann::json params(const DecayingThreshold& s) { return {{"tau", s.tau}}; }
};

template <>
struct policy_traits<StaticExit> {
  static constexpr std::string_view name = "static";
  static std::vector<std::string_view> names() { return {name}; }
  static StaticExit make(std::string_view as, const nlohmann::json& params, float) {
    detail::check_keys(as, params, {"layer"});
    const double layer = detail::number_param(as, params, "layer", 1.0, 1.0, 65536.0);
    if (layer != static_cast<double>(static_cast<std::size_t>(layer)))
      detail::bad_param(as, "layer", "expected a whole number");
    return StaticExit{static_cast<std::size_t>(layer)};
  }
  static std::string name_of(const StaticExit&) { return std::string(name); }
  static nlohmann::json params(const StaticExit& s) { return {{"layer", s.layer}}; }
};

template <>
struct policy_traits<Never> {
  static constexpr std::string_view name = "never";
  static std::vector<std::string_view> names() { return {"never", "full"}; }
  static Never make(std::string_view as, const nlohmann::json& params, float) {
    detail::check_keys(as, params, {});
    return {};
  }
  static std::string name_of(const Never&) { return std::string(name); }
  static nlohmann::json params(const Never&) { return nlohmann::json::object(); }
};

template <>
struct policy_traits<LocalOracle> {
  static constexpr std::string_view name = "oracle";
  static std::vector<std::string_view> names() { return {name}; }
  static LocalOracle make(std::string_view as, const nlohmann::json& params, float) {
    detail::check_keys(as, params, {});
    return {};
  }
  static std::string name_of(const LocalOracle&) { return std::string(name); }
  static nlohmann::json params(const LocalOracle&) { return nlohmann::json::object(); }
};

// --- the registry ------------------------------------------------------------------------------

template <class... Ms>
struct Measures {};
template <class... Ss>
struct Schedules {};

using ShippedMeasures = Measures<SoftmaxResponse, CandidateSoftmax, HiddenSaturation,
                                 ExitClassifier, NoConfidence>;
using ShippedSchedules = Schedules<DecayingThreshold, ConstantThreshold, StaticExit, Never,
                                   LocalOracle>;

// Whether P has a name in the registry: its own `policy_name`, or as a shipped policy (named
// by its policy_traits specialisation above). What a tool that reports policies by name asks.
template <class P>
inline constexpr bool has_policy_name =
    requires { P::policy_name; } ||
    []<class... Ms, class... Ss>(Measures<Ms...>, Schedules<Ss...>) {
      return (std::is_same_v<P, Ms> || ...) || (std::is_same_v<P, Ss> || ...);
    }(ShippedMeasures{}, ShippedSchedules{});

template <class MeasureList = ShippedMeasures, class ScheduleList = ShippedSchedules>
class PolicyRegistry;

template <class... Ms, class... Ss>
class PolicyRegistry<Measures<Ms...>, Schedules<Ss...>> {
  static_assert((ConfidenceMeasure<Ms> && ...), "PolicyRegistry: every measure must be a "
                "ConfidenceMeasure (calm/concepts.hpp)");
  static_assert((ExitSchedule<Ss> && ...), "PolicyRegistry: every schedule must be an "
                "ExitSchedule (calm/concepts.hpp)");

 public:
  static std::vector<std::string> measure_names() { return names_of<Ms...>(); }
  static std::vector<std::string> schedule_names() { return names_of<Ss...>(); }

  static bool has_measure(std::string_view name) { return (named<Ms>(name) || ...); }
  static bool has_schedule(std::string_view name) { return (named<Ss>(name) || ...); }
  // Whether a schedule name takes a threshold (and so a measure other than "none").
  static bool thresholded(std::string_view schedule) {
    return ((named<Ss>(schedule) && bool(Ss::uses_confidence)) || ...);
  }

  // Calls f(measure, schedule) with the policies `spec` names. A thresholded schedule needs a
  // measure that scores; a fixed-exit schedule takes measure "none". f must return the same
  // type for every pair.
  template <class F>
  static decltype(auto) visit(const PolicySpec& spec, const PolicyContext& ctx, F&& f) {
    spec.options.validate();
    if (!std::isfinite(spec.lambda))
      throw Error("policy: the threshold lambda must be a finite number, got " +
                  std::to_string(spec.lambda));
    if (!has_schedule(spec.schedule))
      throw Error("unknown schedule '" + spec.schedule + "' (known: " + join(schedule_names()) + ")");
    if (!has_measure(spec.measure))
      throw Error("unknown confidence measure '" + spec.measure + "' (known: " +
                  join(measure_names()) + ")");
    if (thresholded(spec.schedule) == (spec.measure == "none"))
      throw Error("schedule '" + spec.schedule + "' " +
                  (thresholded(spec.schedule) ? "needs a confidence measure, not 'none'"
                                              : "uses no confidence measure: use 'none', not '" +
                                                    spec.measure + "'"));
    return visit_schedule<F, Ss...>(spec, ctx, f);
  }

  // The Decoder the spec describes, on `backend`, given to f(decoder): it owns a backend passed
  // as an rvalue and borrows one passed as an lvalue (Decoder<B&, ...>).
  template <class Backend, class F>
  static decltype(auto) with_decoder(Backend&& backend, const PolicySpec& spec,
                                     const PolicyContext& ctx, F&& f) {
    using B = std::conditional_t<std::is_lvalue_reference_v<Backend>, Backend,
                                 std::remove_cvref_t<Backend>>;
    return visit(spec, ctx, [&]<class M, class S>(M measure, S schedule) {
      return f(Decoder<B, M, S>(std::forward<Backend>(backend), std::move(measure),
                                std::move(schedule), spec.options));
    });
  }

  // A spec naming these policy objects (lambda from a thresholded schedule).
  template <class M, class S>
  static PolicySpec spec_of(const M& measure, const S& schedule, DecoderOptions options = {}) {
    PolicySpec spec;
    spec.measure = policy_traits<M>::name_of(measure);
    spec.measure_params = policy_traits<M>::params(measure);
    spec.schedule = policy_traits<S>::name_of(schedule);
    spec.schedule_params = policy_traits<S>::params(schedule);
    if constexpr (S::uses_confidence) spec.lambda = schedule.lambda;
    spec.options = std::move(options);
    return spec;
  }

 private:
  template <class P>
  static bool named(std::string_view name) {
    for (std::string_view n : policy_traits<P>::names())
      if (n == name) return true;
    return false;
  }
  template <class... Ps>
  static std::vector<std::string> names_of() {
    std::vector<std::string> out;
    ((void)[&] { for (std::string_view n : policy_traits<Ps>::names()) out.emplace_back(n); }(), ...);
    return out;
  }
  static std::string join(const std::vector<std::string>& names) {
    std::string out;
    for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
    return out;
  }

  // Schedule S if the spec names it, else the rest of the list; the last one is the match, as
  // visit() checked the name is listed.
  template <class F, class S, class... Rest>
  static decltype(auto) visit_schedule(const PolicySpec& spec, const PolicyContext& ctx, F& f) {
    if constexpr (sizeof...(Rest) == 0) {
      return build<F, S>(spec, ctx, f);
    } else {
      if (named<S>(spec.schedule)) return build<F, S>(spec, ctx, f);
      return visit_schedule<F, Rest...>(spec, ctx, f);
    }
  }
  template <class F, class S>
  static decltype(auto) build(const PolicySpec& spec, const PolicyContext& ctx, F& f) {
    S schedule = policy_traits<S>::make(spec.schedule, spec.schedule_params, spec.lambda);
    if constexpr (S::uses_confidence)
      return visit_measure<F, S, Ms...>(spec, ctx, f, std::move(schedule));
    else
      return f(NoConfidence{}, std::move(schedule));
  }
  // The same over the measures, for a thresholded schedule (NoConfidence is skipped).
  template <class F, class S, class M, class... Rest>
  static decltype(auto) visit_measure(const PolicySpec& spec, const PolicyContext& ctx, F& f,
                                      S schedule) {
    constexpr bool last = sizeof...(Rest) == 0;
    if constexpr (std::is_same_v<M, NoConfidence> && !last) {
      return visit_measure<F, S, Rest...>(spec, ctx, f, std::move(schedule));
    } else if constexpr (last) {  // the match (or, for NoConfidence, unreachable)
      using Use = std::conditional_t<std::is_same_v<M, NoConfidence>,
                                     typename FirstScoring<Ms...>::type, M>;
      return f(policy_traits<Use>::make(spec.measure, spec.measure_params, ctx),
               std::move(schedule));
    } else {
      if (named<M>(spec.measure))
        return f(policy_traits<M>::make(spec.measure, spec.measure_params, ctx),
                 std::move(schedule));
      return visit_measure<F, S, Rest...>(spec, ctx, f, std::move(schedule));
    }
  }
  // The first measure of the list that scores (not NoConfidence): the fallback type of an
  // exhausted search, never reached after visit()'s name checks.
  template <class First, class... Rest>
  struct FirstScoring {
    using type = std::conditional_t<std::is_same_v<First, NoConfidence>,
                                    typename FirstScoring<Rest...>::type, First>;
  };
  template <class Last>
  struct FirstScoring<Last> {
    using type = Last;
  };
};

// --- the policy of calm_calibration.json -------------------------------------------------------
//
// The record's "measure" is the measure's name; its "schedule" object holds the schedule's name
// ("schedule"), its parameters (e.g. "tau"), the DecoderOptions ("first_exit", "interval",
// "propagation") and, when the measure has any, "measure_params".

inline nlohmann::json calibration_schedule_json(const PolicySpec& spec) {
  nlohmann::json s = spec.schedule_params.is_object() ? spec.schedule_params
                                                      : nlohmann::json::object();
  s["schedule"] = spec.schedule;
  s["first_exit"] = spec.options.first_exit;
  s["interval"] = spec.options.interval;
  s["propagation"] = propagation_name(spec.options.propagation);
  if (spec.measure_params.is_object() && !spec.measure_params.empty())
    s["measure_params"] = spec.measure_params;
  return s;
}

// The policy a calibration record certifies, at its lambda* (nullopt: nothing certified, the
// full model runs). A record whose schedule is a plain string describes no parameters: the
// defaults' schedule and options are kept. Keys are checked; errors name `source`.
inline std::optional<PolicySpec> calibrated_policy(const calibrate::CalibrationRecord& record,
                                                   PolicySpec defaults = {},
                                                   const std::string& source = "calibration record") {
  if (!record.result.lambda_star) return std::nullopt;
  PolicySpec spec = std::move(defaults);
  spec.measure = record.measure;
  spec.lambda = static_cast<float>(*record.result.lambda_star);
  if (!record.schedule.is_object()) return spec;
  const auto fail = [&](const std::string& key, const std::string& problem) -> void {
    throw Error(source + ": key 'schedule." + key + "': " + problem);
  };
  spec.schedule_params = nlohmann::json::object();
  for (const auto& [key, value] : record.schedule.items()) {
    if (key == "schedule") {
      if (!value.is_string()) fail(key, "expected a string");
      spec.schedule = value.get<std::string>();
    } else if (key == "first_exit" || key == "interval") {
      if (!value.is_number_integer() || value.get<std::int64_t>() < 1 ||
          value.get<std::int64_t>() > (1 << 16))
        fail(key, "expected an integer in [1, 65536]");
      (key == "first_exit" ? spec.options.first_exit : spec.options.interval) =
          value.get<std::size_t>();
    } else if (key == "propagation") {
      if (!value.is_string() || (value != "propagate" && value != "true_cache"))
        fail(key, "expected \"propagate\" or \"true_cache\"");
      spec.options.propagation =
          value == "true_cache" ? Propagation::true_cache : Propagation::propagate;
    } else if (key == "measure_params") {
      if (!value.is_object()) fail(key, "expected an object");
      spec.measure_params = value;
    } else {
      spec.schedule_params[key] = value;  // the schedule's own: checked below
    }
  }
  // The shipped policies' parameters are checked now, so that a wrong one is reported with the
  // file and key, not later by the policy alone. Other names are left to the registry in use.
  try {
    [&]<class... Ss>(Schedules<Ss...>) {
      (void)([&] {
        for (std::string_view n : policy_traits<Ss>::names())
          if (n == spec.schedule) {
            (void)policy_traits<Ss>::make(spec.schedule, spec.schedule_params, spec.lambda);
            return true;
          }
        return false;
      }() || ...);
    }(ShippedSchedules{});
  } catch (const Error& e) {
    throw Error(source + ": key 'schedule': " + e.what());
  }
  try {
    if (spec.measure == "classifier") {  // its file is read when the decoder is built
      detail::check_keys(spec.measure, spec.measure_params, {"file"});
      if (spec.measure_params.contains("file") && !spec.measure_params["file"].is_string())
        detail::bad_param(spec.measure, "file", "expected a path string");
    } else {
      [&]<class... Ms>(Measures<Ms...>) {
        (void)([&] {
          if constexpr (std::is_same_v<Ms, ExitClassifier>) {
            return false;
          } else {
            for (std::string_view n : policy_traits<Ms>::names())
              if (n == spec.measure) {
                (void)policy_traits<Ms>::make(spec.measure, spec.measure_params, PolicyContext{});
                return true;
              }
            return false;
          }
        }() || ...);
      }(ShippedMeasures{});
    }
  } catch (const Error& e) {
    fail("measure_params", e.what());
  }
  return spec;
}

}  // namespace calm
