// calm-generate: stream text from a Hugging Face Llama checkpoint with CALM early exit.
//   calm-generate --model DIR (--prompt TEXT | --prompt-file FILE [--prompt-index I])
//                 [--max-new-tokens N] [--measure softmax|saturation|classifier|oracle|static|full
//                 --threshold L --tau T ...] [--calibration FILE] [--allow-uncertified]
//                 [--show-exits] [--report out.html] [--json] [--compare-full]
//                 [--temperature T --top-k K --top-p P --seed S] [--threads N]
//                 [--speculative [--draft ngram|exit|ngram+exit] [--ngram-max M --ngram-min M]
//                 [--gamma G | --gamma auto [--gamma-max G] [--verify-row-cost C]]
//                 [--no-reuse-draft]]   (lossless: n-gram drafts and/or the early-exit policy
//                 given draft; the output is the full model's)
#include "certificate.hpp"
#include "cli_parse.hpp"
#include "policy_flags.hpp"

#include <calm/io/report_formats.hpp>
#include <calm/io/tokenizer.hpp>
#include <calm/sampling/sampler.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace {

struct Flags {
  std::filesystem::path model;
  std::string prompt;
  std::filesystem::path prompt_file;  // --prompt-file: the prompt is one of its prompts
  std::size_t prompt_index = 0;
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
  calm::cli::SpeculativeFlags speculative;
};

namespace cal = calm::calibrate;

int run(Flags& f) {
  if (!f.prompt_file.empty()) f.prompt = calm::io::prompt_at(f.prompt_file, f.prompt_index);
  // What would fail only after decoding is refused first.
  if (f.json) calm::io::check_utf8(f.prompt, "--prompt");
  if (!f.report_html.empty()) calm::io::check_writable_destination(f.report_html, "--report",
      cal::run_inputs(f.model, {f.calibration, f.policy.classifier_file(f.model), f.prompt_file}));
  const calm::Tokenizer tokenizer = calm::Tokenizer::load_folder(f.model);
  fmt::print(stderr, "calm-generate: tokenizer: {}\n", tokenizer.description());
  const auto model = calm::LlamaModel::load(f.model, {.max_context = f.context, .weights = f.weights});
  tokenizer.check_fits(model->config(), (f.model / "config.json").string());
  const calm::SessionOptions sessions{.pool = calm::cli::make_pool(f.threads)};
  calm::cli::Certification certification;
  certification.lambda = f.policy.threshold;
  if (!f.calibration.empty()) {
    cal::DecodingRecord decoding{.temperature = f.temperature, .top_k = f.sampling.top_k,
                                 .top_p = f.top_p, .max_new_tokens = f.max_new_tokens};
    certification = calm::cli::apply_certificate(
        {.file = f.calibration, .model = f.model, .given = f.given,
         .allow_uncertified = f.allow_uncertified, .implicit = f.implicit_calibration,
         .drafts_only = f.speculative.enabled, .program = "calm-generate"},
        model->num_layers(), f.policy, decoding);
    f.temperature = decoding.temperature, f.sampling.top_k = decoding.top_k;
    f.top_p = decoding.top_p, f.max_new_tokens = decoding.max_new_tokens;
  }
  const float lambda = certification.lambda;
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
  if (f.speculative.enabled) {
    calm::cli::with_speculative_decoder(model, sessions, f.model, f.policy, lambda, f.speculative,
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
  CLI::Option* prompt = app.add_option("--prompt", f.prompt, "text to continue");
  app.add_option("--prompt-file", f.prompt_file, "take the prompt from a prompt file (.jsonl as "
                 "calm-calibrate reads it, or one per line)")->excludes(prompt)->check(CLI::ExistingFile);
  app.add_option("--prompt-index", f.prompt_index, "--prompt-file: which prompt, from 0");
  app.add_option("--max-new-tokens", f.max_new_tokens, "tokens to generate")->check(CLI::Range(1, 1 << 20));
  app.add_option("--threads", f.threads, "threads for the matrix products")->check(CLI::Range(1, 256));
  app.add_option("--context", f.context, "KV cache length (0: the model's, at most 4096)");
  calm::cli::add_weights_flag(app, f.weights);
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
  calm::cli::add_speculative_flags(app, f.speculative);
  CALM_CLI_PARSE(app, argc, argv);
  f.given = calm::cli::certifiable_flags_given(app);
  try {
    if (app.count("--prompt") == 0 && f.prompt_file.empty())
      throw calm::Error("give the text to continue: --prompt TEXT or --prompt-file FILE");
    if (app.count("--prompt-index") > 0 && f.prompt_file.empty())
      throw calm::Error("--prompt-index picks a prompt of --prompt-file: give --prompt-file");
    f.speculative.resolve_draft(app);
    // No policy named: the calibrated one next to the model if there is one, else the full
    // model with no exit checks (checks that never exit only cost time).
    if (f.calibration.empty() && !calm::cli::any_policy_flag(app) &&
        f.speculative.drafts_with_exits()) {
      f.calibration = calm::cli::certificate_next_to(f.model, f.policy, "calm-generate");
      f.implicit_calibration = !f.calibration.empty();
    }
    return run(f);
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-generate: error: {}\n", e.what());
    return 1;
  }
}
