// calm-eval: checks the calibration guarantee empirically and measures what it buys
// (docs/design.md §6, §7; the procedure is calm/calibrate/validation.hpp).
//   calm-eval --model DIR --calibration-prompts FILE --test-prompts FILE [--splits 100]
//             [--measures softmax,saturation,classifier] [--deltas 0.05,0.1,0.2,0.3,0.4]
//             [--epsilon 0.1] [--max-new-tokens 32] [--csv out.csv] [--threads N] [--seed S]
//             [--temperature T --top-k K --top-p P --sampling-seed S]
// Every pooled prompt is decoded once per configuration (full model, each measure at each grid
// lambda, the local oracle, static exits 1..L); every calibration/test split reuses those decodes.
// Greedy by default; sampled, pooled prompt i draws with prompt_seed(S, i) in every configuration.
#include "eval_configurations.hpp"
#include "policy_flags.hpp"
#include "progress.hpp"
#include "shard_flags.hpp"

#include <calm/calibrate/distances.hpp>
#include <calm/calibrate/parse_grid.hpp>
#include <calm/calibrate/shards.hpp>
#include <calm/calibrate/summary.hpp>
#include <calm/calibrate/validation.hpp>
#include <calm/io/atomic_file.hpp>
#include <calm/io/prompts.hpp>
#include <calm/io/tokenizer.hpp>

#include <CLI/CLI.hpp>
#include "cli_parse.hpp"
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace cal = calm::calibrate;

struct Flags {
  std::filesystem::path model, calibration_prompts, test_prompts, csv, shard_output;
  std::size_t splits = 100, max_new_tokens = 32, max_prompts = 0, threads = 1;
  std::vector<std::string> measures;
  std::vector<double> deltas;
  double epsilon = 0.1, calibration_share = 0.5;
  std::string distance = "rouge-l", consistency = "textual", method = "hoeffding-bentkus",
              grid = "1,0.05,0.05";
  std::uint64_t seed = 1;
  calm::cli::PolicyFlags policy = calm::cli::calibration_policy_defaults();
  cal::DecodingRecord decoding;  // --temperature --top-k --top-p --sampling-seed
  calm::cli::ShardFlags shards;  // --shard --merge
};

