// calm-generate: stream text from a Hugging Face Llama checkpoint with CALM early exit.
//   calm-generate --model DIR --prompt TEXT [--max-new-tokens N] [--measure softmax|saturation|
//                 classifier|oracle|static|full --threshold L --tau T ...] [--calibration FILE]
//                 [--allow-uncertified] [--show-exits] [--report out.html] [--json] [--compare-full]
//                 [--temperature T --top-k K --top-p P --seed S] [--threads N]
//                 [--speculative [--gamma G] [--no-reuse-draft]]   (lossless: the draft policy
//                 is the measure/threshold/static layer given; the output is the full model's)
#include "policy_flags.hpp"

#include <calm/calibrate/calibration_json.hpp>
#include <calm/calibrate/coverage.hpp>
#include <calm/io/report_formats.hpp>
#include <calm/io/tokenizer.hpp>
#include <calm/sampling/sampler.hpp>

#include <CLI/CLI.hpp>
#include "cli_parse.hpp"
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <optional>
#include <exception>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

struct Flags {
  std::filesystem::path model;
  std::string prompt;
  std::size_t max_new_tokens = 64;
  std::size_t threads = 1;
  std::size_t context = 0;
  calm::WeightFormat weights = calm::WeightFormat::file;
  calm::SamplingOptions sampling;  // temperature and top_p from the two doubles below
  double temperature = 0.0, top_p = 1.0;
  calm::cli::PolicyFlags policy;
  std::filesystem::path calibration;
  bool implicit_calibration = false;  // the calm_calibration.json next to the model, no policy flags
  bool allow_uncertified = false;
  std::set<std::string> given;  // the policy and decoding flags on the command line
  bool show_exits = false;
  std::filesystem::path report_html;
  bool json = false;
  bool compare_full = false;
  bool speculative = false;
  calm::SpeculativeOptions speculation;
};

namespace cal = calm::calibrate;
using calm::cli::join;

// Whether a calibration's guarantee covers this run, for the messages and --json.
struct Certification {
  bool certified = false;  // a certificate was read and covers the run as it is decoded
  nlohmann::json json;     // "certificate" in --json: null when no calibration file was read
};

