// Turns command-line flags into compile-time policies: the programs (generate, calibrate, eval)
// share these flags and this one dispatch, which instantiates Decoder<LlamaSession, Measure,
// Schedule> (or the SpeculativeDecoder) for each measure x schedule the user can name, then calls
// a generic lambda with it.
#pragma once

#include "cli_parse.hpp"

#include <calm/backends/llama/llama.hpp>
#include <calm/calibrate/calibration_json.hpp>
#include <calm/confidence/exit_classifier.hpp>
#include <calm/confidence/hidden_saturation.hpp>
#include <calm/confidence/softmax_response.hpp>
#include <calm/decoder.hpp>
#include <calm/io/prompts.hpp>
#include <calm/io/token_frequencies.hpp>
#include <calm/policy_registry.hpp>
#include <calm/schedule/constant.hpp>
#include <calm/schedule/decaying.hpp>
#include <calm/schedule/local_oracle.hpp>
#include <calm/schedule/never.hpp>
#include <calm/schedule/static_exit.hpp>
#include <calm/sampling/sampler.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace calm::cli {

struct PolicyFlags {
  std::string measure = "softmax";  // softmax | softmax-top1 | softmax-candidates | saturation | classifier | oracle | static | full
  float threshold = 0.9f;           // lambda
  float tau = 4.0f;                 // decay temperature; with --schedule constant it is unused
  std::string schedule = "decaying";  // decaying | decaying-scaled | constant
  std::size_t first_exit = 1;
  std::size_t interval = 1;
  std::size_t static_layer = 1;       // for --measure static
  std::size_t candidates = CandidateSoftmax::kDefaultCandidates;  // for --measure softmax-candidates
  std::string propagation = "propagate";
  std::filesystem::path classifier;   // default: <model>/calm.safetensors
  // The exit classifier once load_classifier() has read it; with_decoder then copies it instead
  // of reading the file again for every decoder (calm-eval builds thousands).
  std::shared_ptr<const ExitClassifier> exit_classifier;
  // The measure's parameters from a calibration file (apply()), passed on by spec().
  nlohmann::json measure_params = nlohmann::json::object();

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
  // True when the measure has a threshold to calibrate: a measure of the registry that scores.
  bool thresholded() const { return scoring_measure(measure); }
  static bool scoring_measure(const std::string& name) {
    return name != "none" && PolicyRegistry<>::has_measure(name);
  }
  static std::vector<std::string> scoring_measures() {
    std::vector<std::string> out;
    for (const std::string& m : PolicyRegistry<>::measure_names())
      if (scoring_measure(m)) out.push_back(m);
    return out;
  }
  static std::string scoring_measures_text() {  // "softmax, softmax-top1, ..."
    std::string out;
    for (const std::string& m : scoring_measures()) out += (out.empty() ? "" : ", ") + m;
    return out;
  }
  // --measure's values: the registry's scoring measures, then the fixed exits these flags add.
  static std::vector<std::string> measure_choices() {
    std::vector<std::string> out = scoring_measures();
    for (const char* fixed : {"oracle", "static", "full"}) out.push_back(fixed);
    return out;
  }
  // --schedule's values: the registry's thresholded schedules.
  static std::vector<std::string> schedule_choices() {
    std::vector<std::string> out;
    for (const std::string& s : PolicyRegistry<>::schedule_names())
      if (PolicyRegistry<>::thresholded(s)) out.push_back(s);
    return out;
  }
  // Refuses values that would silently run another policy than asked: NaN thresholds, and
  // layers outside a model of num_layers layers. Names the flag and the valid range; with
  // `calibrated`, the values came from calm_calibration.json and are named by its keys.
  void check(std::size_t num_layers, bool calibrated = false) const {
    const auto name = [&](const char* flag, const char* key) {
      return std::string(calibrated ? key : flag);
    };
    const auto finite = [&](const char* flag, const char* key, float v) {
      if (!std::isfinite(v))
        throw Error(name(flag, key) + " must be a finite number, got " + std::to_string(v));
    };
    finite("--threshold", "lambda", threshold);
    finite("--tau", "tau", tau);
    const std::string L = std::to_string(num_layers);
    if (measure == "static" && (static_layer < 1 || static_layer > num_layers))
      throw Error(name("--static-layer", "layer") + " " + std::to_string(static_layer) +
                  " is outside the model's layers [1, " + L + "]");
    if (thresholded() && num_layers > 1 && first_exit >= num_layers)
      throw Error(name("--first-exit", "first_exit") + " " + std::to_string(first_exit) +
                  " leaves no exit point: exit points are layers [1, " +
                  std::to_string(num_layers - 1) + "] of " + L);
  }

