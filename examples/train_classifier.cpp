// calm-train-classifier: trains the early-exit classifier (docs/design.md §3c), backbone frozen.
//   calm-train-classifier --model DIR --text FILE [--max-tokens 4096] [--epochs 200]
//                         [--lr 0.01] [--threads 1] [--window 128]
// Teacher forcing over windows of the text: at every position and layer i = 1..L-1 it records
// RMSNorm_final(d^i) and the label z = [argmax head(d^i) == argmax head(d^L)], trains the shared
// 2-way classifier with class-balanced cross-entropy (full batch, Adam), reports held-out
// accuracy per layer (the last 20% of positions), and writes DIR/calm.safetensors atomically.
#include <calm/backends/llama/llama.hpp>
#include <calm/confidence/exit_classifier.hpp>
#include <calm/io/mapped_file.hpp>
#include <calm/io/tokenizer.hpp>
#include <calm/kernels/argmax.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <cmath>
#include <exception>
#include <fstream>
#include <sstream>
#include <vector>

namespace {

struct Samples {
  std::vector<float> features;  // (n, hidden)
  std::vector<int> labels;      // (n)
  std::vector<std::size_t> layers;  // (n) 1-based layer of each sample
};

int run(const std::filesystem::path& dir, const std::filesystem::path& text_file,
        const calm::exit_classifier_training::TrainingFlags& flags) {
  namespace tr = calm::exit_classifier_training;
  tr::check_training_flags(flags);
  const std::size_t max_tokens = flags.max_tokens, epochs = flags.epochs, threads = flags.threads;
  const float lr = flags.lr;
  std::size_t window = flags.window;
  calm::io::require_regular_file(text_file, "--text:");
  std::ifstream in(text_file);
  if (!in) throw calm::Error("--text: cannot read '" + text_file.string() + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  const calm::Tokenizer tok = calm::Tokenizer::load_folder(dir);
  fmt::print(stderr, "calm-train-classifier: tokenizer: {}\n", tok.description());
  std::vector<int> tokens = tok.encode(ss.str(), /*add_bos=*/false);
  if (tokens.size() > max_tokens) tokens.resize(max_tokens);
  if (tokens.size() < 10)
    throw calm::Error("--text: '" + text_file.string() + "' has only " +
                      std::to_string(tokens.size()) + " tokens; need at least 10");
  calm::LlamaSession model = calm::LlamaSession::load(dir, threads);
  tok.check_fits(model.config(), (dir / "config.json").string());
  const std::size_t L = model.num_layers(), h = model.hidden_size();
  if (L < 2) throw calm::Error("the model has one layer: nothing to exit early from");
  if (model.max_context() < 2)
    throw calm::Error("the model's context of " + std::to_string(model.max_context()) +
                      " position holds no teacher-forcing window (BOS and one token)");
  window = std::min(window, model.max_context() - 1);

  // Teacher forcing: windows of `window` tokens, each starting with BOS at position 0.
  const std::size_t split = tokens.size() * 4 / 5;  // positions before: train; after: held out
  Samples train, test;
  std::vector<float> x(h), normed(h), logits(model.vocab_size());
  std::vector<float> states((L - 1) * h);
  std::vector<std::size_t> argmaxes(L);
  const int bos = model.config().bos_token_id;
  for (std::size_t start = 0; start < tokens.size(); start += window) {
    const std::size_t end = std::min(tokens.size(), start + window);
    for (std::size_t j = start; j < end; ++j) {
      const std::size_t pos = j - start + 1;
      if (pos == 1) {
        model.embed(bos, x);
        for (std::size_t i = 0; i < L; ++i) model.run_layer(i, x, 0);
      }
      model.embed(tokens[j], x);
      for (std::size_t i = 0; i < L; ++i) {
        model.run_layer(i, x, pos);
        model.final_norm(x, normed);
        model.lm_head(normed, logits);
        argmaxes[i] = calm::kernels::argmax(logits.data(), logits.size());
        if (i + 1 < L) std::copy(normed.begin(), normed.end(), states.begin() + i * h);
      }
      Samples& s = j < split ? train : test;
      for (std::size_t i = 0; i + 1 < L; ++i) {
        s.features.insert(s.features.end(), states.begin() + i * h, states.begin() + (i + 1) * h);
        s.labels.push_back(tr::label(argmaxes[i], argmaxes[L - 1]));
        s.layers.push_back(i + 1);
      }
    }
  }
  std::size_t n_pos = 0;
  for (int y : train.labels) n_pos += std::size_t(y);
  const tr::ClassWeights w = tr::balanced_weights(n_pos, train.labels.size());
  fmt::print("{} train samples ({} positive), {} held out; class weights +{:.3f} -{:.3f}\n",
             train.labels.size(), n_pos, test.labels.size(), w.positive, w.negative);

  // Full-batch Adam (beta1 0.9, beta2 0.999): the problem is convex and small.
  const float zero[2] = {0.0f, 0.0f};
  calm::ExitClassifier clf(std::vector<float>(2 * h, 0.0f), zero);
  std::vector<float> gw(2 * h), gb(2), m(2 * h + 2, 0.0f), v(2 * h + 2, 0.0f);
  double loss = 0.0;
  for (std::size_t e = 1; e <= epochs; ++e) {
    loss = tr::loss_and_gradient(clf, train.features, train.labels, w, gw, gb);
    const double c1 = 1.0 - std::pow(0.9, double(e)), c2 = 1.0 - std::pow(0.999, double(e));
    const auto update = [&](float& param, float g, std::size_t k) {
      m[k] = 0.9f * m[k] + 0.1f * g;
      v[k] = 0.999f * v[k] + 0.001f * g * g;
      param -= float(lr * (m[k] / c1) / (std::sqrt(v[k] / c2) + 1e-8));
    };
    for (std::size_t k = 0; k < 2 * h; ++k) update(clf.weight()[k], gw[k], k);
    for (std::size_t k = 0; k < 2; ++k) update(clf.bias()[k], gb[k], 2 * h + k);
    if (e == 1 || e % 50 == 0 || e == epochs) fmt::print("epoch {:4}: loss {:.5f}\n", e, loss);
  }

  // Held-out accuracy per layer (predict "exit" when softmax[1] >= 0.5).
  std::vector<std::size_t> correct(L, 0), total(L, 0), positives(L, 0);
  calm::ExitSignal sig;
  for (std::size_t s = 0; s < test.labels.size(); ++s) {
    sig.normed_state = std::span<const float>(test.features.data() + s * h, h);
    const int pred = clf.score(sig) >= 0.5f ? 1 : 0;
    const std::size_t layer = test.layers[s];
    correct[layer] += std::size_t(pred == test.labels[s]);
    positives[layer] += std::size_t(test.labels[s]);
    ++total[layer];
  }
  fmt::print("held-out accuracy per layer (share of positive labels):\n");
  for (std::size_t i = 1; i < L; ++i)
    if (total[i] > 0)
      fmt::print("  layer {:3}: {:.3f} ({:.3f})\n", i, double(correct[i]) / double(total[i]),
                 double(positives[i]) / double(total[i]));
  clf.save(dir / "calm.safetensors");
  fmt::print("wrote {}\n", (dir / "calm.safetensors").string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"calm-train-classifier: train the early-exit classifier (docs/design.md §3c)"};
  std::string model, text;
  calm::exit_classifier_training::TrainingFlags f;
  app.add_option("--model", model, "Hugging Face Llama checkpoint folder")->required();
  app.add_option("--text", text, "training text (UTF-8)")->required();
  app.add_option("--max-tokens", f.max_tokens, "tokens of the text to use (at least 10)");
  app.add_option("--epochs", f.epochs, "full-batch Adam steps (at least 1)");
  app.add_option("--lr", f.lr, "Adam learning rate (finite, positive)");
  app.add_option("--threads", f.threads, "threads for the model")->check(CLI::Range(1, 256));
  app.add_option("--window", f.window, "teacher-forcing window length in tokens (at least 1)");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(model, text, f);
  } catch (const std::exception& e) {
    fmt::print(stderr, "calm-train-classifier: {}\n", e.what());
    return 1;
  }
}
