// calm-train-classifier: trains the early-exit classifier (docs/design.md §3c), backbone frozen.
//   calm-train-classifier --model DIR --text FILE [--kind mlp|linear] [--hidden-units 32]
//                         [--max-tokens 1000000] [--epochs 12] [--batch 256] [--patience 3]
//                         [--lr 0.002] [--holdout 0.15] [--seed 1] [--threads 1] [--window 128]
//                         [--evaluate]
// Teacher forcing over windows of the text: at every position and layer i = 1..L-1 it records
// the classifier's input (RMSNorm_final(d^i) and the extras of calm::exit_features) and the label
// z = [argmax head(d^i) == argmax head(d^L)]. The last --holdout share of positions is held out.
// Trains with minibatch Adam on class-balanced cross-entropy (inputs standardised, folded into
// the first layer at the end), keeps the epoch of lowest held-out loss, reports held-out
// accuracy and precision / coverage at high confidence per layer, and writes DIR/calm.safetensors
// atomically. --evaluate reports on DIR/calm.safetensors as it is and writes nothing.

#include <calm/backends/llama/llama.hpp>
#include <calm/confidence/exit_classifier.hpp>
#include <calm/confidence/exit_classifier_training.hpp>
#include <calm/io/mapped_file.hpp>
#include <calm/io/tokenizer.hpp>

#include <CLI/CLI.hpp>
#include "cli_parse.hpp"
#include <fmt/core.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

