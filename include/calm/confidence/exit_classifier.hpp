// Early-exit classifier (docs/design.md §3c): c = softmax(W_c . RMSNorm_final(d_t^i) + b_c)[1], one
// classifier shared by all layers, W_c (2, hidden), b_c (2), stored in calm.safetensors as
// calm.exit_classifier.weight / calm.exit_classifier.bias. O(d) per check, no vocabulary
// projection. Also here: the pieces of its training (labels, class-balanced loss) so that
// calm-train-classifier and the tests share one definition.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "calm/concepts.hpp"
#include "calm/core/error.hpp"
#include "calm/io/safetensors.hpp"
#include "calm/io/safetensors_writer.hpp"

namespace calm {

inline constexpr const char* kExitClassifierWeight = "calm.exit_classifier.weight";
inline constexpr const char* kExitClassifierBias = "calm.exit_classifier.bias";

class ExitClassifier {
 public:
  static constexpr bool needs_logits = false;
  static constexpr bool needs_normed_state = true;
  static constexpr float max_score = 1.0f;

  ExitClassifier() = default;
  // weight (2, hidden) row-major, bias (2).
  ExitClassifier(std::vector<float> weight, std::span<const float, 2> bias)
      : weight_(std::move(weight)), bias_{bias[0], bias[1]} {
    if (weight_.empty() || weight_.size() % 2 != 0)
      throw Error("ExitClassifier: weight must have shape (2, hidden), got " +
                  std::to_string(weight_.size()) + " values");
  }

  // Reads calm.safetensors (F32, F16 or BF16, at any alignment: io/safetensors.hpp); hidden is
  // the model's hidden size. A NaN or an infinity in either tensor is refused, naming it: such a
  // classifier would never exit (NaN) or always exit (an infinite bias).
  static ExitClassifier load(const std::filesystem::path& file, std::size_t hidden) {
    const io::SafeTensorsFile st = io::SafeTensorsFile::open(file);
    const auto read = [&](const char* name, std::size_t rows, std::size_t cols) {
      const io::TensorView* t = st.find(name);
      if (t == nullptr) throw Error("'" + file.string() + "': no tensor '" + name + "'");
      const bool ok = rows == 1 ? (t->shape.size() == 1 && t->shape[0] == cols)
                                : (t->shape.size() == 2 && t->shape[0] == rows &&
                                   t->shape[1] == cols);
      if (!ok)
        throw Error("tensor '" + std::string(name) + "' in '" + file.string() + "' has shape " +
                    io::detail::shape_string(t->shape) + ", expected " +
                    (rows == 1 ? "[" + std::to_string(cols) + "]"
                               : "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]"));
      if (const std::optional<std::size_t> bad = t->first_non_finite()) {
        throw Error("tensor '" + std::string(name) + "' in '" + file.string() + "' holds " +
                    describe_non_finite(t->value(*bad)) + " at index " + std::to_string(*bad) +
                    "; a classifier with a non-finite value would never or always exit, so calm "
                    "refuses it");
      }
      return t->to_floats();
    };
    std::vector<float> w = read(kExitClassifierWeight, 2, hidden);
    const std::vector<float> b = read(kExitClassifierBias, 1, 2);
    return ExitClassifier(std::move(w), std::span<const float, 2>(b.data(), 2));
  }

  std::size_t hidden_size() const noexcept { return weight_.size() / 2; }
  std::span<const float> weight() const noexcept { return weight_; }  // (2, hidden)
  std::span<const float, 2> bias() const noexcept { return bias_; }
  std::span<float> weight() noexcept { return weight_; }  // for training
  std::span<float, 2> bias() noexcept { return bias_; }

  // Logits z (2) of the classifier on a normed state (hidden).
  void logits(std::span<const float> normed, float z[2]) const noexcept {
    const std::size_t h = hidden_size();
    float z0 = bias_[0], z1 = bias_[1];
    for (std::size_t j = 0; j < h; ++j) {
      z0 += weight_[j] * normed[j];
      z1 += weight_[h + j] * normed[j];
    }
    z[0] = z0;
    z[1] = z1;
  }

  float score(const ExitSignal& s) const noexcept {
    if (s.normed_state.size() != hidden_size()) return 0.0f;  // unconfigured: never exits
    float z[2];
    logits(s.normed_state, z);
    // A NaN or infinite state (or weights) gives non-finite logits: never exit on them.
    if (!std::isfinite(z[0]) || !std::isfinite(z[1])) return 0.0f;
    // softmax(z)[1] = 1 / (1 + exp(z0 - z1)): exact for any finite z, no overflow to NaN.
    return 1.0f / (1.0f + std::exp(z[0] - z[1]));
  }

