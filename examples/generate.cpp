// calm-generate: stream text from a Hugging Face Llama checkpoint with CALM early exit.
//   calm-generate --model DIR --prompt TEXT [--max-new-tokens N] [--measure softmax|saturation|
//                 classifier|oracle|static|full --threshold L --tau T ...] [--calibration FILE]
//                 [--show-exits] [--report out.html] [--json] [--compare-full]
//                 [--temperature T --top-k K --top-p P --seed S] [--threads N]
#include "policy_flags.hpp"

#include <calm/calibrate/calibration_json.hpp>
#include <calm/io/atomic_file.hpp>
#include <calm/io/tokenizer.hpp>
#include <calm/sampling/sampler.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

namespace {

struct Flags {
  std::filesystem::path model;
  std::string prompt;
  std::size_t max_new_tokens = 64;
  std::size_t threads = 1;
  std::size_t context = 0;
  calm::SamplingOptions sampling;
  calm::cli::PolicyFlags policy;
  std::filesystem::path calibration;
  bool show_exits = false;
  std::filesystem::path report_html;
  bool json = false;
  bool compare_full = false;
};

// The exit layer's colour: green in the lower half of the layers, red in the upper half.
bool exits_low(std::size_t exit_layer, std::size_t num_layers) { return 2 * exit_layer <= num_layers; }

struct Piece {
  std::string text;
  calm::TokenStats stats;
};

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

void write_html(const std::filesystem::path& path, const std::string& prompt,
                const std::vector<Piece>& pieces, const calm::SequenceReport& r) {
  std::string body;
  for (const Piece& p : pieces) {
    const bool low = exits_low(p.stats.exit_layer, r.num_layers);
    body += fmt::format(
        "<span class=\"{}\" title=\"exit layer {} of {}, confidence {:.3f}, threshold {:.3f}\">{}</span>",
        low ? "low" : "high", p.stats.exit_layer, r.num_layers, p.stats.confidence,
        p.stats.threshold, html_escape(p.text));
  }
  const std::string page = fmt::format(
      "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>calm: exits per token</title>\n"
      "<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}"
      "pre{{white-space:pre-wrap;font-size:1.1em;line-height:1.6}}"
      ".low{{background:#b9f6ca}}.high{{background:#ffcdd2}}.prompt{{color:#555}}</style></head>\n"
      "<body><h1>calm: where each token left the network</h1>\n"
      "<p>Legend: <span class=\"low\">exited in layers 1..{}</span> "
      "<span class=\"high\">exited in layers {}..{}</span>. Hover a token for its exit layer.</p>\n"
      "<pre><span class=\"prompt\">{}</span>{}</pre>\n"
      "<p>{} tokens, average layers {:.2f} of {}, layer speedup {:.2f}x, {:.1f} tokens/s.</p>\n"
      "</body></html>\n",
      r.num_layers / 2, r.num_layers / 2 + 1, r.num_layers, html_escape(prompt), body,
      r.tokens.size(), r.average_layers(), r.num_layers, r.layer_speedup(), r.tokens_per_second());
  calm::io::write_atomically(path, [&](std::FILE* f) {
    calm::io::write_all(f, page.data(), page.size(), path);
  });
}

nlohmann::json json_report(const std::vector<Piece>& pieces, const calm::SequenceReport& r) {
  nlohmann::json tokens = nlohmann::json::array();
  const auto num = [](float v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
  for (const Piece& p : pieces)
    tokens.push_back({{"step", p.stats.step}, {"token", p.stats.token}, {"text", p.text},
                      {"exit_layer", p.stats.exit_layer}, {"confidence", num(p.stats.confidence)},
                      {"threshold", num(p.stats.threshold)}, {"checks", p.stats.checks}});
  return {{"num_layers", r.num_layers},
          {"prompt_tokens", r.prompt_tokens},
          {"generated_tokens", r.tokens.size()},
          {"average_layers", r.average_layers()},
          {"layer_speedup", r.layer_speedup()},
          {"tokens_per_second", r.tokens_per_second()},
          {"prefill_seconds", r.prefill_seconds},
          {"generation_seconds", r.generation_seconds},
          {"layer_seconds", r.layer_seconds},
          {"check_seconds", r.check_seconds},
          {"propagation_seconds", r.propagation_seconds},
          {"head_seconds", r.head_seconds},
          {"tokens", tokens}};
}

// Applies calm_calibration.json: its measure, schedule and certified threshold lambda*.
float apply_calibration(Flags& f) {
  const calm::calibrate::CalibrationRecord rec = calm::calibrate::read_calibration_json(f.calibration);
  const std::string fingerprint = calm::calibrate::model_fingerprint(f.model);
  if (rec.model_fingerprint != fingerprint)
    throw calm::Error("'" + f.calibration.string() + "' was calibrated for another model "
                      "(fingerprint " + rec.model_fingerprint + ", this model " + fingerprint + ")");
  calm::calibrate::CalibratedPolicy defaults;
  defaults.schedule = f.policy.schedule;
  defaults.tau = f.policy.tau;
  defaults.first_exit = f.policy.first_exit;
  defaults.interval = f.policy.interval;
  defaults.propagation = f.policy.propagation;
  const calm::calibrate::CalibratedPolicy p =
      calm::calibrate::calibrated_policy(rec, defaults, f.calibration.string());
  f.policy.measure = p.measure;
  f.policy.schedule = p.schedule;
  f.policy.tau = p.tau;
  f.policy.first_exit = p.first_exit;
  f.policy.interval = p.interval;
  f.policy.propagation = p.propagation;
  if (!rec.result.lambda_star) {
    fmt::print(stderr, "calm-generate: {} certifies no threshold (delta {}, epsilon {}): "
               "running the full model\n", f.calibration.string(), rec.result.delta, rec.result.epsilon);
    f.policy.measure = "full";
    return 1.0f;
  }
  fmt::print(stderr, "calm-generate: calibrated threshold {:.2f} (delta {}, epsilon {})\n",
             *rec.result.lambda_star, rec.result.delta, rec.result.epsilon);
  return static_cast<float>(*rec.result.lambda_star);
}

int run(Flags& f) {
  const calm::Tokenizer tokenizer = calm::Tokenizer::load(f.model / "tokenizer.model");
  const auto model = calm::LlamaModel::load(f.model, {.max_context = f.context});
  const calm::SessionOptions sessions{.pool = calm::cli::make_pool(f.threads)};
  const float lambda = f.calibration.empty() ? f.policy.threshold : apply_calibration(f);
  const std::vector<int> prompt = tokenizer.encode(f.prompt, /*add_bos=*/true);
  if (prompt.size() + f.max_new_tokens > model->max_context())
    throw calm::Error(fmt::format(
        "--prompt is {} tokens; with --max-new-tokens {} that exceeds the context length {}",
        prompt.size(), f.max_new_tokens, model->max_context()));
  const bool stream_text = !f.json;

  std::vector<Piece> pieces;
  calm::SequenceReport report;
  std::vector<int> tokens;
  calm::cli::with_decoder(model, sessions, f.model, f.policy, lambda, [&](auto&& decoder) {
    calm::Sampler sampler(f.sampling);
    calm::StreamDecoder stream(tokenizer);
    if (stream_text) fmt::print("{}", f.prompt);  // once the decoder exists: errors come first
    std::fflush(stdout);
    auto result = decoder.generate(prompt, f.max_new_tokens, sampler, [&](const calm::TokenStats& ts) {
      if (ts.token == tokenizer.eos_id()) return false;
      Piece p{stream.push(ts.token), ts};
      if (stream_text) {
        if (f.show_exits) {
          const bool low = exits_low(ts.exit_layer, model->num_layers());
          fmt::print("\x1b[{}m{}\x1b[0m", low ? 32 : 31, p.text);
        } else {
          fmt::print("{}", p.text);
        }
        std::fflush(stdout);
      }
      pieces.push_back(std::move(p));
      return true;
    });
    const std::string tail = stream.flush();
    if (!tail.empty() && !pieces.empty()) pieces.back().text += tail;
    if (stream_text) fmt::print("{}\n", tail);
    std::fflush(stdout);  // before the legend and summary on stderr
    report = std::move(result.report);
    tokens = std::move(result.tokens);
    return 0;
  });

  const std::size_t L = model->num_layers();
  if (f.show_exits && stream_text)
    fmt::print(stderr, "legend: \x1b[32mexited in layers 1..{}\x1b[0m, \x1b[31mexited in layers {}..{}\x1b[0m\n",
               L / 2, L / 2 + 1, L);
  if (!f.report_html.empty()) write_html(f.report_html, f.prompt, pieces, report);

  nlohmann::json out = json_report(pieces, report);
  std::string summary = fmt::format(
      "prefill: {} tokens, {:.1f} tokens/s | generation: {} tokens, {:.1f} tokens/s\n"
      "average layers {:.2f} of {} | layer speedup {:.2f}x | time: layers {:.0f}%, checks {:.0f}%, "
      "propagation {:.0f}%, head {:.0f}%",
      report.prompt_tokens, report.prefill_seconds > 0 ? report.prompt_tokens / report.prefill_seconds : 0.0,
      report.tokens.size(), report.tokens_per_second(), report.average_layers(), L,
      report.layer_speedup(), 100 * report.layer_seconds / std::max(report.generation_seconds, 1e-12),
      100 * report.check_seconds / std::max(report.generation_seconds, 1e-12),
      100 * report.propagation_seconds / std::max(report.generation_seconds, 1e-12),
      100 * report.head_seconds / std::max(report.generation_seconds, 1e-12));
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
  if (f.json) {
    out["prompt"] = f.prompt;
    out["text"] = tokenizer.decode(tokens);
    fmt::print("{}\n", out.dump(2));
  }
  fmt::print(stderr, "\n{}\n", summary);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"calm-generate: generate text with a Hugging Face Llama checkpoint, exiting early"};
  Flags f;
  app.add_option("--model", f.model, "checkpoint directory (config.json, model.safetensors, tokenizer.model)")
      ->required()->check(CLI::ExistingDirectory);
  app.add_option("--prompt", f.prompt, "text to continue")->required();
  app.add_option("--max-new-tokens", f.max_new_tokens, "tokens to generate")->check(CLI::Range(1, 1 << 20));
  app.add_option("--threads", f.threads, "threads for the matrix products")->check(CLI::Range(1, 256));
  app.add_option("--context", f.context, "KV cache length (0: the model's, at most 4096)");
  app.add_option("--temperature", f.sampling.temperature, "0 = greedy")->check(CLI::Range(0.0, 100.0));
  app.add_option("--top-k", f.sampling.top_k, "keep the k most likely tokens (0 = all)");
  app.add_option("--top-p", f.sampling.top_p, "nucleus mass in (0, 1]")->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", f.sampling.seed, "random seed for sampling");
  calm::cli::add_policy_flags(app, f.policy);
  app.add_option("--calibration", f.calibration, "calm_calibration.json from calm-calibrate: its "
                 "measure, schedule and certified threshold")->check(CLI::ExistingFile);
  app.add_flag("--show-exits", f.show_exits, "colour each token by its exit layer");
  app.add_option("--report", f.report_html, "write the coloured text as an HTML page");
  app.add_flag("--json", f.json, "print per-token and per-sequence statistics as JSON");
  app.add_flag("--compare-full", f.compare_full, "also run the full model: wall-clock speedup");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(f);
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-generate: error: {}\n", e.what());
    return 1;
  }
}
