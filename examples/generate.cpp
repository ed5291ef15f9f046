// calm-generate: stream text from a Hugging Face Llama checkpoint.
//   calm-generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature T --top-k K
//                 --top-p P --seed S] [--threads N]
#include <calm/backends/llama/llama.hpp>
#include <calm/io/tokenizer.hpp>
#include <calm/sampling/sampler.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <chrono>
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
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run(const Flags& f) {
  const calm::Tokenizer tokenizer = calm::Tokenizer::load(f.model / "tokenizer.model");
  calm::Llama model = calm::Llama::load(f.model, {.threads = f.threads, .max_context = f.context});
  calm::Sampler sampler(f.sampling);
  const std::vector<int> prompt = tokenizer.encode(f.prompt, /*add_bos=*/true);
  if (prompt.size() + f.max_new_tokens > model.max_context())
    throw calm::Error(fmt::format(
        "--prompt is {} tokens; with --max-new-tokens {} that exceeds the context length {}",
        prompt.size(), f.max_new_tokens, model.max_context()));

  std::vector<float> x(model.hidden_size()), logits(model.vocab_size());
  calm::StreamDecoder stream(tokenizer);
  fmt::print("{}", f.prompt);
  std::fflush(stdout);

  const auto t0 = std::chrono::steady_clock::now();
  model.prefill(prompt, 0, x);
  model.exit_head(x, logits);
  const double prefill_s = seconds_since(t0);

  const auto t1 = std::chrono::steady_clock::now();
  std::size_t pos = prompt.size(), generated = 0;
  for (; generated < f.max_new_tokens; ++generated) {
    const int token = sampler.sample(logits);
    if (token == tokenizer.eos_id()) break;
    fmt::print("{}", stream.push(token));
    std::fflush(stdout);
    if (generated + 1 == f.max_new_tokens) {
      ++generated;
      break;
    }
    model.embed(token, x);
    for (std::size_t layer = 0; layer < model.num_layers(); ++layer) model.run_layer(layer, x, pos);
    model.exit_head(x, logits);
    ++pos;
  }
  fmt::print("{}\n", stream.flush());
  const double decode_s = seconds_since(t1);
  fmt::print(stderr, "\nprefill: {} tokens, {:.1f} tokens/s | generation: {} tokens, {:.1f} tokens/s\n",
             prompt.size(), prompt.size() / prefill_s, generated,
             generated ? generated / decode_s : 0.0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"calm-generate: generate text with a Hugging Face Llama checkpoint"};
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
  CLI11_PARSE(app, argc, argv);
  try {
    return run(f);
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-generate: error: {}\n", e.what());
    return 1;
  }
}