  // The flags as a PolicySpec for the library's registry, at threshold lambda.
  PolicySpec spec(float lambda) const {
    PolicySpec p;
    p.options = decoder_options();
    p.lambda = lambda;
    if (!thresholded()) {
      p.measure = "none";
      p.schedule = measure == "full" ? "never" : measure;  // oracle | static | never
      if (measure == "static") p.schedule_params = {{"layer", static_layer}};
      return p;
    }
    p.measure = measure;
    p.schedule = schedule;
    p.measure_params = measure_params;
    if (schedule != "constant") p.schedule_params = {{"tau", tau}};
    if (!classifier.empty() && measure == "classifier")
      p.measure_params = {{"file", std::filesystem::absolute(classifier).string()}};
    if (measure == "softmax-candidates" && !p.measure_params.contains("candidates"))
      p.measure_params["candidates"] = candidates;
    return p;
  }
  // A spec read back (calm_calibration.json) into the flags; the names are checked here.
  void apply(const PolicySpec& p) {
    if (!scoring_measure(p.measure) || !PolicyRegistry<>::has_schedule(p.schedule) ||
        !PolicyRegistry<>::thresholded(p.schedule))
      throw Error("the calibrated policy (measure '" + p.measure + "', schedule '" + p.schedule +
                  "') is not one these flags can name");
    measure = p.measure;
    schedule = p.schedule;
    measure_params = p.measure_params.is_object() ? p.measure_params : nlohmann::json::object();
    tau = p.schedule_params.is_object() && p.schedule_params.contains("tau") &&
                  p.schedule_params["tau"].is_number()
              ? p.schedule_params["tau"].get<float>()
              : tau;
    first_exit = p.options.first_exit;
    interval = p.options.interval;
    propagation = propagation_name(p.options.propagation);
  }
  std::string schedule_description() const {
    if (!thresholded()) return measure;
    return schedule + (schedule == "constant" ? "" : "(tau=" + std::to_string(tau) + ")") +
           ", first_exit=" + std::to_string(first_exit) + ", interval=" + std::to_string(interval) +
           ", propagation=" + propagation;
  }
};

// calm-calibrate's and calm-eval's defaults: the constant schedule, with which the bundled
// model's classifier certifies lambda* = 0.945 at the committed certificate's settings, where the
// decaying schedule certifies nothing (docs/design.md §4, "The default schedule").
inline PolicyFlags calibration_policy_defaults() {
  PolicyFlags f;
  f.schedule = "constant";
  return f;
}

inline void add_policy_flags(CLI::App& app, PolicyFlags& f) {
  app.add_option("--measure", f.measure, "confidence measure")
      ->check(CLI::IsMember(PolicyFlags::measure_choices()));
  app.add_option("--threshold", f.threshold, "exit threshold lambda")->check(CLI::Range(0.0, 1.0));
  app.add_option("--tau", f.tau, "decay temperature tau >= 0 (docs/design.md §4)")
      ->check(CLI::Range(0.0, 1000.0));
  app.add_option("--schedule", f.schedule, "threshold over steps: decaying (paper form), "
                 "decaying-scaled (original code form), constant")
      ->check(CLI::IsMember(PolicyFlags::schedule_choices()));
  app.add_option("--first-exit", f.first_exit, "first exit point, 1-based layer")->check(CLI::Range(1, 1 << 16));
  app.add_option("--interval", f.interval, "layers between exit points")->check(CLI::Range(1, 1 << 16));
  app.add_option("--static-layer", f.static_layer, "exit layer for --measure static (1-based)")
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--candidates", f.candidates, "for --measure softmax-candidates: checks after a "
                 "token's first score only its k most likely tokens (docs/design.md §3d)")
      ->check(CLI::Range(2, 1 << 20));
  app.add_option("--propagation", f.propagation, "K/V of skipped layers: propagate | true_cache")
      ->check(CLI::IsMember({"propagate", "true_cache"}));
  app.add_option("--classifier", f.classifier, "calm.safetensors for --measure classifier "
                 "(default: next to the model)");
}