  // Writes calm.safetensors (F32) atomically: readers see the old file or the whole new one.
  // A classifier holding a NaN or an infinity is refused (load would refuse it), and `file` is
  // left as it was.
  void save(const std::filesystem::path& file) const {
    const auto check = [&](std::span<const float> values, const char* name) {
      for (std::size_t i = 0; i < values.size(); ++i) {
        if (!std::isfinite(values[i]))
          throw Error("refusing to write '" + file.string() + "': " + name + " holds " +
                      describe_non_finite(values[i]) + " at index " + std::to_string(i) +
                      " (the file is left as it was)");
      }
    };
    check(weight_, kExitClassifierWeight);
    check(bias_, kExitClassifierBias);
    const io::TensorToWrite tensors[] = {
        {kExitClassifierWeight, DType::f32, {2, hidden_size()}, std::as_bytes(std::span(weight_))},
        {kExitClassifierBias, DType::f32, {2}, std::as_bytes(std::span(bias_))}};
    io::write_safetensors(file, tensors);
  }

 private:
  static std::string describe_non_finite(float v) {
    return std::isnan(v) ? "NaN" : (v > 0 ? "+inf" : "-inf");
  }

  std::vector<float> weight_;  // (2, hidden)
  float bias_[2] = {0.0f, 0.0f};
};

static_assert(ConfidenceMeasure<ExitClassifier>);

// Training of the classifier (docs/design.md §3c), backbone frozen.
namespace exit_classifier_training {

// z_t^i = 1 iff the exit head's argmax at layer i equals the top layer's.
inline int label(std::size_t argmax_at_layer, std::size_t argmax_at_top) noexcept {
  return argmax_at_layer == argmax_at_top ? 1 : 0;
}

struct ClassWeights {
  float positive = 0.5f;  // 1 - n_pos / n
  float negative = 0.5f;  // 1 - n_neg / n
};

// Class-balanced weights; n_pos <= n, n > 0.
inline ClassWeights balanced_weights(std::size_t n_pos, std::size_t n) {
  if (n == 0 || n_pos > n) throw Error("exit classifier: need 0 <= n_pos <= n and n > 0");
  const double p = static_cast<double>(n_pos) / static_cast<double>(n);
  return {static_cast<float>(1.0 - p), static_cast<float>(p)};
}

// Mean weighted cross-entropy over samples (features: (n, hidden) rows of RMSNorm_final(d),
// labels (n) in {0,1}), and its gradient (grad_w (2, hidden), grad_b (2)) — both averaged over
// n. Accumulated in double: millions of small terms.
inline double loss_and_gradient(const ExitClassifier& c, std::span<const float> features,
                                std::span<const int> labels, ClassWeights w,
                                std::span<float> grad_w, std::span<float> grad_b) {
  const std::size_t h = c.hidden_size();
  const std::size_t n = labels.size();
  std::vector<double> gw(2 * h, 0.0);
  double gb[2] = {0.0, 0.0};
  double loss = 0.0;
  for (std::size_t s = 0; s < n; ++s) {
    const std::span<const float> x = features.subspan(s * h, h);
    float z[2];
    c.logits(x, z);
    const double m = z[0] > z[1] ? z[0] : z[1];
    const double lse = m + std::log(std::exp(z[0] - m) + std::exp(z[1] - m));
    const int y = labels[s];
    const double weight = y == 1 ? w.positive : w.negative;
    loss += weight * (lse - z[y]);
    for (int k = 0; k < 2; ++k) {
      const double dz = weight * (std::exp(z[k] - lse) - (k == y ? 1.0 : 0.0));
      gb[k] += dz;
      for (std::size_t j = 0; j < h; ++j) gw[k * h + j] += dz * x[j];
    }
  }
  const double inv = n > 0 ? 1.0 / static_cast<double>(n) : 0.0;
  for (std::size_t j = 0; j < 2 * h; ++j) grad_w[j] = static_cast<float>(gw[j] * inv);
  grad_b[0] = static_cast<float>(gb[0] * inv);
  grad_b[1] = static_cast<float>(gb[1] * inv);
  return loss * inv;
}

// The settings of a training run (calm-train-classifier's flags).
struct TrainingFlags {
  std::size_t max_tokens = 4096;  // --max-tokens: tokens of the text to use
  std::size_t epochs = 200;       // --epochs: full-batch Adam steps
  float lr = 0.01f;               // --lr: Adam learning rate
  std::size_t threads = 1;        // --threads
  std::size_t window = 128;       // --window: teacher-forcing window in tokens
};

// Refuses settings that would loop forever (--window 0), train nothing (--epochs 0: an all-zero
// classifier), train to NaN (--lr nan, inf, <= 0) or start unbounded threads; errors name the flag
// and its valid range.
inline void check_training_flags(const TrainingFlags& f) {
  const auto fail = [](const char* flag, const std::string& got, const char* range) {
    throw Error(std::string(flag) + " " + got + " is outside its valid range " + range);
  };
  if (f.max_tokens < 10) fail("--max-tokens", std::to_string(f.max_tokens), "[10, inf)");
  if (f.epochs < 1) fail("--epochs", std::to_string(f.epochs), "[1, inf)");
  if (!(std::isfinite(f.lr) && f.lr > 0.0f)) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", static_cast<double>(f.lr));
    fail("--lr", text, "(0, inf), finite");
  }
  if (f.threads < 1 || f.threads > 256) fail("--threads", std::to_string(f.threads), "[1, 256]");
  if (f.window < 1) fail("--window", std::to_string(f.window), "[1, inf)");
}

}  // namespace exit_classifier_training

}  // namespace calm
