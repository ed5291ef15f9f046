// calm-calibrate: certify an early-exit threshold by Learn-then-Test (docs/design.md §6).
//   calm-calibrate --model DIR --prompts FILE [--references FILE] --measure softmax|softmax-top1|
//                  softmax-candidates|saturation|classifier --delta D --epsilon E [--distance token-mismatch|rouge-l|
//                  token-f1] [--consistency textual|risk] [--method hoeffding-bentkus|hoeffding|
//                  bentkus] [--max-new-tokens N] [--output PATH] [--schedule ... --tau T ...]
//                  [--temperature T --top-k K --top-p P --seed S] [--shard K/N | --merge DIR...]
// Decodes the full model, then each grid threshold (1.00, 0.95, ...), once per prompt, stopping
// at the first threshold whose p-value exceeds epsilon; writes calm_calibration.json (next to the
// model unless --output): the smallest certified lambda* and the decoding it holds for, greedy or
// sampled (prompt i with seed prompt_seed(S, i), for the full model and every threshold alike).
// --shard K/N (or a Slurm/Kubernetes array index) decodes prompts K, K+N, ... into a shard file;
// --merge, with the same flags, certifies what one machine would from them (docs/cluster.md).
#include "policy_flags.hpp"
#include "progress.hpp"
#include "shard_flags.hpp"

#include <calm/calibrate/calibration_json.hpp>
#include <calm/calibrate/distances.hpp>
#include <calm/calibrate/learn_then_test.hpp>
#include <calm/calibrate/parse_grid.hpp>
#include <calm/calibrate/shards.hpp>
#include <calm/calibrate/summary.hpp>
#include <calm/io/atomic_file.hpp>
#include <calm/io/prompts.hpp>
#include <calm/io/tokenizer.hpp>

#include <CLI/CLI.hpp>
#include "cli_parse.hpp"
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace cal = calm::calibrate;

struct Flags {
  std::filesystem::path model, prompts, references, output;
  double delta = 0.1, epsilon = 0.1;
  std::string distance = "rouge-l", consistency = "textual", method = "hoeffding-bentkus",
              grid = "1,0.05,0.05";
  std::size_t max_new_tokens = 32, threads = 1;
  calm::cli::PolicyFlags policy = calm::cli::calibration_policy_defaults();
  cal::DecodingRecord decoding;  // --temperature --top-k --top-p --seed; max_new_tokens set in run
  calm::cli::ShardFlags shards;  // --shard --merge
};