// True if the command line names any policy flag (add_policy_flags's options).
inline bool any_policy_flag(const CLI::App& app) {
  for (const char* flag : {"--measure", "--threshold", "--tau", "--schedule", "--first-exit",
                           "--interval", "--static-layer", "--candidates", "--propagation",
                           "--classifier"})
    if (app.count(flag) > 0) return true;
  return false;
}

// --- how calm-calibrate and calm-eval decode ---------------------------------------------------
//
// Greedy by default, or sampled with calm-generate's flags (--temperature --top-k --top-p and a
// seed flag: calm-eval's --seed is already its splits'). The settings go into the calibration
// record: the guarantee holds for this decoding only (docs/design.md §6).
inline void add_decoding_flags(CLI::App& app, calibrate::DecodingRecord& d,
                               const std::string& seed_flag) {
  app.add_option("--temperature", d.temperature, "sample at this temperature (0 = greedy, the "
                 "default)")->check(CLI::Range(0.0, 100.0));
  app.add_option("--top-k", d.top_k, "with --temperature: keep the k most likely tokens (0 = all)");
  app.add_option("--top-p", d.top_p, "with --temperature: nucleus mass in (0, 1]")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option(seed_flag, d.seed, "with --temperature: base seed; prompt i samples with "
                 "calibrate::prompt_seed(seed, i), the same for the full model and every "
                 "threshold (coupled decodes)");
}

// Sampling flags without a temperature would be ignored: refused, naming them (`given(flag)`:
// the flag is on the command line). Then what calm_calibration.json could not record, so that
// calm-calibrate refuses it before decoding rather than when writing the file.
inline void check_decoding_flags(const std::function<bool(const std::string&)>& given,
                                 const calibrate::DecodingRecord& d, const std::string& seed_flag) {
  if (d.greedy())
    for (const std::string& flag : {std::string("--top-k"), std::string("--top-p"), seed_flag})
      if (given(flag))
        throw Error(flag + " has no effect with greedy decoding: give --temperature > 0 to sample");
  if (!(d.top_p > 0.0 && d.top_p <= 1.0))
    throw Error("--top-p " + std::to_string(d.top_p) + " must be in (0, 1]");
  if (d.top_k > calibrate::kMaxTopK)
    throw Error("--top-k " + std::to_string(d.top_k) + " is more than a calibration records (at "
                "most " + std::to_string(calibrate::kMaxTopK) + "; 0 keeps every token)");
  d.sampling(0).validate();
}
inline void check_decoding_flags(const CLI::App& app, const calibrate::DecodingRecord& d,
                                 const std::string& seed_flag) {
  check_decoding_flags([&](const std::string& flag) { return app.count(flag) > 0; }, d, seed_flag);
}

// One prompt decoded as `d` says, with prompt `index`'s own seed when sampling, stopping after
// any of `ends` (Tokenizer::end_tokens), which is dropped from the tokens (the report still
// counts it: it was computed).
template <class DecoderT>
auto decode_prompt(DecoderT& decoder, const std::vector<int>& prompt,
                   const calibrate::DecodingRecord& d, std::size_t index,
                   const std::vector<int>& ends) {
  if (d.greedy()) return io::greedy_decode(decoder, prompt, d.max_new_tokens, ends);
  Sampler sampler(d.sampling(index));
  return io::decode_until_end(decoder, prompt, d.max_new_tokens, sampler, ends);
}

// A probability-like flag (delta, epsilon, a share) strictly between 0 and 1.
inline void check_unit_interval(const std::string& flag, double value) {
  if (!(value > 0.0 && value < 1.0))
    throw Error(fmt::format("{} {} must be in (0, 1) (exclusive)", flag, value));
}

// "a, b, c" with separator ", ".
inline std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

// A pool for --threads (none for 1: the caller runs everything).
inline std::shared_ptr<ThreadPool> make_pool(std::size_t threads) {
  return threads > 1 ? std::make_shared<ThreadPool>(threads) : nullptr;
}

