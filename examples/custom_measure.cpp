// calm-custom-measure: a confidence measure defined outside the library — one minus the
// normalised entropy of the exit distribution, written as an xtensor expression — registered
// by name next to calm's own, calibrated with Learn-then-Test and decoded with.
//   calm-custom-measure --model DIR --prompt TEXT [--lambda 0.9] [--max-new-tokens 32]
//                       [--calibrate-on PROMPTS --delta D --output calm_calibration.json]
//                       [--calibration calm_calibration.json]
// A certificate is checked as calm-generate checks it (calm/calibrate/coverage.hpp): another
// model's, or one computed with other decoding settings, measure or threshold, is refused.
#include <calm/calibrate/coverage.hpp>
#include <calm/calm.hpp>
#include <calm/io/atomic_file.hpp>
#include <calm/io/prompts.hpp>
#include <calm/io/tokenizer.hpp>
#include <calm/policy_registry.hpp>

#include <CLI/CLI.hpp>
#include "cli_parse.hpp"
#include <fmt/core.h>

#include <cmath>
#include <exception>
#include <string>
#include <vector>

#include "entropy_measure.hpp"

// The measure itself (EntropyConfidence, 1 - H(p) / ln V) is in entropy_measure.hpp.

// calm's measures and schedules, plus this one: what the names below can refer to.
using Registry = calm::PolicyRegistry<
    calm::Measures<calm::SoftmaxResponse, calm::HiddenSaturation, EntropyConfidence,
                   calm::NoConfidence>,
    calm::ShippedSchedules>;

