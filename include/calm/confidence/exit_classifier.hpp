// Early-exit classifier (docs/design.md §3c): c = P(the exit head's argmax at this layer equals
// the top layer's), one classifier shared by all layers, stored in calm.safetensors. Two kinds:
//   linear  c = softmax(W_c . RMSNorm_final(d_t^i) + b_c)[1], W_c (2, hidden), b_c (2): CALM's
//           head; calm.exit_classifier.weight / calm.exit_classifier.bias.
//   mlp     c = sigmoid(w2 . silu(W1 . f + b1) + b2) on f = [RMSNorm_final(d_t^i) (hidden),
//           i / L, cos(d_t^prev, d_t^i), log rms(d_t^i)] (hidden + 3), W1 (units, hidden + 3),
//           b1 (units), w2 (1, units), b2 (1); calm.exit_classifier.fc{1,2}.{weight,bias}.
// Both are O(d) per check (the mlp O((hidden + 3) . units)), with no vocabulary projection.
// Its file (load, save) is confidence/exit_classifier_file.hpp, included at the end; its training
// (labels, class-balanced loss and gradients, the trainer) confidence/exit_classifier_training.hpp.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "calm/concepts.hpp"
#include "calm/core/error.hpp"
#include "calm/kernels/argmax.hpp"
#include "calm/kernels/cosine.hpp"
#include "calm/kernels/elementwise.hpp"

namespace calm {

inline constexpr const char* kExitClassifierWeight = "calm.exit_classifier.weight";
inline constexpr const char* kExitClassifierBias = "calm.exit_classifier.bias";
inline constexpr const char* kExitClassifierFc1Weight = "calm.exit_classifier.fc1.weight";
inline constexpr const char* kExitClassifierFc1Bias = "calm.exit_classifier.fc1.bias";
inline constexpr const char* kExitClassifierFc2Weight = "calm.exit_classifier.fc2.weight";
inline constexpr const char* kExitClassifierFc2Bias = "calm.exit_classifier.fc2.bias";

// __metadata__ of a version-2 file (docs/design.md §3c).
inline constexpr std::string_view kExitClassifierFormat = "calm-exit-classifier";
inline constexpr std::string_view kExitClassifierVersion = "2";
// The mlp's input, in column order: the normed state, then the extras of exit_features().
inline constexpr std::string_view kExitClassifierFeatures =
    "normed_state,layer_fraction,cosine_previous,log_rms";
inline constexpr std::size_t kExitClassifierExtras = 3;
inline constexpr std::size_t kExitClassifierMaxUnits = 4096;

enum class ExitClassifierKind : unsigned char { linear, mlp };

// The extras of the mlp's input from what ExitSignal carries, each O(d):
//   [0] i / L: where the check is; the positive rate rises steeply with depth.
//   [1] cos(d_t^prev, d_t^i) of the pre-norm states (§3b's saturation), 0 without a previous
//       exit point (state and previous_state differ in size).
//   [2] log rms(d_t^i) = 0.5 ln(mean d^2 + 1e-12): the residual stream's scale, which the
//       normed state hides (the epsilon keeps an all-zero state finite).
// Non-finite states give non-finite extras; the caller refuses to exit on them.
inline void exit_features(const ExitSignal& s, float extras[kExitClassifierExtras]) noexcept {
  extras[0] = s.num_layers > 0 ? static_cast<float>(s.layer) / static_cast<float>(s.num_layers)
                               : 0.0f;
  extras[1] = !s.previous_state.empty() && s.previous_state.size() == s.state.size()
                  ? kernels::cosine(s.previous_state.data(), s.state.data(), s.state.size())
                  : 0.0f;
  const std::size_t n = s.state.size();
  const float ms = n > 0 ? kernels::dot(s.state.data(), s.state.data(), n) / float(n) : 0.0f;
  extras[2] = 0.5f * std::log(ms + 1e-12f);
}

class ExitClassifier {
 public:
  static constexpr bool needs_logits = false;
  static constexpr bool needs_normed_state = true;
  static constexpr bool needs_previous_state = true;  // the mlp's cosine (uses_previous_state)
  static constexpr float max_score = 1.0f;

