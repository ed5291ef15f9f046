// Turns command-line flags into compile-time policies: the programs (generate, calibrate, eval)
// share these flags and this one dispatch, which instantiates Decoder<LlamaSession, Measure,
// Schedule> (or the SpeculativeDecoder) for each measure x schedule the user can name, then calls
// a generic lambda with it.
#pragma once

#include <calm/backends/llama/llama.hpp>
#include <calm/confidence/exit_classifier.hpp>
#include <calm/confidence/hidden_saturation.hpp>
#include <calm/confidence/softmax_response.hpp>
#include <calm/decoder.hpp>
#include <calm/schedule/constant.hpp>
#include <calm/schedule/decaying.hpp>
#include <calm/schedule/local_oracle.hpp>
#include <calm/schedule/never.hpp>
#include <calm/schedule/static_exit.hpp>

#include <CLI/CLI.hpp>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

namespace calm::cli {

struct PolicyFlags {
  std::string measure = "softmax";  // softmax | softmax-top1 | saturation | classifier | oracle | static | full
  float threshold = 0.9f;           // lambda
  float tau = 4.0f;                 // decay temperature; with --schedule constant it is unused
  std::string schedule = "decaying";  // decaying | decaying-scaled | constant
  std::size_t first_exit = 1;
  std::size_t interval = 1;
  std::size_t static_layer = 1;       // for --measure static
  std::string propagation = "propagate";
  std::filesystem::path classifier;   // default: <model>/calm.safetensors
  // The exit classifier once load_classifier() has read it; with_decoder then copies it instead
  // of reading the file again for every decoder (calm-eval builds thousands).
  std::shared_ptr<const ExitClassifier> exit_classifier;

  std::filesystem::path classifier_file(const std::filesystem::path& model_dir) const {
    return classifier.empty() ? model_dir / "calm.safetensors" : classifier;
  }
  void load_classifier(const std::filesystem::path& model_dir, std::size_t hidden) {
    const auto file = classifier_file(model_dir);
    if (!std::filesystem::exists(file))
      throw Error("--measure classifier needs '" + file.string() +
                  "': train it with calm-train-classifier --model " + model_dir.string());
    exit_classifier = std::make_shared<const ExitClassifier>(ExitClassifier::load(file, hidden));
  }