int main(int argc, char** argv) {
  const auto app_owner = calm::cli::make_app("calm-custom-measure: early exit with an entropy confidence defined in user code");
  CLI::App& app = *app_owner;
  std::filesystem::path model_dir, calibrate_on, output, calibration;
  std::string prompt;
  calm::PolicySpec spec;
  spec.measure = "entropy";
  spec.schedule = "constant";
  double delta = 0.2;
  std::size_t max_new = 32, threads = 1;
  app.add_option("--model", model_dir, "Hugging Face Llama checkpoint folder")->required();
  app.add_option("--prompt", prompt, "prompt text")->required();
  app.add_option("--measure", spec.measure, "a registered measure: entropy (this file), softmax, ...");
  app.add_option("--lambda", spec.lambda, "exit threshold on 1 - H/ln V")->check(CLI::Range(0.0, 1.0));
  app.add_option("--max-new-tokens", max_new, "tokens to generate");
  app.add_option("--threads", threads, "threads")->check(CLI::Range(1, 256));
  app.add_option("--calibrate-on", calibrate_on, "prompt file: certify lambda* by Learn-then-Test "
                 "(loss: share of tokens unlike the full model's)")->check(CLI::ExistingFile);
  app.add_option("--delta", delta, "tolerance of --calibrate-on")->check(CLI::Range(0.001, 0.999));
  app.add_option("--output", output, "where --calibrate-on writes calm_calibration.json")
      ->needs("--calibrate-on");
  app.add_option("--calibration", calibration, "decode with the policy of this file")
      ->check(CLI::ExistingFile);
  CALM_CLI_PARSE(app, argc, argv);
  namespace cal = calm::calibrate;
  try {
    // What would fail only after calibrating is refused first.
    if (!output.empty())
      calm::io::check_writable_destination(output, "--output",
                                           cal::run_inputs(model_dir, {calibrate_on, calibration}));
    const calm::Tokenizer tok = calm::Tokenizer::load_folder(model_dir);
    fmt::print(stderr, "calm-custom-measure: tokenizer: {}\n", tok.description());
    const auto model = calm::LlamaModel::load(model_dir);
    tok.check_fits(model->config(), (model_dir / "config.json").string());
    const calm::SessionOptions sessions{
        .pool = threads > 1 ? std::make_shared<calm::ThreadPool>(threads) : nullptr};
    const calm::PolicyContext ctx{model_dir, model->hidden_size()};
    spec.options.stop_tokens = {tok.eos_id()};
    if (!calibration.empty()) {  // the certificate's policy and length, refused if it does not apply
      const cal::CalibrationRecord rec = cal::read_calibration_json(calibration);
      cal::check_model_fingerprint(rec, model_dir, calibration.string());
      const auto certified = calm::calibrated_policy(rec, spec, calibration.string());
      if (!certified) throw calm::Error("'" + calibration.string() + "' certifies no threshold");
      if (rec.decoding && !app.count("--max-new-tokens")) max_new = rec.decoding->max_new_tokens;
      calm::PolicySpec run = *certified;  // the flags given win, and are compared below
      if (app.count("--measure")) run.measure = spec.measure;
      if (app.count("--lambda")) run.lambda = spec.lambda;
      const cal::Coverage coverage =
          cal::certificate_coverage(rec, *certified, run, {.max_new_tokens = max_new});
      if (!coverage.covered()) {
        std::string differences;
        for (const std::string& d : coverage.differences) differences += "; " + d;
        throw calm::Error("the guarantee of '" + calibration.string() +
                          "' does not apply to this run" + differences);
      }
      spec = run;
    }
    const std::vector<int> prompt_tokens = tok.encode(prompt);
    if (prompt_tokens.size() + max_new > model->max_context())
      throw calm::Error("--prompt is " + std::to_string(prompt_tokens.size()) +
                        " tokens; with --max-new-tokens " + std::to_string(max_new) +
                        " that exceeds the context length " + std::to_string(model->max_context()));
    const auto decode = [&](const calm::PolicySpec& p, const std::vector<int>& tokens) {
      return Registry::with_decoder(calm::LlamaSession(model, sessions), p, ctx,
                                    [&](auto&& d) { return d.generate(tokens, max_new); });
    };
    if (!calibrate_on.empty()) {
      const calm::io::EncodedPrompts prompts = calm::io::encode_prompts(
          calm::io::read_prompt_file(calibrate_on), tok, max_new, model->max_context());
      calm::PolicySpec full = spec;
      full.measure = "none";
      full.schedule = "never";
      std::vector<std::vector<int>> reference;
      for (const auto& p : prompts.prompts) reference.push_back(decode(full, p).tokens);
      calm::calibrate::CalibrationRecord record;
      record.result = calm::calibrate::calibrate(
          [&](double lambda) {
            calm::PolicySpec at = spec;
            at.lambda = static_cast<float>(lambda);
            std::vector<double> losses;
            for (std::size_t i = 0; i < reference.size(); ++i)
              losses.push_back(calm::calibrate::token_mismatch_distance(
                  decode(at, prompts.prompts[i]).tokens, reference[i]));
            return losses;
          },
          {.delta = delta});
      record.measure = spec.measure;
      record.schedule = calm::calibration_schedule_json(spec);
      record.model_fingerprint = calm::calibrate::model_fingerprint(model_dir);
      record.decoding = cal::DecodingRecord{.max_new_tokens = max_new};  // greedy, to EOS
      if (!output.empty()) calm::calibrate::write_calibration_json(output, record);
      fmt::print(stderr, "calibrated on {} prompts: lambda* = {}\n", reference.size(),
                 record.result.lambda_star ? fmt::format("{:.2f}", *record.result.lambda_star)
                                           : std::string("none (the full model)"));
      if (!record.result.lambda_star) spec.measure = "none", spec.schedule = "never";
      else spec.lambda = static_cast<float>(*record.result.lambda_star);
    }
    const auto out = decode(spec, prompt_tokens);
    fmt::print("{}{}\n", prompt, tok.decode(out.tokens));
    for (const calm::TokenStats& t : out.report.tokens)
      fmt::print(stderr, "t={:3} token={:6} exit layer {:2}/{} confidence {:.3f}\n", t.step,
                 t.token, t.exit_layer, out.report.num_layers, t.confidence);
    fmt::print(stderr, "{} at lambda {:.2f}: average layers {:.2f}, layer speedup {:.2f}x, "
               "{:.1f} tokens/s\n", spec.measure, spec.lambda, out.report.average_layers(),
               out.report.layer_speedup(), out.report.tokens_per_second());
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-custom-measure: {}\n", e.what());
    return 1;
  }
  return 0;
}
