// calm-calibrate: certify an early-exit threshold by Learn-then-Test (docs/design.md §6).
//   calm-calibrate --model DIR --prompts FILE [--references FILE] --measure softmax|softmax-top1|
//                  softmax-candidates|saturation|classifier --delta D --epsilon E [--distance token-mismatch|rouge-l|
//                  token-f1] [--consistency textual|risk] [--method hoeffding-bentkus|hoeffding|
//                  bentkus] [--max-new-tokens N] [--output PATH] [--schedule ... --tau T ...]
//                  [--temperature T --top-k K --top-p P --seed S]
// Decodes the full model once per prompt, then each grid threshold (1.00, 0.95, ...) once per
// prompt, stopping at the first threshold whose p-value exceeds epsilon, and writes
// calm_calibration.json (next to the model unless --output) with the smallest certified lambda*
// and the decoding it holds for: greedy (the default) or sampled, prompt i with the seed
// prompt_seed(S, i) for the full model and every threshold alike.
#include "policy_flags.hpp"
#include "progress.hpp"

#include <calm/calibrate/calibration_json.hpp>
#include <calm/calibrate/distances.hpp>
#include <calm/calibrate/learn_then_test.hpp>
#include <calm/calibrate/parse_grid.hpp>
#include <calm/io/atomic_file.hpp>
#include <calm/io/prompts.hpp>
#include <calm/io/tokenizer.hpp>