inline PolicyContext policy_context(const std::filesystem::path& model_dir, std::size_t hidden,
                                    const PolicyFlags& flags) {
  return {model_dir, hidden, flags.exit_classifier};
}

// Calls f(decoder) with the Decoder the flags describe (looked up in calm's policy registry), at
// threshold `lambda`, on a new session of `model`. f must return the same type for every
// decoder type.
template <class F>
decltype(auto) with_decoder(const std::shared_ptr<const LlamaModel>& model,
                            const SessionOptions& session_options,
                            const std::filesystem::path& model_dir, const PolicyFlags& flags,
                            float lambda, F&& f) {
  flags.check(model->num_layers());
  return PolicyRegistry<>::with_decoder(LlamaSession(model, session_options), flags.spec(lambda),
                                        policy_context(model_dir, model->hidden_size(), flags),
                                        f);
}

// --- lossless speculation (calm-generate --speculative) -----------------------------------------
//
// Where drafts come from (--draft):
//   ngram       n-gram drafts (calm::PromptLookup) alone, a plain full-model step when none
//               matches: needs no early-exit policy, so no policy flags;
//   exit        the early-exit policy the flags name;
//   ngram+exit  n-gram drafts first, the early-exit policy when none matches.
// Not given: `exit` when policy flags or --draft-vocab are given, else kDefaultDraft with
// 3-grams only, γ = 4:
// the fastest on the bundled model, on copy-heavy and ordinary prompts (bench/README.md, "n-gram
// drafts"; shorter n-grams propose more often and are wrong more often).
struct SpeculativeFlags {
  static constexpr const char* kDefaultDraft = "ngram";
  bool enabled = false;
  SpeculativeOptions options;
  std::string draft;  // ngram | exit | ngram+exit; empty until resolve_draft()
  PromptLookup lookup{.max_ngram = 3, .min_ngram = 3};
  std::size_t draft_vocab = 0;    // V': early-exit drafts over the V' most frequent tokens; 0: all
  std::string token_frequencies;  // their ranking; default MODEL/token_frequencies.json
  // --gamma: digits (a fixed γ in [1, 64]) or "auto" (adaptive γ up to --gamma-max, with
  // --verify-row-cost as SpeculationCost::verify_row); empty: options.max_draft (4).
  std::string gamma;
  std::size_t gamma_max = 8;
  double verify_row_cost = SpeculationCost{}.verify_row;

  bool drafts_with_exits() const { return draft != "ngram"; }
  bool looks_up() const { return draft == "ngram" || draft == "ngram+exit"; }

  // Refuses draft flags that would do nothing, and picks --draft when not given, saying so when
  // it picked the default.
  void resolve_draft(const CLI::App& app) {
    const bool given = app.count("--draft") > 0;
    const bool ngram_flags = app.count("--ngram-max") > 0 || app.count("--ngram-min") > 0;
    if (!enabled) {
      for (const char* flag : {"--draft", "--ngram-max", "--ngram-min", "--gamma", "--gamma-max",
                               "--verify-row-cost", "--no-reuse-draft", "--draft-vocab",
                               "--token-frequencies"})
        if (app.count(flag) > 0) throw Error(std::string(flag) + " needs --speculative");
      return;
    }
    resolve_gamma(app);
    if (app.count("--ngram-min") == 0) lookup.min_ngram = std::min(lookup.min_ngram, lookup.max_ngram);
    if (lookup.min_ngram > lookup.max_ngram)
      throw Error("--ngram-min " + std::to_string(lookup.min_ngram) + " exceeds --ngram-max " +
                  std::to_string(lookup.max_ngram));
    if (!given) {  // --draft-vocab narrows early-exit drafts: it asks for them
      const bool exits = any_policy_flag(app) || app.count("--draft-vocab") > 0;
      draft = exits ? "exit" : kDefaultDraft;
      if (!exits)
        std::fprintf(stderr, "calm-generate: --speculative with no draft flags: %s "
                     "(--draft exit or ngram+exit drafts with early exits)\n",
                     description().c_str());
    }
    if (draft == "ngram" && any_policy_flag(app))
      throw Error("--draft ngram drafts without early exits: the policy flags would do nothing "
                  "(--draft ngram+exit drafts with them when no n-gram matches)");
    if (draft == "exit" && ngram_flags)
      throw Error("--ngram-max and --ngram-min have no effect with --draft exit (use ngram or "
                  "ngram+exit)");
    if (draft_vocab > 0 && !drafts_with_exits())
      throw Error("--draft-vocab narrows early-exit drafts; --draft ngram has none (use exit or "
                  "ngram+exit)");
    if (app.count("--token-frequencies") > 0 && draft_vocab == 0)
      throw Error("--token-frequencies ranks the tokens of --draft-vocab: give --draft-vocab N");
  }

