// calm-custom-measure: a confidence measure defined outside the library — one minus the
// normalised entropy of the exit distribution — plugged into calm::Decoder.
//   calm-custom-measure --model DIR --prompt TEXT [--lambda 0.9] [--max-new-tokens 32]
#include <calm/backends/llama/llama.hpp>
#include <calm/confidence/softmax_response.hpp>  // calm::summarize_logits
#include <calm/decoder.hpp>
#include <calm/io/tokenizer.hpp>
#include <calm/schedule/constant.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <cmath>
#include <exception>

// The whole measure: declare that it reads the logits, and score them. c = 1 - H(p) / ln V.
struct EntropyConfidence {
  static constexpr bool needs_logits = true;
  static constexpr float max_score = 1.0f;  // optional: lets the decoder skip hopeless checks

  float score(const calm::ExitSignal& s) const noexcept {
    const float lse = calm::summarize_logits(s.logits).log_partition();
    double entropy = 0.0;  // H = sum p (lse - l), p = exp(l - lse)
    for (float l : s.logits) entropy += std::exp(double(l) - lse) * (double(lse) - l);
    return float(1.0 - entropy / std::log(double(s.logits.size())));
  }
};
static_assert(calm::ConfidenceMeasure<EntropyConfidence>);

int main(int argc, char** argv) {
  CLI::App app{"calm-custom-measure: early exit with an entropy confidence defined in user code"};
  std::string model_dir, prompt;
  float lambda = 0.9f;
  std::size_t max_new = 32, threads = 1;
  app.add_option("--model", model_dir, "Hugging Face Llama checkpoint folder")->required();
  app.add_option("--prompt", prompt, "prompt text")->required();
  app.add_option("--lambda", lambda, "exit threshold on 1 - H/ln V");
  app.add_option("--max-new-tokens", max_new, "tokens to generate");
  app.add_option("--threads", threads, "threads");
  CLI11_PARSE(app, argc, argv);
  try {
    const calm::Tokenizer tok = calm::Tokenizer::load(std::filesystem::path(model_dir) / "tokenizer.model");
    calm::DecoderOptions opts;
    opts.stop_tokens = {tok.eos_id()};
    calm::Decoder<calm::LlamaSession, EntropyConfidence, calm::ConstantThreshold> dec(
        calm::LlamaSession::load(model_dir, threads), {}, calm::ConstantThreshold{lambda}, opts);
    const auto out = dec.generate(tok.encode(prompt), max_new);
    fmt::print("{}{}\n", prompt, tok.decode(out.tokens));
    for (const calm::TokenStats& t : out.report.tokens)
      fmt::print(stderr, "t={:3} token={:6} exit layer {:2}/{} confidence {:.3f}\n", t.step,
                 t.token, t.exit_layer, out.report.num_layers, t.confidence);
    fmt::print(stderr, "average layers {:.2f}, layer speedup {:.2f}x, {:.1f} tokens/s\n",
               out.report.average_layers(), out.report.layer_speedup(),
               out.report.tokens_per_second());
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-custom-measure: {}\n", e.what());
    return 1;
  }
  return 0;
}