#include <CLI/CLI.hpp>
#include "cli_parse.hpp"
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <exception>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace {

namespace cal = calm::calibrate;

struct Flags {
  std::filesystem::path model;
  std::filesystem::path prompts;
  std::filesystem::path references;
  std::filesystem::path output;
  double delta = 0.1;
  double epsilon = 0.1;
  std::string distance = "rouge-l";
  std::string consistency = "textual";
  std::string method = "hoeffding-bentkus";
  std::string grid = "1,0.05,0.05";
  std::size_t max_new_tokens = 32;
  std::size_t threads = 1;
  calm::cli::PolicyFlags policy = calm::cli::calibration_policy_defaults();
  cal::DecodingRecord decoding;  // --temperature --top-k --top-p --seed; max_new_tokens set in run
};

int run(Flags& f) {
  calm::cli::check_unit_interval("--delta", f.delta);
  calm::cli::check_unit_interval("--epsilon", f.epsilon);
  if (!f.policy.thresholded())
    throw calm::Error("--measure " + f.policy.measure + " has no threshold to calibrate (use "
                      "softmax, softmax-top1, softmax-candidates, saturation or classifier)");
  // Checked before any decoding: the file is written only at the end, and over no input.
  calm::io::check_writable_destination(
      f.output.empty() ? f.model / cal::kCalibrationFileName : f.output,
      f.output.empty() ? "the calibration file (--model)" : "--output",
      cal::run_inputs(f.model, {f.prompts, f.references, f.policy.classifier_file(f.model)}));
  const cal::Distance distance = cal::parse_distance(f.distance);
  const cal::Consistency consistency = cal::parse_consistency(f.consistency);
  const cal::PValueMethod method = cal::parse_p_value_method(f.method);
  const std::vector<double> grid = cal::parse_lambda_grid(f.grid, "--grid");
  f.decoding.max_new_tokens = f.max_new_tokens;
  const cal::DecodingRecord& decoding = f.decoding;

  calm::io::PromptFile file = calm::io::read_prompt_file(f.prompts);
  if (!f.references.empty()) calm::io::attach_references(file, f.references);
  if (consistency == cal::Consistency::risk) calm::io::require_references(file);

  const calm::Tokenizer tokenizer = calm::Tokenizer::load_folder(f.model);
  fmt::print(stderr, "calm-calibrate: tokenizer: {}\n", tokenizer.description());
  const auto model = calm::LlamaModel::load(f.model);
  tokenizer.check_fits(model->config(), (f.model / "config.json").string());
  const calm::SessionOptions sessions{.pool = calm::cli::make_pool(f.threads)};
  if (f.policy.measure == "classifier") f.policy.load_classifier(f.model, model->hidden_size());  // once, not per decoder
  const calm::io::EncodedPrompts encoded =
      calm::io::encode_prompts(file, tokenizer, f.max_new_tokens, model->max_context());
  const std::size_t n = encoded.prompts.size();
  const std::vector<int> eos = tokenizer.end_tokens(model->config());
  const std::filesystem::path output =
      f.output.empty() ? f.model / cal::kCalibrationFileName : f.output;
  const std::string fingerprint = cal::model_fingerprint(f.model);

  // 1. The full model, once per prompt.
  std::vector<std::vector<int>> full(n);
  double full_seconds = 0.0;
  {
    calm::cli::PolicyFlags full_flags = f.policy;
    full_flags.measure = "full";
    calm::cli::Progress progress("full model", n);
    calm::cli::with_decoder(model, sessions, f.model, full_flags, 1.0f, [&](auto&& decoder) {
      // Warm-up, not timed: the first decodes of a fresh process run slower (page faults, caches).
      for (std::size_t i = 0; i < std::min<std::size_t>(n, 8); ++i)
        calm::cli::decode_prompt(decoder, encoded.prompts[i], decoding, i, eos);
      for (std::size_t i = 0; i < n; ++i) {
        auto r = calm::cli::decode_prompt(decoder, encoded.prompts[i], decoding, i, eos);
        full[i] = std::move(r.tokens);
        full_seconds += r.report.generation_seconds;
        progress.tick();
      }
      return 0;
    });
    progress.finish();
  }

  // 2.-4. Each tested lambda, once per prompt; calibrate() stops at the first failing one.
  struct Efficiency {
    double layers = 0.0;  // sum of exit layers over generated tokens
    std::size_t tokens = 0;
    double seconds = 0.0;
  };
  std::map<double, Efficiency> efficiency;
  auto losses_at = [&](double lambda) {
    std::vector<double> losses(n);
    Efficiency& e = efficiency[lambda];
    calm::cli::Progress progress(fmt::format("lambda {:.4g}", lambda), n);
    calm::cli::with_decoder(model, sessions, f.model, f.policy, static_cast<float>(lambda), [&](auto&& decoder) {
      for (std::size_t i = 0; i < n; ++i) {
        auto r = calm::cli::decode_prompt(decoder, encoded.prompts[i], decoding, i, eos);
        losses[i] = consistency == cal::Consistency::textual
                        ? cal::textual_consistency_loss(distance, r.tokens, full[i])
                        : cal::risk_consistency_loss(distance, r.tokens, full[i],
                                                     encoded.references[i]);
        e.layers += r.report.average_layers() * static_cast<double>(r.report.tokens.size());
        e.tokens += r.report.tokens.size();
        e.seconds += r.report.generation_seconds;
        progress.tick();
      }
      return 0;
    });
    progress.finish();
    return losses;
  };
  const cal::LearnThenTestOptions options{.delta = f.delta, .epsilon = f.epsilon, .method = method,
                                              .grid = grid};
  cal::CalibrationRecord record{.measure = f.policy.measure,
                                .schedule = calm::calibration_schedule_json(f.policy.spec(1.0f)),
                                .consistency = consistency,
                                .distance = distance,
                                .model_fingerprint = fingerprint,
                                .result = cal::calibrate(losses_at, options),
                                .decoding = decoding,
                                .measure_fingerprint =
                                    f.policy.measure == "classifier"
                                        ? cal::file_fingerprint(f.policy.classifier_file(f.model))
                                        : std::string()};
  cal::write_calibration_json(output, record);

  const cal::CalibrationResult& result = record.result;
  fmt::print("calm-calibrate: {} prompts from {}, measure {}, schedule {}\n"
             "{} consistency, distance {}, delta {}, epsilon {}, p-values {}\n"
             "decoding: {}{}\n\n",
             n, f.prompts.string(), f.policy.measure, f.policy.schedule_description(),
             cal::to_string(consistency), cal::to_string(distance), f.delta, f.epsilon,
             cal::to_string(method), cal::decoding_description(decoding),
             decoding.greedy() ? "" : fmt::format(" (base seed {}, one seed per prompt, the "
                                                  "same for the full model and every lambda)",
                                                  decoding.seed));
  fmt::print("{:>7}  {:>10}  {:>10}  {:>8}  {}\n", "lambda", "mean loss", "p-value", "layers", "");
  const std::size_t L = model->num_layers();
  for (const cal::GridRow& row : result.table) {
    if (!row.tested) {
      fmt::print("{:>7.4g}  {:>10}  {:>10}  {:>8}  not tested (fixed sequence stopped)\n",
                 row.lambda, "-", "-", "-");
      continue;
    }
    const Efficiency& e = efficiency.at(row.lambda);
    const double avg = e.tokens ? e.layers / static_cast<double>(e.tokens) : 0.0;
    fmt::print("{:>7.4g}  {:>10.4f}  {:>10.3g}  {:>8.2f}  {}\n", row.lambda, *row.mean_loss,
               *row.p_value, avg, row.passed ? "passed" : "FAILED (p > epsilon)");
  }
  if (result.lambda_star) {
    const Efficiency& e = efficiency.at(*result.lambda_star);
    const double avg = e.tokens ? e.layers / static_cast<double>(e.tokens) : 0.0;
    fmt::print("\nlambda* = {:.4g}: on these prompts, average layers {:.2f} of {} (layer speedup "
               "{:.2f}x), wall-clock speedup {:.2f}x against the full model\n",
               *result.lambda_star, avg, L, avg > 0 ? static_cast<double>(L) / avg : 0.0,
               e.seconds > 0 ? full_seconds / e.seconds : 0.0);
  } else {
    fmt::print("\nno threshold could be certified at delta {} and epsilon {} with {} prompts: "
               "calm-generate --calibration runs the full model (try a larger delta or more "
               "prompts)\n", f.delta, f.epsilon, n);
  }
  fmt::print("wrote {}\n", output.string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const auto app_owner = calm::cli::make_app("calm-calibrate: certify an early-exit threshold with Learn-then-Test "
               "(docs/design.md §6)");
  CLI::App& app = *app_owner;
  Flags f;
  app.add_option("--model", f.model, "checkpoint directory (config.json, model.safetensors, "
                 "tokenizer.json or tokenizer.model)")
      ->required()->check(CLI::ExistingDirectory);
  app.add_option("--prompts", f.prompts, "calibration prompts: *.jsonl with {\"prompt\", \"reference\"} "
                 "per line, or plain text with one prompt per line")->required();
  app.add_option("--references", f.references, "references, one per line, in prompt order "
                 "(overrides the JSONL \"reference\" fields)");
  app.add_option("--delta", f.delta, "tolerance on the expected loss, in (0, 1)")->required();
  app.add_option("--epsilon", f.epsilon, "risk level, in (0, 1)")->required();
  app.add_option("--distance", f.distance, "token-mismatch | rouge-l | token-f1")
      ->check(CLI::IsMember({"token-mismatch", "rouge-l", "token-f1"}));
  app.add_option("--consistency", f.consistency, "textual (against the full model) | risk "
                 "(extra risk against the references)")->check(CLI::IsMember({"textual", "risk"}));
  app.add_option("--method", f.method, "p-values: hoeffding-bentkus | hoeffding | bentkus")
      ->check(CLI::IsMember({"hoeffding-bentkus", "hoeffding", "bentkus"}));
  app.add_option("--grid", f.grid, "thresholds tested: HIGH,LOW,STEP, descending (saturation "
                 "needs a fine grid near 1, e.g. 1,0.9,0.005)");
  app.add_option("--max-new-tokens", f.max_new_tokens, "tokens generated per prompt")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--output", f.output, "where to write calm_calibration.json (default: in the "
                 "model directory)")->check(calm::cli::non_empty_path());
  app.add_option("--threads", f.threads, "threads for the matrix products")->check(CLI::Range(1, 256));
  calm::cli::add_policy_flags(app, f.policy);
  calm::cli::add_decoding_flags(app, f.decoding, "--seed");
  // The threshold is what this program finds; static exits have none.
  app.remove_option(app.get_option("--threshold"));
  app.remove_option(app.get_option("--static-layer"));
  app.get_option("--measure")->required();
  CALM_CLI_PARSE(app, argc, argv);
  try {
    calm::cli::check_decoding_flags(app, f.decoding, "--seed");
    return run(f);
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-calibrate: error: {}\n", e.what());
    return 1;
  }
}