int run(Flags& f, const CLI::App& app) {
  // Checked before any decoding: the CSV is written only at the end, and over no input.
  if (!f.csv.empty()) calm::io::check_writable_destination(f.csv, "--csv", cal::run_inputs(f.model,
      {f.calibration_prompts, f.test_prompts, f.policy.classifier_file(f.model)}));
  calm::cli::check_unit_interval("--epsilon", f.epsilon);
  for (double d : f.deltas) calm::cli::check_unit_interval("--deltas:", d);
  calm::cli::check_unit_interval("--calibration-share", f.calibration_share);
  for (const std::string& m : f.measures)
    if (!calm::cli::with_measure(f.policy, m).thresholded())
      throw calm::Error("--measures: unknown or unthresholded measure '" + m + "' (use " +
                        calm::cli::PolicyFlags::scoring_measures_text() +
                        "; the oracle and static exits are always evaluated)");
  const std::vector<double> grid = cal::parse_lambda_grid(f.grid, "--grid");
  const bool wants_classifier =
      std::find(f.measures.begin(), f.measures.end(), "classifier") != f.measures.end();
  if (const auto file = f.policy.classifier_file(f.model); wants_classifier && !exists(file))
    throw calm::Error("--measures classifier needs '" + file.string() + "': train it with "
                      "calm-train-classifier --model " + f.model.string() +
                      ", or leave classifier out of --measures");
  const cal::Distance distance = cal::parse_distance(f.distance);
  const cal::Consistency consistency = cal::parse_consistency(f.consistency);
  const cal::PValueMethod method = cal::parse_p_value_method(f.method);

  // The pool: the calibration file's prompts, then the test file's; each keeps its file and line.
  calm::io::PromptFile pool{f.calibration_prompts, {}};
  std::vector<std::size_t> from_file;  // prompts taken from each file
  for (const auto& path : {f.calibration_prompts, f.test_prompts}) {
    const calm::io::PromptFile file = calm::io::read_prompt_file(path);
    if (consistency == cal::Consistency::risk) calm::io::require_references(file);
    from_file.push_back(calm::io::append_prompts(pool, file, f.max_prompts));
  }
  const std::size_t n = pool.prompts.size(), n_cal = cal::calibration_size(n, f.calibration_share);

  f.decoding.max_new_tokens = f.max_new_tokens;
  calm::cli::resolve_shard(app, f.shards, n, "calm-eval");
  const auto& shard = f.shards.chosen;
  const std::filesystem::path shard_file =
      shard ? calm::cli::shard_output(f.shard_output, "calm_eval", *shard) : std::filesystem::path();
  if (shard) calm::io::check_writable_destination(shard_file, f.shard_output.empty() ? "the shard file"
      : "--shard-output", cal::run_inputs(f.model, {f.calibration_prompts, f.test_prompts}));
  const auto configurations = [&](std::size_t L) {
    return calm::cli::evaluation_configurations(f.policy, f.measures, grid, L);
  };
  // What the decodes depend on: a shard file merges only into a run with exactly these.
  const nlohmann::json settings = {
      {"model", cal::model_fingerprint(f.model)},
      {"measure_file", wants_classifier ? cal::file_fingerprint(f.policy.classifier_file(f.model)) : ""},
      {"prompts", cal::prompts_fingerprint(pool)}, {"pool", from_file}, {"measures", f.measures},
      {"schedule", calm::calibration_schedule_json(f.policy.spec(1.0f))}, {"grid", grid},
      {"consistency", cal::to_string(consistency)}, {"distance", cal::to_string(distance)},
      {"decoding", cal::to_json(f.decoding)}};
  std::vector<std::vector<cal::DecodeCost>> costs;  // [configuration][prompt]
  std::size_t L = 0;
  if (!f.shards.merge.empty()) {
    cal::MergedShards merged = cal::merge_shard_files(f.shards.merge, "calm-eval", settings, n);
    L = merged.num_layers;
    cal::require_configurations(merged, calm::cli::configuration_names(configurations(L)));
    fmt::print(stderr, "calm-eval: merged {} shards of {} prompts\n", merged.shards, n);
    costs = std::move(merged.costs);
  } else {
    const calm::Tokenizer tokenizer = calm::Tokenizer::load_folder(f.model);
    fmt::print(stderr, "calm-eval: tokenizer: {}\n", tokenizer.description());
    const auto model = calm::LlamaModel::load(f.model);
    tokenizer.check_fits(model->config(), (f.model / "config.json").string());
    const calm::SessionOptions sessions{.pool = calm::cli::make_pool(f.threads)};
    if (wants_classifier) f.policy.load_classifier(f.model, model->hidden_size());  // once
    L = model->num_layers();
    const calm::io::EncodedPrompts encoded =
        calm::io::encode_prompts(pool, tokenizer, f.max_new_tokens, model->max_context());
    const std::vector<int> eos = tokenizer.end_tokens(model->config());
    const auto configs = configurations(L);
    // Prompt i decodes with its own seed prompt_seed(S, i) whichever shard it falls in.
    const std::vector<std::size_t> mine = cal::shard_prompts(shard.value_or(cal::Shard{}), n);
    const auto decode = [&](std::size_t c, std::size_t k) {
      const auto& [policy, lambda] = configs[c];
      return calm::cli::with_decoder(model, sessions, f.model, policy, static_cast<float>(lambda),
                                     [&](auto&& decoder) {
        return calm::cli::decode_prompt(decoder, encoded.prompts[mine[k]], f.decoding, mine[k], eos);
      });
    };
    decode(0, 0);  // warm-up: caches and page faults, not timed
    calm::cli::Progress progress(fmt::format("{}decoding {} prompts x {} configurations",
                                             shard ? fmt::format("shard {}/{}: ", shard->index,
                                                                 shard->count) : "",
                                             mine.size(), configs.size()), mine.size() * configs.size());
    costs = cal::decode_each_configuration(
        mine.size(), configs.size(), f.seed + 1, decode,
        [&](std::size_t k, const std::vector<int>& tokens, const std::vector<int>& full) {
          const std::size_t i = mine[k];
          return consistency == cal::Consistency::textual
                     ? cal::textual_consistency_loss(distance, tokens, full)
                     : cal::risk_consistency_loss(distance, tokens, full, encoded.references[i]);
        },
        [&] { progress.tick(); });
    progress.finish();
    if (shard) {
      cal::ShardFile out{.program = "calm-eval", .shard = *shard, .prompts = n, .num_layers = L,
                         .settings = settings, .configurations = {}, .stopped_after = {}};
      const std::vector<std::string> names = calm::cli::configuration_names(configs);
      for (std::size_t c = 0; c < configs.size(); ++c) out.configurations.push_back({names[c], costs[c]});
      cal::write_shard_file(shard_file, out);
      fmt::print("calm-eval: shard {} of {}: {} prompts x {} configurations\nwrote {}\n",
                 shard->index, shard->count, mine.size(), configs.size(), shard_file.string());
      return 0;
    }
  }
  const cal::Evaluation evaluation = cal::evaluate_configurations(
      costs, f.measures, {.splits = f.splits, .calibration_size = n_cal, .deltas = f.deltas,
                          .epsilon = f.epsilon, .method = method, .grid = grid, .num_layers = L,
                          .seed = f.seed});
  fmt::print("calm-eval: {} prompts ({} + {}), {} calibration / {} test per split, {} splits "
             "(seed {}), {} new tokens, {} consistency with {}, p-values {}, epsilon {}\n"
             "schedule: {}\ndecoding: {}{}\n\n",
             n, from_file[0], from_file[1], n_cal, n - n_cal, f.splits, f.seed, f.max_new_tokens,
             cal::to_string(consistency), cal::to_string(distance), cal::to_string(method),
             f.epsilon, f.policy.schedule_description(), cal::decoding_description(f.decoding),
             f.decoding.greedy() ? "" : fmt::format(" (sampling seed {}, one seed per prompt, "
                                                    "the same in every configuration)",
                                                    f.decoding.seed));
  fmt::print("{}", cal::evaluation_tables(evaluation.rows, f.epsilon));
  fmt::print("{}", cal::threshold_table(grid, f.measures, evaluation.tables,
                                        cal::total_cost(costs[0]), n));
  if (!f.csv.empty()) {
    cal::write_evaluation_csv(f.csv, evaluation.rows, f.epsilon, L);
    fmt::print("\nwrote {}\n", f.csv.string());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const auto app_owner = calm::cli::make_app("calm-eval: empirical validity of the calibration and efficiency at lambda*");
  CLI::App& app = *app_owner;
  Flags f;
  std::string measures = "softmax,saturation,classifier", deltas = "0.05,0.1,0.2,0.3,0.4";
  app.add_option("--model", f.model, "checkpoint directory (config.json, model.safetensors, "
                 "tokenizer.json or tokenizer.model)")->required()->check(CLI::ExistingDirectory);
  app.add_option("--calibration-prompts", f.calibration_prompts, "prompt file (*.jsonl or one "
                 "prompt per line); pooled with --test-prompts")->required();
  app.add_option("--test-prompts", f.test_prompts, "prompt file (*.jsonl or one prompt per line)")
      ->required();
  app.add_option("--splits", f.splits, "random calibration/test splits of the pooled prompts")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--measures", measures, "comma-separated: softmax, softmax-top1, "
                 "softmax-candidates (k from --candidates), saturation, classifier");
  app.add_option("--deltas", deltas, "comma-separated tolerances, each in (0, 1)");
  app.add_option("--epsilon", f.epsilon, "risk level, in (0, 1)");
  app.add_option("--calibration-share", f.calibration_share, "share of the pool that calibrates in "
                 "each split");
  app.add_option("--grid", f.grid, "thresholds: HIGH,LOW,STEP, descending (saturation needs a "
                 "fine grid near 1, e.g. 1,0.9,0.005)");
  app.add_option("--max-new-tokens", f.max_new_tokens, "tokens generated per prompt")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-prompts", f.max_prompts, "use at most this many prompts of each file "
                 "(0 = all)");
  app.add_option("--distance", f.distance, "token-mismatch | rouge-l | token-f1")
      ->check(CLI::IsMember({"token-mismatch", "rouge-l", "token-f1"}));
  app.add_option("--consistency", f.consistency, "textual | risk (needs references)")
      ->check(CLI::IsMember({"textual", "risk"}));
  app.add_option("--method", f.method, "p-values: hoeffding-bentkus | hoeffding | bentkus")
      ->check(CLI::IsMember({"hoeffding-bentkus", "hoeffding", "bentkus"}));
  app.add_option("--csv", f.csv, "write every row of the tables as CSV (tools/plot_efficiency.py)")
      ->check(calm::cli::non_empty_path());
  app.add_option("--threads", f.threads, "threads for the matrix products")
      ->check(CLI::Range(1, 256));
  app.add_option("--seed", f.seed, "seed of the random splits");
  calm::cli::add_policy_flags(app, f.policy);
  calm::cli::add_decoding_flags(app, f.decoding, "--sampling-seed");
  // Measures come from --measures; thresholds are calibrated; static exits are all evaluated.
  app.remove_option(app.get_option("--measure"));
  app.remove_option(app.get_option("--threshold"));
  app.remove_option(app.get_option("--static-layer"));
  calm::cli::add_shard_flags(app, f.shards);
  app.add_option("--shard-output", f.shard_output, "where a shard writes its file (a folder: "
                 "calm_eval.shard-K-of-N.json in it; default: that name here)")
      ->check(calm::cli::non_empty_path());
  CALM_CLI_PARSE(app, argc, argv);
  try {
    calm::cli::check_decoding_flags(app, f.decoding, "--sampling-seed");
    f.measures = cal::split_comma_list(measures);
    if (f.measures.empty()) throw calm::Error("--measures is empty");
    f.deltas = cal::parse_number_list(deltas, "--deltas");
    if (f.deltas.empty()) throw calm::Error("--deltas is empty");
    return run(f, app);
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-eval: error: {}\n", e.what());
    return 1;
  }
}