namespace {

namespace tr = calm::exit_classifier_training;

using Samples = tr::Dataset;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Held-out accuracy (exit when score >= 0.5), positive share, and at each high threshold the
// precision (share of samples scoring >= it whose label is 1: a safe exit) and coverage (share
// of all samples scoring >= it), per layer and over all layers.
void report(const calm::ExitClassifier& c, const Samples& d, std::size_t L) {
  constexpr double kThresholds[] = {0.8, 0.9, 0.95, 0.99};
  constexpr std::size_t K = std::size(kThresholds);
  struct Counts {
    std::size_t n = 0, correct = 0, positive = 0, above[K] = {}, above_pos[K] = {};
  };
  std::vector<Counts> by(L + 1);  // [0]: all layers
  for (std::size_t s = 0; s < d.size(); ++s) {
    const float p = c.score_row(d.row(s));
    const int y = d.labels[s];
    for (Counts* k : {&by[0], &by[d.layers[s]]}) {
      ++k->n;
      k->correct += std::size_t((p >= 0.5f ? 1 : 0) == y);
      k->positive += std::size_t(y);
      for (std::size_t q = 0; q < K; ++q)
        if (p >= kThresholds[q]) {
          ++k->above[q];
          k->above_pos[q] += std::size_t(y);
        }
    }
  }
  fmt::print("held out ({} samples): accuracy, positive share, precision / coverage at score >= "
             "0.8 0.9 0.95 0.99\n", d.size());
  fmt::print("  layer   acc   pos |   p@.8  c@.8 |   p@.9  c@.9 |  p@.95 c@.95 |  p@.99 c@.99\n");
  for (std::size_t i = 1; i <= L; ++i) {
    const std::size_t at = i == L ? 0 : i;
    const Counts& k = by[at];
    if (k.n == 0) continue;
    std::string line = fmt::format("  {:>5} {:.3f} {:.3f}", at == 0 ? std::string("all")
                                                                   : std::to_string(at),
                                   double(k.correct) / double(k.n),
                                   double(k.positive) / double(k.n));
    for (std::size_t q = 0; q < K; ++q) {
      const std::string prec =
          k.above[q] > 0 ? fmt::format("{:.3f}", double(k.above_pos[q]) / double(k.above[q]))
                         : std::string("    -");
      line += fmt::format(" | {:>6} {:.3f}", prec, double(k.above[q]) / double(k.n));
    }
    fmt::print("{}\n", line);
  }
}

int run(const std::filesystem::path& dir, const std::filesystem::path& text_file,
        const tr::TrainingFlags& flags, bool evaluate) {
  tr::check_training_flags(flags);
  const auto t_start = std::chrono::steady_clock::now();
  calm::io::require_regular_file(text_file, "--text:");
  std::ifstream in(text_file);
  if (!in) throw calm::Error("--text: cannot read '" + text_file.string() + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  const calm::Tokenizer tok = calm::Tokenizer::load_folder(dir);
  fmt::print(stderr, "calm-train-classifier: tokenizer: {}\n", tok.description());
  std::vector<int> tokens = tok.encode(ss.str(), /*add_bos=*/false);
  if (tokens.size() > flags.max_tokens) tokens.resize(flags.max_tokens);
  if (tokens.size() < 10)
    throw calm::Error("--text: '" + text_file.string() + "' has only " +
                      std::to_string(tokens.size()) + " tokens; need at least 10");
  calm::LlamaSession model = calm::LlamaSession::load(dir, flags.threads);
  tok.check_fits(model.config(), (dir / "config.json").string());
  const std::size_t L = model.num_layers(), h = model.hidden_size();
  if (L < 2) throw calm::Error("the model has one layer: nothing to exit early from");
  if (L > 255) throw calm::Error("the model has more than 255 layers");
  if (model.max_context() < 2)
    throw calm::Error("the model's context of " + std::to_string(model.max_context()) +
                      " position holds no teacher-forcing window (BOS and one token)");
  const std::size_t window = std::min(flags.window, model.max_context() - 1);
  // Samples are kept in memory, (L - 1) rows of hidden + 3 floats per token: refuse a run that
  // would not fit rather than be killed halfway.
  const double bytes = double(tokens.size()) * double(L - 1) *
                       double(h + calm::kExitClassifierExtras) * 4.0;
  if (bytes > 12e9)
    throw calm::Error("--max-tokens " + std::to_string(tokens.size()) + " would keep " +
                      fmt::format("{:.1f}", bytes / 1e9) +
                      " GB of samples in memory (limit 12 GB): lower --max-tokens");
  const std::size_t split =
      tokens.size() - std::max<std::size_t>(1, std::size_t(double(tokens.size()) * flags.holdout));

  // --evaluate reads the file first: a missing or refused one fails before the model runs.
  std::optional<calm::ExitClassifier> given;
  if (evaluate) given = calm::ExitClassifier::load(dir / "calm.safetensors", h);
  Samples train, test;
  const auto t_collect = std::chrono::steady_clock::now();
  if (!evaluate) {
    train.rows.reserve(split * (L - 1) * (h + calm::kExitClassifierExtras));
    train.labels.reserve(split * (L - 1));
    train.layers.reserve(split * (L - 1));
  }
  tr::collect_samples(model, tokens, window, split, !evaluate, train, test);
  fmt::print("{} tokens ({} held out), {} layers: samples collected in {:.1f} s\n", tokens.size(),
             tokens.size() - split, L, seconds_since(t_collect));
  if (evaluate) {
    fmt::print("{}: kind {}\n", (dir / "calm.safetensors").string(),
               given->kind() == calm::ExitClassifierKind::mlp ? "mlp" : "linear");
    report(*given, test, L);
    return 0;
  }
  if (train.size() == 0) throw calm::Error("--text: no training positions before the held-out part");
  const auto t_train = std::chrono::steady_clock::now();
  std::size_t n_pos = 0;
  for (int y : train.labels) n_pos += std::size_t(y);
  const tr::ClassWeights w = tr::balanced_weights(n_pos, train.size());
  fmt::print("{} train samples ({} positive), {} held out; class weights +{:.3f} -{:.3f}\n",
             train.size(), n_pos, test.size(), w.positive, w.negative);
  auto t_epoch = std::chrono::steady_clock::now();
  std::size_t kept = 0;
  double kept_loss = 0.0;
  const calm::ExitClassifier clf =
      tr::train(train, test, h, flags, [&](const tr::EpochReport& r) {
        if (r.kept) {
          kept = r.epoch;
          kept_loss = r.heldout_loss;
        }
        if (r.epoch == 0)
          fmt::print("epoch    0: held-out loss {:.5f}\n", r.heldout_loss);
        else
          fmt::print("epoch {:4}: train loss {:.5f}, held-out loss {:.5f} ({:.1f} s)\n", r.epoch,
                     r.train_loss, r.heldout_loss, seconds_since(t_epoch));
        t_epoch = std::chrono::steady_clock::now();
      });
  fmt::print("kept epoch {} (held-out loss {:.5f})\n", kept, kept_loss);
  fmt::print("trained in {:.1f} s (total {:.1f} s)\n", seconds_since(t_train),
             seconds_since(t_start));
  report(clf, test, L);
  clf.save(dir / "calm.safetensors");
  fmt::print("wrote {}\n", (dir / "calm.safetensors").string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const auto app_owner = calm::cli::make_app("calm-train-classifier: train the early-exit classifier (docs/design.md §3c)");
  CLI::App& app = *app_owner;
  std::string model, text;
  tr::TrainingFlags f;
  bool evaluate = false;
  app.add_option("--model", model, "Hugging Face Llama checkpoint folder")->required();
  app.add_option("--text", text, "training text (UTF-8)")->required();
  app.add_option("--kind", f.kind, "classifier kind: mlp (default) or linear (CALM's head)");
  app.add_option("--hidden-units", f.hidden_units, "the mlp's hidden units (1 to 4096)");
  app.add_option("--max-tokens", f.max_tokens, "tokens of the text to use (at least 10)");
  app.add_option("--epochs", f.epochs, "passes over the training samples (at least 1)");
  app.add_option("--batch", f.batch, "samples per Adam step (at least 1)");
  app.add_option("--patience", f.patience, "epochs without held-out improvement before stopping");
  app.add_option("--lr", f.lr, "Adam learning rate, cosine-decayed (finite, positive)");
  app.add_option("--holdout", f.holdout, "share of positions held out, the last (0.05 to 0.5)");
  app.add_option("--seed", f.seed, "seed of initialisation and shuffling");
  app.add_option("--threads", f.threads, "threads for the model")->check(CLI::Range(1, 256));
  app.add_option("--window", f.window, "teacher-forcing window length in tokens (at least 1)");
  app.add_flag("--evaluate", evaluate,
               "report on DIR/calm.safetensors as it is (the held-out part), write nothing");
  CALM_CLI_PARSE(app, argc, argv);
  try {
    return run(model, text, f, evaluate);
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-train-classifier: {}\n", e.what());
    return 1;
  }
}