  DecoderOptions decoder_options() const {
    DecoderOptions o;
    o.first_exit = first_exit;
    o.interval = interval;
    o.propagation = propagation == "true_cache" ? Propagation::true_cache : Propagation::propagate;
    return o;
  }
  // True when the measure has a threshold to calibrate.
  bool thresholded() const {
    return measure == "softmax" || measure == "softmax-top1" || measure == "saturation" ||
           measure == "classifier";
  }
  std::string schedule_description() const {
    if (!thresholded()) return measure;
    return schedule + (schedule == "constant" ? "" : "(tau=" + std::to_string(tau) + ")") +
           ", first_exit=" + std::to_string(first_exit) + ", interval=" + std::to_string(interval) +
           ", propagation=" + propagation;
  }
};

inline void add_policy_flags(CLI::App& app, PolicyFlags& f) {
  app.add_option("--measure", f.measure, "confidence measure")
      ->check(CLI::IsMember({"softmax", "softmax-top1", "saturation", "classifier", "oracle",
                             "static", "full"}));
  app.add_option("--threshold", f.threshold, "exit threshold lambda")->check(CLI::Range(0.0, 1.0));
  app.add_option("--tau", f.tau, "decay temperature tau >= 0 (docs/design.md §4)")
      ->check(CLI::Range(0.0, 1000.0));
  app.add_option("--schedule", f.schedule, "threshold over steps: decaying (paper form), "
                 "decaying-scaled (original code form), constant")
      ->check(CLI::IsMember({"decaying", "decaying-scaled", "constant"}));
  app.add_option("--first-exit", f.first_exit, "first exit point, 1-based layer")->check(CLI::Range(1, 1 << 16));
  app.add_option("--interval", f.interval, "layers between exit points")->check(CLI::Range(1, 1 << 16));
  app.add_option("--static-layer", f.static_layer, "exit layer for --measure static (1-based)")
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--propagation", f.propagation, "K/V of skipped layers: propagate | true_cache")
      ->check(CLI::IsMember({"propagate", "true_cache"}));
  app.add_option("--classifier", f.classifier, "calm.safetensors for --measure classifier "
                 "(default: next to the model)");
}

namespace detail {
template <class Measure, class F>
decltype(auto) with_threshold_schedule(Measure measure, float lambda, const PolicyFlags& flags,
                                       F&& f) {
  if (flags.schedule == "constant") return f(std::move(measure), ConstantThreshold{lambda});
  const auto form = flags.schedule == "decaying-scaled" ? DecayingThreshold::Form::scaled
                                                        : DecayingThreshold::Form::paper;
  return f(std::move(measure), DecayingThreshold{lambda, flags.tau, form});
}
}  // namespace detail

// A pool for --threads (none for 1: the caller runs everything).
inline std::shared_ptr<ThreadPool> make_pool(std::size_t threads) {
  return threads > 1 ? std::make_shared<ThreadPool>(threads) : nullptr;
}

// Calls f(measure, schedule) for the thresholded measures (softmax, softmax-top1, saturation,
// classifier) at threshold `lambda`.
template <class F>
decltype(auto) with_thresholded_policies(const std::filesystem::path& model_dir,
                                         std::size_t hidden_size, const PolicyFlags& flags,
                                         float lambda, F&& f) {
  if (flags.measure == "softmax")
    return detail::with_threshold_schedule(SoftmaxResponse{}, lambda, flags, f);
  if (flags.measure == "softmax-top1")
    return detail::with_threshold_schedule(SoftmaxResponse{SoftmaxResponse::Variant::top1},
                                           lambda, flags, f);
  if (flags.measure == "saturation")
    return detail::with_threshold_schedule(HiddenSaturation{}, lambda, flags, f);
  if (flags.measure != "classifier")
    throw Error("--measure '" + flags.measure + "' has no threshold");
  if (flags.exit_classifier)
    return detail::with_threshold_schedule(*flags.exit_classifier, lambda, flags, f);
  PolicyFlags loaded = flags;
  loaded.load_classifier(model_dir, hidden_size);
  return detail::with_threshold_schedule(*loaded.exit_classifier, lambda, flags, f);
}

// Calls f(measure, schedule) with the policy objects the flags name, at threshold `lambda`
// (one instantiation per measure x schedule the user can name). f must return the same type
// for every pair.
template <class F>
decltype(auto) with_policies(const std::filesystem::path& model_dir, std::size_t hidden_size,
                             const PolicyFlags& flags, float lambda, F&& f) {
  if (flags.measure == "oracle") return f(NoConfidence{}, LocalOracle{});
  if (flags.measure == "static") return f(NoConfidence{}, StaticExit{flags.static_layer});
  if (flags.measure == "full") return f(NoConfidence{}, Never{});
  return with_thresholded_policies(model_dir, hidden_size, flags, lambda, f);
}

// Calls f(decoder) with the Decoder the flags describe, at threshold `lambda`, on a new session
// of `model`. f must return the same type for every decoder type.
template <class F>
decltype(auto) with_decoder(const std::shared_ptr<const LlamaModel>& model,
                            const SessionOptions& session_options,
                            const std::filesystem::path& model_dir, const PolicyFlags& flags,
                            float lambda, F&& f) {
  const DecoderOptions opts = flags.decoder_options();
  return with_policies(model_dir, model->hidden_size(), flags, lambda,
                       [&]<class M, class S>(M measure, S schedule) {
                         return f(Decoder<LlamaSession, M, S>(LlamaSession(model, session_options),
                                                              std::move(measure),
                                                              std::move(schedule), opts));
                       });
}

// The same for SpeculativeDecoder: the flags name the draft policy (not the oracle, nor the
// full model, which cannot draft).
template <class F>
decltype(auto) with_speculative_decoder(const std::shared_ptr<const LlamaModel>& model,
                                        const SessionOptions& session_options,
                                        const std::filesystem::path& model_dir,
                                        const PolicyFlags& flags, float lambda,
                                        const SpeculativeOptions& speculative, F&& f) {
  if (flags.measure == "oracle" || flags.measure == "full")
    throw Error("--speculative drafts with early exits: choose --measure softmax, softmax-top1, "
                "saturation, classifier or static, not '" + flags.measure + "'");
  const DecoderOptions opts = flags.decoder_options();
  const auto make = [&]<class M, class S>(M measure, S schedule) {
    return f(SpeculativeDecoder<LlamaSession, M, S>(LlamaSession(model, session_options),
                                                    std::move(measure), std::move(schedule), opts,
                                                    speculative));
  };
  if (flags.measure == "static") return make(NoConfidence{}, StaticExit{flags.static_layer});
  return with_thresholded_policies(model_dir, model->hidden_size(), flags, lambda, make);
}

}  // namespace calm::cli