  // --gamma N | auto, and --gamma-max and --verify-row-cost only with auto.
  void resolve_gamma(const CLI::App& app) {
    if (gamma == "auto") {
      if (!(verify_row_cost >= 0.0 && verify_row_cost <= 16.0))
        throw Error("--verify-row-cost must be in [0, 16] decode steps, got " +
                    std::to_string(verify_row_cost));
      options.adaptive_gamma = true;
      options.max_draft = gamma_max;
      options.cost.verify_row = verify_row_cost;
      return;
    }
    for (const char* flag : {"--gamma-max", "--verify-row-cost"})
      if (app.count(flag) > 0)
        throw Error(std::string(flag) + " sets adaptive speculation: give --gamma auto (or "
                    "--gamma N alone for a fixed length)");
    if (gamma.empty()) return;
    const bool digits = gamma.size() <= 2 && std::all_of(gamma.begin(), gamma.end(), [](char c) {
      return c >= '0' && c <= '9';
    });
    const std::size_t g = digits ? std::stoul(gamma) : 0;
    if (g < 1 || g > 64)
      throw Error("--gamma takes a length in [1, 64] or 'auto' (adapted to the acceptance), got '" +
                  gamma + "'");
    options.max_draft = g;
  }

  // The draft head over the draft_vocab most frequent tokens (the model's end tokens always
  // among them), or null when draft_vocab is 0.
  std::shared_ptr<const SubVocabularyHead> draft_head(const LlamaModel& model,
                                                      const std::filesystem::path& model_dir) const {
    if (draft_vocab == 0) return nullptr;
    const std::filesystem::path file = token_frequencies.empty()
                                           ? model_dir / kTokenFrequenciesFile
                                           : std::filesystem::path(token_frequencies);
    if (token_frequencies.empty() && !std::filesystem::exists(file))
      throw Error("--draft-vocab takes the most frequent tokens from '" + file.string() +
                  "', which does not exist: write it with calm-count-tokens --model DIR --text "
                  "FILE, or give --token-frequencies FILE");
    if (draft_vocab > model.vocab_size())
      throw Error("--draft-vocab " + std::to_string(draft_vocab) + " exceeds the vocabulary (" +
                  std::to_string(model.vocab_size()) + " tokens)");
    const TokenFrequencies f = read_token_frequencies(file, model.vocab_size());
    return std::make_shared<const SubVocabularyHead>(
        model.weights().lm_head, f.top(draft_vocab, model.config().eos_token_ids));
  }
  std::string description() const {
    const std::string lookup_text =
        "n-gram drafts (prompt lookup of " +
        (lookup.min_ngram == lookup.max_ngram
             ? std::to_string(lookup.max_ngram)
             : std::to_string(lookup.max_ngram) + "- down to " + std::to_string(lookup.min_ngram)) +
        "-grams)";
    if (draft == "ngram") return lookup_text + ", a plain full-model step when none matches";
    if (draft == "exit") return "early-exit drafts";
    return lookup_text + ", early-exit drafts when none matches";
  }
};