  ExitClassifier() = default;
  // The linear kind: weight (2, hidden) row-major, bias (2).
  ExitClassifier(std::vector<float> weight, std::span<const float, 2> bias)
      : weight_(std::move(weight)), bias_{bias[0], bias[1]} {
    if (weight_.empty() || weight_.size() % 2 != 0)
      throw Error("ExitClassifier: weight must have shape (2, hidden), got " +
                  std::to_string(weight_.size()) + " values");
    hidden_ = weight_.size() / 2;
  }

  // The mlp kind for a model of hidden size `hidden`: fc1_weight (units, hidden + 3) row-major,
  // fc1_bias (units), fc2_weight (units), fc2_bias.
  static ExitClassifier mlp(std::size_t hidden, std::vector<float> fc1_weight,
                            std::vector<float> fc1_bias, std::vector<float> fc2_weight,
                            float fc2_bias) {
    const std::size_t units = fc1_bias.size();
    if (hidden == 0 || units == 0 || units > kExitClassifierMaxUnits ||
        fc1_weight.size() != units * (hidden + kExitClassifierExtras) ||
        fc2_weight.size() != units)
      throw Error("ExitClassifier::mlp: need hidden > 0, 1 <= units <= " +
                  std::to_string(kExitClassifierMaxUnits) +
                  ", fc1_weight (units, hidden + 3), fc2_weight (units); got hidden " +
                  std::to_string(hidden) + ", units " + std::to_string(units) + ", " +
                  std::to_string(fc1_weight.size()) + " and " +
                  std::to_string(fc2_weight.size()) + " values");
    ExitClassifier c;
    c.kind_ = ExitClassifierKind::mlp;
    c.hidden_ = hidden;
    c.weight_ = std::move(fc1_weight);
    c.fc1_bias_ = std::move(fc1_bias);
    c.fc2_weight_ = std::move(fc2_weight);
    c.fc2_bias_ = fc2_bias;
    return c;
  }

  // Reads calm.safetensors (F32, F16 or BF16, at any alignment: io/safetensors.hpp); hidden is
  // the model's hidden size. Version 1 (no __metadata__) is the linear kind, read as it always
  // was. Version 2 is refused, naming the file and the key or tensor, for an unknown format,
  // version, kind or metadata key, a missing, mis-shaped or unknown tensor. A NaN or an infinity
  // in any tensor is refused: such a classifier would never exit (NaN) or always exit (an
  // infinite bias).
  static ExitClassifier load(const std::filesystem::path& file, std::size_t hidden);

  ExitClassifierKind kind() const noexcept { return kind_; }
  // Only the mlp reads the previous exit point's state: for the linear kind the decoder copies
  // none (traits::uses_previous_state).
  bool uses_previous_state() const noexcept { return kind_ == ExitClassifierKind::mlp; }
  std::size_t hidden_size() const noexcept { return hidden_; }
  // The mlp's hidden units (0 for linear) and input size (hidden + 3; hidden for linear).
  std::size_t hidden_units() const noexcept { return fc1_bias_.size(); }
  std::size_t num_inputs() const noexcept {
    return kind_ == ExitClassifierKind::mlp ? hidden_ + kExitClassifierExtras : hidden_;
  }
  // linear: W_c (2, hidden) and b_c (2). mlp: W1 (units, hidden + 3); bias() is unused (0, 0).
  std::span<const float> weight() const noexcept { return weight_; }
  std::span<const float, 2> bias() const noexcept { return bias_; }
  std::span<float> weight() noexcept { return weight_; }  // for training
  std::span<float, 2> bias() noexcept { return bias_; }
  // mlp: b1 (units), w2 (units), b2.
  std::span<const float> fc1_bias() const noexcept { return fc1_bias_; }
  std::span<const float> fc2_weight() const noexcept { return fc2_weight_; }
  float fc2_bias() const noexcept { return fc2_bias_; }

  // Every parameter tensor in file order (linear: W_c, b_c; mlp: W1, b1, w2, b2), for training:
  // an optimizer updates them through these views, a gradient uses the same layout.
  std::vector<std::span<float>> parameters() noexcept {
    if (kind_ == ExitClassifierKind::linear) return {weight_, bias_};
    return {weight_, fc1_bias_, fc2_weight_, std::span<float>(&fc2_bias_, 1)};
  }
  std::size_t num_parameters() const noexcept {
    return weight_.size() + (kind_ == ExitClassifierKind::linear
                                 ? 2
                                 : fc1_bias_.size() + fc2_weight_.size() + 1);
  }