int run(Flags& f, const CLI::App& app) {
  calm::cli::check_unit_interval("--delta", f.delta);
  calm::cli::check_unit_interval("--epsilon", f.epsilon);
  if (!f.policy.thresholded())
    throw calm::Error("--measure " + f.policy.measure + " has no threshold to calibrate (use "
                      "softmax, softmax-top1, softmax-candidates, saturation or classifier)");
  const cal::Distance distance = cal::parse_distance(f.distance);
  const cal::Consistency consistency = cal::parse_consistency(f.consistency);
  const cal::PValueMethod method = cal::parse_p_value_method(f.method);
  const std::vector<double> grid = cal::parse_lambda_grid(f.grid, "--grid");
  f.decoding.max_new_tokens = f.max_new_tokens;
  const cal::DecodingRecord& decoding = f.decoding;

  calm::io::PromptFile file = calm::io::read_prompt_file(f.prompts);
  if (!f.references.empty()) calm::io::attach_references(file, f.references);
  if (consistency == cal::Consistency::risk) calm::io::require_references(file);
  const std::size_t n = file.prompts.size();
  calm::cli::resolve_shard(app, f.shards, n, "calm-calibrate");
  const auto& shard = f.shards.chosen;
  // Checked before any decoding: the file is written only at the end, and over no input.
  const std::filesystem::path output =
      shard ? calm::cli::shard_output(f.output, "calm_calibration", *shard)
            : f.output.empty() ? f.model / cal::kCalibrationFileName : f.output;
  calm::io::check_writable_destination(
      output, f.output.empty() ? shard ? "the shard file" : "the calibration file (--model)" : "--output",
      cal::run_inputs(f.model, {f.prompts, f.references, f.policy.classifier_file(f.model)}));

  const cal::LearnThenTestOptions options{.delta = f.delta, .epsilon = f.epsilon, .method = method,
                                          .grid = grid};
  cal::CalibrationRecord record{.measure = f.policy.measure,
                                .schedule = calm::calibration_schedule_json(f.policy.spec(1.0f)),
                                .consistency = consistency,
                                .distance = distance,
                                .model_fingerprint = cal::model_fingerprint(f.model),
                                .result = {},
                                .decoding = decoding,
                                .measure_fingerprint = {}};
  // A missing classifier is named when it is loaded, below.
  if (const auto classifier = f.policy.classifier_file(f.model);
      f.policy.measure == "classifier" && std::filesystem::exists(classifier))
    record.measure_fingerprint = cal::file_fingerprint(classifier);
  // What the decodes depend on: a shard file merges only into a run with exactly these.
  const nlohmann::json settings = {
      {"model", record.model_fingerprint}, {"measure_file", record.measure_fingerprint},
      {"prompts", cal::prompts_fingerprint(file)}, {"measure", record.measure},
      {"schedule", record.schedule}, {"consistency", cal::to_string(consistency)},
      {"distance", cal::to_string(distance)}, {"method", cal::to_string(method)},
      {"delta", f.delta}, {"epsilon", f.epsilon}, {"grid", grid}, {"decoding", cal::to_json(decoding)}};

  // rows[name][k]: the decode of prompt mine[k] by the full model ("full") or at a lambda.
  std::vector<std::size_t> mine = cal::shard_prompts(shard.value_or(cal::Shard{}), n);
  std::map<std::string, std::vector<cal::DecodeCost>> rows;
  std::size_t L = 0;
  std::function<std::vector<cal::DecodeCost>(double)> decode_lambda;
  std::shared_ptr<const calm::LlamaModel> model;  // kept alive for decode_lambda
  if (!f.shards.merge.empty()) {
    const cal::MergedShards merged =
        cal::merge_shard_files(f.shards.merge, "calm-calibrate", settings, n);
    fmt::print(stderr, "calm-calibrate: merged {} shards of {} prompts\n", merged.shards, n);
    for (std::size_t c = 0; c < merged.names.size(); ++c) rows[merged.names[c]] = merged.costs[c];
    L = merged.num_layers;
    decode_lambda = [stopped = merged.stopped_after](double lambda) -> std::vector<cal::DecodeCost> {
      throw calm::Error("--merge: the fixed-sequence walk reached lambda " + std::to_string(lambda) +
                        ", which not every shard decoded" + (stopped ? " (one stopped after " +
                        *stopped + ")" : std::string()) + ": the shard files do not fit together");
    };
  } else {
    const calm::Tokenizer tokenizer = calm::Tokenizer::load_folder(f.model);
    fmt::print(stderr, "calm-calibrate: tokenizer: {}\n", tokenizer.description());
    model = calm::LlamaModel::load(f.model);
    tokenizer.check_fits(model->config(), (f.model / "config.json").string());
    L = model->num_layers();
    const calm::SessionOptions sessions{.pool = calm::cli::make_pool(f.threads)};
    if (f.policy.measure == "classifier") f.policy.load_classifier(f.model, model->hidden_size());  // once, not per decoder
    const auto encoded = std::make_shared<calm::io::EncodedPrompts>(
        calm::io::encode_prompts(file, tokenizer, f.max_new_tokens, model->max_context()));
    const std::vector<int> eos = tokenizer.end_tokens(model->config());
    const std::string shard_label =
        shard ? fmt::format("shard {}/{} ", shard->index, shard->count) : std::string();
    auto full = std::make_shared<std::vector<std::vector<int>>>(mine.size());
    // Prompt i decodes with its own seed prompt_seed(S, i) whichever shard it falls in.
    const auto decode_row = [=, &f, &mine](const calm::cli::PolicyFlags& policy, double lambda,
                                           const std::string& label) {
      std::vector<cal::DecodeCost> costs(mine.size());
      calm::cli::Progress progress(shard_label + label, mine.size());
      calm::cli::with_decoder(model, sessions, f.model, policy, static_cast<float>(lambda), [&](auto&& decoder) {
        if (policy.measure == "full")  // warm-up, not timed: a fresh process's first decodes run slower
          for (std::size_t k = 0; k < std::min<std::size_t>(mine.size(), 8); ++k)
            calm::cli::decode_prompt(decoder, encoded->prompts[mine[k]], decoding, mine[k], eos);
        for (std::size_t k = 0; k < mine.size(); ++k) {
          const std::size_t i = mine[k];
          auto r = calm::cli::decode_prompt(decoder, encoded->prompts[i], decoding, i, eos);
          cal::DecodeCost& c = costs[k];
          c.tokens = r.report.tokens.size();
          c.layer_sum = r.report.average_layers() * static_cast<double>(c.tokens);
          c.seconds = r.report.generation_seconds;
          if (policy.measure == "full") (*full)[k] = std::move(r.tokens);
          else c.loss = consistency == cal::Consistency::textual
                  ? cal::textual_consistency_loss(distance, r.tokens, (*full)[k])
                  : cal::risk_consistency_loss(distance, r.tokens, (*full)[k], encoded->references[i]);
          progress.tick();
        }
        return 0;
      });
      progress.finish();
      return costs;
    };
    calm::cli::PolicyFlags full_flags = f.policy;
    full_flags.measure = "full";
    rows["full"] = decode_row(full_flags, 1.0, "full model");  // 1. once per prompt
    decode_lambda = [=, &f](double lambda) {
      return decode_row(f.policy, lambda, fmt::format("lambda {:.4g}", lambda));
    };
  }
  if (shard) {  // each lambda from the top, until these prompts alone fail it (shards.hpp)
    const cal::ShardFile out = cal::calibration_shard(*shard, n, L, settings, rows["full"],
                                                      options, decode_lambda);
    cal::write_shard_file(output, out);
    fmt::print("calm-calibrate: shard {} of {}: {} prompts at {} of {} thresholds{}\nwrote {}\n",
               shard->index, shard->count, mine.size(), out.configurations.size() - 1, grid.size(),
               out.stopped_after ? fmt::format("; stopped after {}: whatever the other shards "
                                               "hold, its p-value is at least {:.3g} > epsilon",
                                               *out.stopped_after, out.p_value_bound) : "",
               output.string());
    return 0;
  }
  // 2.-4. Each tested lambda; calibrate() stops at the first failing one.
  record.result = cal::calibrate([&](double lambda) {
    auto& row = rows[cal::lambda_row_name(lambda)];
    if (row.empty()) row = decode_lambda(lambda);
    return cal::losses_of(row);
  }, options);
  cal::write_calibration_json(output, record);

  fmt::print("calm-calibrate: {} prompts from {}, measure {}, schedule {}\n"
             "{} consistency, distance {}, delta {}, epsilon {}, p-values {}\n"
             "decoding: {}{}\n\n",
             n, f.prompts.string(), f.policy.measure, f.policy.schedule_description(),
             cal::to_string(consistency), cal::to_string(distance), f.delta, f.epsilon,
             cal::to_string(method), cal::decoding_description(decoding),
             decoding.greedy() ? "" : fmt::format(" (base seed {}, one seed per prompt, the "
                                                  "same for the full model and every lambda)",
                                                  decoding.seed));
  fmt::print("{}", cal::calibration_summary(
      record.result, [&](double lambda) { return cal::total_cost(rows[cal::lambda_row_name(lambda)]); },
      cal::total_cost(rows["full"]), L, f.delta, f.epsilon, n));
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
  calm::cli::add_shard_flags(app, f.shards);
  CALM_CLI_PARSE(app, argc, argv);
  try {
    calm::cli::check_decoding_flags(app, f.decoding, "--seed");
    return run(f, app);
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-calibrate: error: {}\n", e.what());
    return 1;
  }
}