inline void add_speculative_flags(CLI::App& app, SpeculativeFlags& s) {
  app.add_flag("--speculative", s.enabled, "lossless: draft tokens (see --draft), verify them "
               "with the full model (the output is the full model's)");
  app.add_option("--draft", s.draft, "--speculative: ngram (prompt lookup, no early exit), exit "
                 "(the early-exit policy given) or ngram+exit (n-gram first); default: exit with "
                 "policy flags, else " + std::string(SpeculativeFlags::kDefaultDraft))
      ->check(CLI::IsMember({"ngram", "exit", "ngram+exit"}));
  app.add_option("--ngram-max", s.lookup.max_ngram, "--speculative, n-gram drafts: the longest "
                 "suffix looked up in prompt + output (then shorter ones, down to --ngram-min)")
      ->check(CLI::Range(1, 64));
  app.add_option("--ngram-min", s.lookup.min_ngram, "--speculative, n-gram drafts: the shortest "
                 "suffix looked up (default 3, or --ngram-max if lower)")
      ->check(CLI::Range(1, 64));
  app.add_option("--gamma", s.gamma, "--speculative: most tokens drafted per verification, "
                 "1 to 64 (default 4), or 'auto': each round picks it from the acceptance of "
                 "earlier rounds and the cost model (DEL, 2025; up to --gamma-max)");
  app.add_option("--gamma-max", s.gamma_max, "--gamma auto: the longest it may choose")
      ->check(CLI::Range(1, 64));
  app.add_option("--verify-row-cost", s.verify_row_cost, "--gamma auto: what verifying one more "
                 "token costs, in decode steps (a pass over n tokens: 1 + C(n - 1))")
      ->check(CLI::Range(0.0, 16.0));
  app.add_flag("!--no-reuse-draft", s.options.reuse_draft, "--speculative: verify drafted "
               "tokens from the embedding instead of from their exact draft layers");
  app.add_option("--draft-vocab", s.draft_vocab, "--speculative, early-exit drafts: draft over "
                 "the N most frequent tokens only (a head of N rows; verification keeps the whole "
                 "head)")->check(CLI::Range(std::size_t{1}, std::size_t{1} << 24));
  app.add_option("--token-frequencies", s.token_frequencies, "--draft-vocab: the token counts "
                 "to rank by (default: MODEL/token_frequencies.json, from calm-count-tokens)")
      ->check(calm::cli::non_empty_path());
}

// Calls f(decoder) with the SpeculativeDecoder that `s` (resolved) and the flags describe: with
// early exits, the flags name the draft policy (not the oracle, nor the full model, which cannot
// draft). One SpeculativeDecoder<..., PromptLookup> per policy, its lookup off (max_ngram 0)
// for --draft exit: the programs do not compile each policy twice. f returns int.
template <class F>
int with_speculative_decoder(const std::shared_ptr<const LlamaModel>& model,
                             const SessionOptions& session_options,
                             const std::filesystem::path& model_dir, const PolicyFlags& flags,
                             float lambda, const SpeculativeFlags& s, F&& f) {
  const PromptLookup lookup = s.looks_up() ? s.lookup : PromptLookup{.max_ngram = 0};
  if (!s.drafts_with_exits())
    return f(PromptLookupDecoder<LlamaSession>(LlamaSession(model, session_options), {}, {},
                                               flags.decoder_options(), s.options, lookup));
  if (flags.measure == "oracle" || flags.measure == "full")
    throw Error("--speculative drafts with early exits: choose --measure softmax, softmax-top1, "
                "softmax-candidates, saturation, classifier or static, not '" + flags.measure +
                "' (or --draft ngram: n-gram drafts alone)");
  flags.check(model->num_layers());
  const PolicySpec spec = flags.spec(lambda);
  const std::shared_ptr<const SubVocabularyHead> head = s.draft_head(*model, model_dir);
  return PolicyRegistry<>::visit(
      spec, policy_context(model_dir, model->hidden_size(), flags),
      [&]<class M, class S>(M measure, S schedule) -> int {
        if constexpr (traits::is_local_oracle<S>() || std::is_same_v<S, Never>) {
          throw Error("unreachable: '" + flags.measure + "' cannot draft");
        } else {
          if (head && M::needs_logits && !traits::narrows_logits<M>())
            throw Error("--draft-vocab saves nothing with --measure " + flags.measure +
                        ": its exit check computes the whole head (use classifier, saturation, "
                        "softmax-candidates or static)");
          SpeculativeDecoder<LlamaSession, M, S, PromptLookup> decoder(
              LlamaSession(model, session_options), std::move(measure), std::move(schedule),
              spec.options, s.options, lookup);
          decoder.set_draft_head(head);
          return f(decoder);
        }
      });
}

}  // namespace calm::cli