// Applies calm_calibration.json: its measure, schedule and certified threshold lambda*, and the
// decoding it was computed with for every decoding flag not given. Then compares the run with the
// certificate: a mismatch is refused with --calibration FILE (unless --allow-uncertified); with
// the file found next to the model (no policy flags), the full model runs instead. Returns lambda.
float apply_calibration(Flags& f, std::size_t num_layers, Certification& out) {
  const cal::CalibrationRecord rec = cal::read_calibration_json(f.calibration);
  const std::string file = f.calibration.string();
  cal::check_model_fingerprint(rec, f.model, file);
  const calm::cli::PolicyFlags given = f.policy;
  const std::optional<calm::PolicySpec> spec =
      calm::calibrated_policy(rec, f.policy.spec(f.policy.threshold), file);
  if (spec) {
    f.policy.apply(*spec);
    try {  // the schedule's layers against this model's, naming the file
      f.policy.check(num_layers, /*calibrated=*/true);
    } catch (const calm::Error& e) {
      throw calm::Error("'" + file + "': key 'schedule': " + e.what());
    }
  }
  const calm::cli::PolicyFlags certified_policy = f.policy;
  // The flags given win over the certificate's; the comparison below then names them.
  const auto given_flag = [&](const char* flag) { return f.given.count(flag) > 0; };
  if (given_flag("--measure")) {
    if (f.policy.measure != given.measure) f.policy.measure_params = nlohmann::json::object();
    f.policy.measure = given.measure;
  }
  if (given_flag("--schedule")) f.policy.schedule = given.schedule;
  if (given_flag("--tau")) f.policy.tau = given.tau;
  if (given_flag("--first-exit")) f.policy.first_exit = given.first_exit;
  if (given_flag("--interval")) f.policy.interval = given.interval;
  if (given_flag("--propagation")) f.policy.propagation = given.propagation;
  if (given_flag("--static-layer")) f.policy.static_layer = given.static_layer;
  if (rec.decoding) {
    if (!given_flag("--temperature")) f.temperature = rec.decoding->temperature;
    if (!given_flag("--top-k")) f.sampling.top_k = rec.decoding->top_k;
    if (!given_flag("--top-p")) f.top_p = rec.decoding->top_p;
    if (!given_flag("--max-new-tokens")) f.max_new_tokens = rec.decoding->max_new_tokens;
  }
  out.json = {{"file", file},
              {"delta", rec.result.delta},
              {"epsilon", rec.result.epsilon},
              {"lambda_star", rec.result.lambda_star ? nlohmann::json(*rec.result.lambda_star)
                                                     : nlohmann::json(nullptr)},
              {"format_version", rec.decoding ? cal::kCalibrationVersion : 1},
              {"decoding", rec.decoding ? cal::to_json(*rec.decoding) : nlohmann::json(nullptr)},
              {"differences", nlohmann::json::array()},
              {"unchecked", nlohmann::json::array()}};
  if (!rec.result.lambda_star) {
    fmt::print(stderr, "calm-generate: {} certifies no threshold (delta {}, epsilon {}): "
               "running the full model\n", file, rec.result.delta, rec.result.epsilon);
    f.policy.measure = "full";
    out.json["action"] = "full model: no threshold certified";
    return 1.0f;
  }
  const float lambda_star = static_cast<float>(*rec.result.lambda_star);
  const float lambda = given_flag("--threshold") ? given.threshold : lambda_star;
  if (!rec.decoding)
    fmt::print(stderr, "calm-generate: {}: {}\n", file, cal::version1_decoding_note());

  const cal::DecodingRecord run_decoding{
      .temperature = f.temperature, .top_k = f.temperature > 0 ? f.sampling.top_k : 0,
      .top_p = f.temperature > 0 ? f.top_p : 1.0, .seed = 0, .max_new_tokens = f.max_new_tokens};
  const cal::Coverage coverage =
      cal::certificate_coverage(rec, certified_policy.spec(lambda), f.policy.spec(lambda),
                                run_decoding, f.policy.classifier_file(f.model));
  const std::vector<std::string>& differences = coverage.differences;
  out.json["differences"] = differences;
  out.json["unchecked"] = coverage.unchecked;
  const std::string certificate = fmt::format(
      "{} certifies lambda* {:.4g} (delta {}, epsilon {}) for measure {}, {}, {}", file,
      lambda_star, rec.result.delta, rec.result.epsilon, certified_policy.measure,
      certified_policy.schedule_description(),
      rec.decoding ? cal::decoding_description(*rec.decoding)
                   : std::string("greedy decoding stopping after EOS (format version 1)"));
  if (differences.empty()) {
    fmt::print(stderr, "calm-generate: calibrated threshold {:.4g} (delta {}, epsilon {}), "
               "certified for this run: {}{}\n", lambda, rec.result.delta, rec.result.epsilon,
               cal::decoding_description(run_decoding),
               coverage.unchecked.empty() ? "" : "; not checked: " + join(coverage.unchecked, ", "));
    out.certified = true;
    out.json["action"] = "certified";
    return lambda;
  }
  const std::string mismatch =
      certificate + "; its guarantee does not apply to this run: " + join(differences, "; ") +
      (coverage.unchecked.empty() ? "" : " (not checked: " + join(coverage.unchecked, ", ") + ")");
  if (f.allow_uncertified) {
    fmt::print(stderr, "calm-generate: warning: {}. --allow-uncertified: running it anyway, "
               "WITHOUT the guarantee\n", mismatch);
    out.json["action"] = "uncertified (--allow-uncertified)";
    return lambda;
  }
  if (f.implicit_calibration) {
    // No policy was asked for: early exit was chosen only because a certificate was there, and
    // it does not cover these settings. The full model's output needs no certificate.
    fmt::print(stderr, "calm-generate: {}. Running the full model instead (give "
               "--allow-uncertified to exit early without the guarantee, or calibrate these "
               "settings with calm-calibrate)\n", mismatch);
    f.policy.measure = "full";
    out.json["action"] = "full model: the certificate does not cover these settings";
    return 1.0f;
  }
  throw calm::Error(mismatch + ". Run with the certified settings (leave those flags out), "
                    "calibrate these settings with calm-calibrate, or pass --allow-uncertified "
                    "to run them without the guarantee");
}

