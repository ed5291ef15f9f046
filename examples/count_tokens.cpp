// calm-count-tokens: how often each token of a model's vocabulary occurs in a text, tokenized with
// the model's own tokenizer -- the ranking that drafts over a sub-vocabulary take their tokens from
// (calm-generate --speculative --draft-vocab N; FR-Spec, Zhao et al. 2025).
//   calm-count-tokens --model DIR --text FILE [--out FILE]
// Writes DIR/token_frequencies.json (or --out) atomically, and prints how much of the text the
// most frequent 1/32, 1/16, ..., 1/2 of the vocabulary cover. Pick a text like what the model will be asked
// to write: the training text's train split, or the user's own documents.

#include <calm/io/hf_config.hpp>
#include <calm/io/mapped_file.hpp>
#include <calm/io/token_frequencies.hpp>
#include <calm/io/tokenizer.hpp>

#include <CLI/CLI.hpp>
#include "cli_parse.hpp"
#include <fmt/core.h>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace fs = std::filesystem;

// The text in pieces of about `chunk` bytes, each cut after a newline (or at the end), so a
// long file is never one tokenizer call and no word is cut in two.
void for_each_chunk(std::string_view text, std::size_t chunk,
                    const std::function<void(std::string_view)>& f) {
  while (!text.empty()) {
    std::size_t cut = std::min(chunk, text.size());
    if (cut < text.size()) {
      const std::size_t nl = text.find('\n', cut);
      cut = nl == std::string_view::npos ? text.size() : nl + 1;
    }
    f(text.substr(0, cut));
    text.remove_prefix(cut);
  }
}

int run(const fs::path& dir, const fs::path& text_file, fs::path out) {
  const calm::LlamaConfig config = calm::load_llama_config(dir / "config.json");
  const calm::Tokenizer tokenizer = calm::Tokenizer::load_folder(dir);
  tokenizer.check_fits(config, (dir / "config.json").string());
  const calm::io::MappedFile file(text_file);
  const std::string_view text = calm::io::as_text(file.bytes());
  if (text.empty()) throw calm::Error("the text '" + text_file.string() + "' is empty");
  std::vector<int> tokens;
  for_each_chunk(text, 1 << 16, [&](std::string_view piece) {
    const std::vector<int> ids = tokenizer.encode(piece, /*add_bos=*/false);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
  });
  const calm::TokenFrequencies f = calm::TokenFrequencies::count(
      tokens, config.vocab_size, text_file.filename().string());
  if (out.empty()) out = dir / calm::kTokenFrequenciesFile;
  calm::write_token_frequencies(out, f);

  std::vector<std::uint64_t> sorted = f.counts;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const auto seen = std::count_if(sorted.begin(), sorted.end(), [](auto c) { return c > 0; });
  fmt::print("{} tokens of '{}', {} of the {} vocabulary entries seen\n", f.total(),
             text_file.string(), seen, f.vocab_size());
  for (std::size_t n = std::max<std::size_t>(1, f.vocab_size() / 32); n < f.vocab_size(); n *= 2) {
    std::uint64_t covered = 0;
    for (std::size_t i = 0; i < n; ++i) covered += sorted[i];
    fmt::print("  the {} most frequent: {:.2f}% of the text\n", n,
               100.0 * double(covered) / double(f.total()));
  }
  fmt::print("wrote {}\n", out.string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const auto app_owner = calm::cli::make_app(
      "calm-count-tokens: token frequencies of a text, for drafts over a sub-vocabulary");
  CLI::App& app = *app_owner;
  std::string model, text, out;
  app.add_option("--model", model, "Hugging Face Llama checkpoint folder (config.json, tokenizer)")
      ->required();
  app.add_option("--text", text, "the text to count (UTF-8)")->required();
  app.add_option("--out", out, "where to write (default: DIR/token_frequencies.json)")
      ->check(calm::cli::non_empty_path());
  CALM_CLI_PARSE(app, argc, argv);
  try {
    return run(model, text, out);
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-count-tokens: {}\n", e.what());
    return 1;
  }
}