  // Logits z (2) of the linear kind on a normed state (hidden).
  void logits(std::span<const float> normed, float z[2]) const noexcept {
    const std::size_t h = hidden_;
    float z0 = bias_[0], z1 = bias_[1];
    for (std::size_t j = 0; j < h; ++j) {
      z0 += weight_[j] * normed[j];
      z1 += weight_[h + j] * normed[j];
    }
    z[0] = z0;
    z[1] = z1;
  }

  // The mlp's logit on a normed state (hidden) and extras (3); `pre` (units), if not null,
  // receives the pre-activations W1 . f + b1 (training's backward pass reads them).
  float mlp_logit(std::span<const float> normed, const float* extras,
                  float* pre = nullptr) const noexcept {
    const std::size_t h = hidden_, f = h + kExitClassifierExtras;
    float z = fc2_bias_;
    for (std::size_t u = 0; u < fc1_bias_.size(); ++u) {
      const float* row = weight_.data() + u * f;  // (hidden + 3)
      float a = fc1_bias_[u] + kernels::dot(row, normed.data(), h);
      for (std::size_t k = 0; k < kExitClassifierExtras; ++k) a += row[h + k] * extras[k];
      if (pre != nullptr) pre[u] = a;
      z += fc2_weight_[u] * kernels::scalar::silu(a);
    }
    return z;
  }

  // The score on a training row: the normed state (hidden) followed by the extras (3), as
  // exit_features() computes them; equal to score() on the ExitSignal the row came from.
  float score_row(std::span<const float> row) const noexcept {
    if (kind_ == ExitClassifierKind::linear) return linear_score(row.first(hidden_));
    return mlp_score(row.first(hidden_), row.data() + hidden_);
  }

  float score(const ExitSignal& s) const noexcept {
    if (hidden_ == 0 || s.normed_state.size() != hidden_) return 0.0f;  // unconfigured: never exits
    if (kind_ == ExitClassifierKind::linear) return linear_score(s.normed_state);
    if (s.state.size() != hidden_) return 0.0f;
    float extras[kExitClassifierExtras];
    exit_features(s, extras);
    return mlp_score(s.normed_state, extras);
  }

  // Writes calm.safetensors (F32, version 2) atomically: readers see the old file or the whole
  // new one. A classifier holding a NaN or an infinity is refused (load would refuse it), and
  // `file` is left as it was.
  void save(const std::filesystem::path& file) const;

 private:
  static std::string describe_non_finite(float v) {
    return std::isnan(v) ? "NaN" : (v > 0 ? "+inf" : "-inf");
  }

  float linear_score(std::span<const float> normed) const noexcept {
    float z[2];
    logits(normed, z);
    // A NaN or infinite state (or weights) gives non-finite logits: never exit on them.
    if (!std::isfinite(z[0]) || !std::isfinite(z[1])) return 0.0f;
    // softmax(z)[1] = 1 / (1 + exp(z0 - z1)): exact for any finite z, no overflow to NaN.
    return 1.0f / (1.0f + std::exp(z[0] - z[1]));
  }

  float mlp_score(std::span<const float> normed, const float* extras) const noexcept {
    const float z = mlp_logit(normed, extras);
    // A non-finite state reaches z as NaN or ±inf (silu(-inf) is NaN): never exit on it.
    if (!std::isfinite(z)) return 0.0f;
    return 1.0f / (1.0f + std::exp(-z));
  }

  ExitClassifierKind kind_ = ExitClassifierKind::linear;
  std::size_t hidden_ = 0;
  std::vector<float> weight_;  // linear: W_c (2, hidden); mlp: W1 (units, hidden + 3)
  float bias_[2] = {0.0f, 0.0f};  // linear: b_c (2)
  std::vector<float> fc1_bias_;    // mlp: b1 (units)
  std::vector<float> fc2_weight_;  // mlp: w2 (units)
  float fc2_bias_ = 0.0f;          // mlp: b2
};

static_assert(ConfidenceMeasure<ExitClassifier>);


}  // namespace calm

#include "calm/confidence/exit_classifier_file.hpp"  // ExitClassifier::load, ::save