int run(Flags& f) {
  // What would fail only after decoding is refused first.
  if (f.json) calm::io::check_utf8(f.prompt, "--prompt");
  if (!f.report_html.empty()) calm::io::check_writable_destination(f.report_html, "--report",
      cal::run_inputs(f.model, {f.calibration, f.policy.classifier_file(f.model)}));
  const calm::Tokenizer tokenizer = calm::Tokenizer::load_folder(f.model);
  fmt::print(stderr, "calm-generate: tokenizer: {}\n", tokenizer.description());
  const auto model = calm::LlamaModel::load(f.model, {.max_context = f.context, .weights = f.weights});
  tokenizer.check_fits(model->config(), (f.model / "config.json").string());
  const calm::SessionOptions sessions{.pool = calm::cli::make_pool(f.threads)};
  Certification certification;
  const float lambda = f.calibration.empty()
                           ? f.policy.threshold
                           : apply_calibration(f, model->num_layers(), certification);
  calm::cli::check_decoding_flags([&](const std::string& flag) { return f.given.count(flag) > 0; },
      {.temperature = f.temperature, .top_k = f.sampling.top_k, .top_p = f.top_p}, "--seed");
  f.sampling.temperature = static_cast<float>(f.temperature);
  f.sampling.top_p = static_cast<float>(f.top_p);
  const std::vector<int> prompt = tokenizer.encode(f.prompt, /*add_bos=*/true);
  if (prompt.size() + f.max_new_tokens > model->max_context())
    throw calm::Error(fmt::format(
        "--prompt is {} tokens; with --max-new-tokens {} that exceeds the context length {}",
        prompt.size(), f.max_new_tokens, model->max_context()));
  const bool stream_text = !f.json;
  const std::vector<int> ends = tokenizer.end_tokens(model->config());  // any of config.json's

  std::vector<calm::io::TokenText> pieces;
  calm::SequenceReport report;
  std::vector<int> tokens;
  std::optional<calm::SpeculationStats> speculation;
  calm::StreamDecoder stream(tokenizer);
  const auto on_token = [&](const calm::TokenStats& ts) {
    if (calm::io::is_end_token(ends, ts.token)) return false;
    calm::io::TokenText p{stream.push(ts.token), ts};
    if (stream_text) {
      if (f.show_exits) {
        const bool low = calm::io::exits_low(ts.exit_layer, model->num_layers());
        fmt::print("\x1b[{}m{}\x1b[0m", low ? 32 : 31, p.text);
      } else {
        fmt::print("{}", p.text);
      }
      std::fflush(stdout);
    }
    pieces.push_back(std::move(p));
    return true;
  };
  const auto begin = [&] {  // once the decoder exists: set-up errors come first
    if (stream_text) fmt::print("{}", f.prompt);
    std::fflush(stdout);
  };
  const auto finish = [&](calm::SequenceReport r, std::vector<int> t) {
    const std::string tail = stream.flush();
    if (!tail.empty() && !pieces.empty()) pieces.back().text += tail;
    if (stream_text) fmt::print("{}\n", tail);
    std::fflush(stdout);  // before the legend and summary on stderr
    report = std::move(r);
    tokens = std::move(t);
    return 0;
  };
  if (f.speculative) {
    calm::cli::with_speculative_decoder(model, sessions, f.model, f.policy, lambda, f.speculation,
                                        [&](auto&& decoder) {
      begin();
      auto result = decoder.generate(prompt, f.max_new_tokens, f.sampling, on_token);
      speculation = result.speculation;
      return finish(std::move(result.report), std::move(result.tokens));
    });
  } else {
    calm::cli::with_decoder(model, sessions, f.model, f.policy, lambda, [&](auto&& decoder) {
      calm::Sampler sampler(f.sampling);
      begin();
      auto result = decoder.generate(prompt, f.max_new_tokens, sampler, on_token);
      return finish(std::move(result.report), std::move(result.tokens));
    });
  }

  const std::size_t L = model->num_layers();
  if (f.show_exits && stream_text)
    fmt::print(stderr, "legend: \x1b[32mexited in layers 1..{}\x1b[0m, \x1b[31mexited in layers {}..{}\x1b[0m\n",
               L / 2, L / 2 + 1, L);
  if (!f.report_html.empty()) calm::io::write_exits_html(f.report_html, f.prompt, pieces, report);

  nlohmann::json out = calm::io::report_json(pieces, report);
  std::string summary = calm::io::report_summary(report);
  if (speculation) {
    summary += "\n" + calm::io::speculation_summary(*speculation);
    out["speculative"] = calm::io::speculation_json(*speculation);
  }
  if (f.compare_full) {
    calm::cli::PolicyFlags full = f.policy;
    full.measure = "full";
    calm::SequenceReport full_report;
    std::vector<int> full_tokens;
    calm::cli::with_decoder(model, sessions, f.model, full, 1.0f, [&](auto&& decoder) {
      calm::Sampler sampler(f.sampling);
      auto r = decoder.generate(prompt, tokens.size(), sampler);
      full_report = std::move(r.report);
      full_tokens = std::move(r.tokens);
      return 0;
    });
    std::size_t same = 0;
    for (std::size_t i = 0; i < std::min(tokens.size(), full_tokens.size()); ++i) same += tokens[i] == full_tokens[i];
    const double speedup = report.generation_seconds > 0
                               ? full_report.generation_seconds / report.generation_seconds : 0.0;
    summary += fmt::format("\nfull model: {:.1f} tokens/s | wall-clock speedup {:.2f}x | "
                           "tokens equal to the full model's: {} of {}",
                           full_report.tokens_per_second(), speedup, same, tokens.size());
    out["full_tokens_per_second"] = full_report.tokens_per_second();
    out["wall_clock_speedup"] = speedup;
    out["tokens_equal_to_full"] = same;
  }
  out["certified"] = certification.certified;
  out["certificate"] = certification.json;
  if (f.json) {
    out["prompt"] = f.prompt;
    out["text"] = tokenizer.decode(tokens);
    fmt::print("{}\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
  }
  fmt::print(stderr, "\n{}\n", summary);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const auto app_owner = calm::cli::make_app("calm-generate: generate text with a Hugging Face Llama checkpoint, exiting early");
  CLI::App& app = *app_owner;
  Flags f;
  app.add_option("--model", f.model, "checkpoint directory (config.json, model.safetensors, "
                 "tokenizer.json or tokenizer.model)")
      ->required()->check(CLI::ExistingDirectory);
  app.add_option("--prompt", f.prompt, "text to continue")->required();
  app.add_option("--max-new-tokens", f.max_new_tokens, "tokens to generate")->check(CLI::Range(1, 1 << 20));
  app.add_option("--threads", f.threads, "threads for the matrix products")->check(CLI::Range(1, 256));
  app.add_option("--context", f.context, "KV cache length (0: the model's, at most 4096)");
  app.add_option("--weights", f.weights,
                 "file: the checkpoint's dtype; q8_0 or q4_0: quantized at load")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, calm::WeightFormat>{{"file", calm::WeightFormat::file},
                                                     {"q8_0", calm::WeightFormat::q8_0},
                                                     {"q4_0", calm::WeightFormat::q4_0}}));
  app.add_option("--temperature", f.temperature, "0 = greedy")->check(CLI::Range(0.0, 100.0));
  app.add_option("--top-k", f.sampling.top_k, "keep the k most likely tokens (0 = all)");
  app.add_option("--top-p", f.top_p, "nucleus mass in (0, 1]")->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", f.sampling.seed, "random seed for sampling");
  calm::cli::add_policy_flags(app, f.policy);
  app.add_option("--calibration", f.calibration, "calm_calibration.json from calm-calibrate: its "
                 "measure, schedule and certified threshold, and its decoding settings for the "
                 "flags not given; a run it does not cover is refused")->check(CLI::ExistingFile);
  app.add_flag("--allow-uncertified", f.allow_uncertified, "run settings that the calibration "
               "does not cover (a warning says the guarantee does not apply)");
  app.add_flag("--show-exits", f.show_exits, "colour each token by its exit layer");
  app.add_option("--report", f.report_html, "write the coloured text as an HTML page")
      ->check(calm::cli::non_empty_path());
  app.add_flag("--json", f.json, "print per-token and per-sequence statistics as JSON");
  app.add_flag("--compare-full", f.compare_full, "also run the full model: wall-clock speedup");
  app.add_flag("--speculative", f.speculative, "lossless: draft with the early-exit policy given, "
               "verify with the full model (the output is the full model's)");
  app.add_option("--gamma", f.speculation.max_draft, "--speculative: most tokens drafted per "
                 "verification")->check(CLI::Range(1, 64));
  app.add_flag("!--no-reuse-draft", f.speculation.reuse_draft, "--speculative: verify drafted "
               "tokens from the embedding instead of from their exact draft layers");
  CALM_CLI_PARSE(app, argc, argv);
  for (const char* flag : {"--measure", "--threshold", "--tau", "--schedule", "--first-exit",
                           "--interval", "--static-layer", "--propagation", "--classifier",
                           "--temperature", "--top-k", "--top-p", "--seed", "--max-new-tokens"})
    if (app.count(flag) > 0) f.given.insert(flag);
  try {
    // No policy named: the calibrated one next to the model if there is one, else the full
    // model with no exit checks (checks that never exit only cost time).
    if (f.calibration.empty() && !calm::cli::any_policy_flag(app)) {
      const std::filesystem::path calibrated = f.model / calm::calibrate::kCalibrationFileName;
      if (std::filesystem::exists(calibrated)) {
        f.calibration = calibrated;
        f.implicit_calibration = true;
        fmt::print(stderr, "calm-generate: no policy flags: using the calibrated policy of {} "
                   "(--measure full runs the full model)\n", calibrated.string());
      } else {
        f.policy.measure = "full";
        fmt::print(stderr, "calm-generate: no policy flags and no {} next to the model: running "
                   "the full model\n", calm::calibrate::kCalibrationFileName);
      }
    }
    return run(f);
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-generate: error: {}\n", e.what());
    return 1;
  }
}
