// Training of the exit classifier (docs/design.md §3c), backbone frozen: labels, class-balanced
// loss and gradients, the samples of a text and the trainer, so that calm-train-classifier, the
// tests and a user's own trainer share one definition.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "calm/confidence/exit_classifier.hpp"
#include "calm/core/error.hpp"
#include "calm/kernels/argmax.hpp"
#include "calm/kernels/elementwise.hpp"

namespace calm {

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

// Either kind, on a minibatch: rows (n, stride) of [normed state (hidden), extras (3)] (stride
// >= hidden + 3; the linear kind reads the first hidden columns), labels (n). Returns the mean
// weighted cross-entropy and writes its gradient into grad (c.num_parameters(), in the layout of
// c.parameters()). Float products, double sums over samples: a minibatch is a few hundred rows.
inline double batch_loss_and_gradient(const ExitClassifier& c, std::span<const float> rows,
                                      std::size_t stride, std::span<const int> labels,
                                      ClassWeights w, std::span<float> grad) {
  const std::size_t n = labels.size(), h = c.hidden_size();
  if (stride < h + kExitClassifierExtras || rows.size() < n * stride ||
      grad.size() != c.num_parameters())
    throw Error("exit classifier: batch_loss_and_gradient: rows must be (n, >= hidden + 3) and "
                "grad (num_parameters)");
  std::fill(grad.begin(), grad.end(), 0.0f);
  double loss = 0.0;
  const float inv = n > 0 ? 1.0f / static_cast<float>(n) : 0.0f;
  if (c.kind() == ExitClassifierKind::linear) {
    float* gw = grad.data();          // (2, hidden)
    float* gb = grad.data() + 2 * h;  // (2)
    for (std::size_t s = 0; s < n; ++s) {
      const float* x = rows.data() + s * stride;
      float z[2];
      c.logits(std::span<const float>(x, h), z);
      const double m = z[0] > z[1] ? z[0] : z[1];
      const double lse = m + std::log(std::exp(z[0] - m) + std::exp(z[1] - m));
      const int y = labels[s];
      const double weight = y == 1 ? w.positive : w.negative;
      loss += weight * (lse - z[y]);
      for (int k = 0; k < 2; ++k) {
        const float dz = static_cast<float>(weight * (std::exp(z[k] - lse) - (k == y)) * inv);
        gb[k] += dz;
        kernels::axpy(gw + k * h, dz, x, h);
      }
    }
    return n > 0 ? loss / static_cast<double>(n) : 0.0;
  }
  // mlp: a = W1 f + b1, g = silu(a), z = w2 . g + b2, p = sigmoid(z);
  // dL/dz = weight (p - y); dL/da_u = dL/dz w2_u silu'(a_u), silu'(a) = s(a) (1 + a (1 - s(a))).
  const std::size_t units = c.hidden_units(), f = h + kExitClassifierExtras;
  float* gw1 = grad.data();               // (units, hidden + 3)
  float* gb1 = gw1 + units * f;           // (units)
  float* gw2 = gb1 + units;               // (units)
  float* gb2 = gw2 + units;               // (1)
  const std::span<const float> w2 = c.fc2_weight();
  std::vector<float> pre(units);
  for (std::size_t s = 0; s < n; ++s) {
    const float* x = rows.data() + s * stride;
    const float z = c.mlp_logit(std::span<const float>(x, h), x + h, pre.data());
    const int y = labels[s];
    const double weight = y == 1 ? w.positive : w.negative;
    // -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z), computed stably.
    const double t = y == 1 ? -z : z;
    loss += weight * (t > 0 ? t + std::log1p(std::exp(-t)) : std::log1p(std::exp(t)));
    const double p = 1.0 / (1.0 + std::exp(-static_cast<double>(z)));
    const float dz = static_cast<float>(weight * (p - y)) * inv;
    *gb2 += dz;
    for (std::size_t u = 0; u < units; ++u) {
      const float a = pre[u];
      const float sg = 1.0f / (1.0f + std::exp(-a));
      gw2[u] += dz * a * sg;
      const float da = dz * w2[u] * sg * (1.0f + a * (1.0f - sg));
      gb1[u] += da;
      kernels::axpy(gw1 + u * f, da, x, f);
    }
  }
  return n > 0 ? loss / static_cast<double>(n) : 0.0;
}

// Folds a per-column standardisation x' = (x - mean) / scale, which training applies to its
// rows, into the classifier's first layer, so that the saved classifier reads raw features:
// W' = W / scale (column-wise), b' = b - W' . mean. mean and scale: (num_inputs()).
inline void fold_standardisation(ExitClassifier& c, std::span<const float> mean,
                                 std::span<const float> scale) {
  const std::size_t cols = c.num_inputs();
  std::vector<std::span<float>> p = c.parameters();
  const std::size_t rows = p[0].size() / cols;
  for (std::size_t r = 0; r < rows; ++r) {
    float* w = p[0].data() + r * cols;
    double shift = 0.0;
    for (std::size_t j = 0; j < cols; ++j) {
      w[j] /= scale[j];
      shift += static_cast<double>(w[j]) * mean[j];
    }
    p[1][r] -= static_cast<float>(shift);
  }
}

// The settings of a training run (calm-train-classifier's flags).
struct TrainingFlags {
  std::string kind = "mlp";            // --kind: linear | mlp
  std::size_t hidden_units = 32;       // --hidden-units: the mlp's width
  std::size_t max_tokens = 1'000'000;  // --max-tokens: tokens of the text to use (a whole text)
  std::size_t epochs = 12;             // --epochs: passes over the training samples
  std::size_t batch = 256;             // --batch: samples per Adam step
  std::size_t patience = 3;            // --patience: epochs without held-out improvement
  float holdout = 0.15f;               // --holdout: share of positions (the last) held out
  float lr = 0.002f;                   // --lr: Adam learning rate (cosine-decayed)
  std::uint64_t seed = 1;              // --seed: initialisation and shuffling
  std::size_t threads = 1;             // --threads
  std::size_t window = 128;            // --window: teacher-forcing window in tokens
};

// Refuses settings that would loop forever (--window 0), train nothing (--epochs 0: an all-zero
// classifier), train to NaN (--lr nan, inf, <= 0), hold out nothing or everything, or start
// unbounded threads; errors name the flag and its valid range.
inline void check_training_flags(const TrainingFlags& f) {
  const auto fail = [](const char* flag, const std::string& got, const char* range) {
    throw Error(std::string(flag) + " " + got + " is outside its valid range " + range);
  };
  const auto text = [](float v) {
    char t[32];
    std::snprintf(t, sizeof t, "%g", static_cast<double>(v));
    return std::string(t);
  };
  if (f.kind != "linear" && f.kind != "mlp")
    throw Error("--kind '" + f.kind + "' is not a classifier kind: use linear or mlp");
  if (f.hidden_units < 1 || f.hidden_units > kExitClassifierMaxUnits)
    fail("--hidden-units", std::to_string(f.hidden_units), "[1, 4096]");
  if (f.max_tokens < 10) fail("--max-tokens", std::to_string(f.max_tokens), "[10, inf)");
  if (f.epochs < 1) fail("--epochs", std::to_string(f.epochs), "[1, inf)");
  if (f.batch < 1) fail("--batch", std::to_string(f.batch), "[1, inf)");
  if (!(std::isfinite(f.lr) && f.lr > 0.0f)) fail("--lr", text(f.lr), "(0, inf), finite");
  if (!(f.holdout >= 0.05f && f.holdout <= 0.5f)) fail("--holdout", text(f.holdout), "[0.05, 0.5]");
  if (f.threads < 1 || f.threads > 256) fail("--threads", std::to_string(f.threads), "[1, 256]");
  if (f.window < 1) fail("--window", std::to_string(f.window), "[1, inf)");
}


// Samples of training: one row per (position, layer), as calm-train-classifier collects them.
struct Dataset {
  std::size_t stride = 0;            // hidden + 3
  std::vector<float> rows;           // (n, stride): RMSNorm_final(d^i), then exit_features()
  std::vector<int> labels;           // (n) z in {0, 1}
  std::vector<std::uint8_t> layers;  // (n) 1-based layer i (reporting only)
  std::size_t size() const noexcept { return labels.size(); }
  std::span<const float> row(std::size_t s) const noexcept {
    return {rows.data() + s * stride, stride};
  }
};

// The training samples of a text (calm-train-classifier): runs the model (a LlamaSession, or any
// backend with embed, run_layers, exit_heads, final_norm and config().bos_token_id)
// teacher-forced over windows of `tokens` and records one sample per position and
// layer 1..L-1: positions before `split` go to train (kept only with keep_train), the rest to
// test. Each window is one batched pass per layer (matrix products), BOS at position 0; the rows
// round as matrix products do, not bitwise as decoding's, which a classifier does not notice.
template <class Session>
void collect_samples(Session& model, const std::vector<int>& tokens, std::size_t window,
                     std::size_t split, bool keep_train, Dataset& train, Dataset& test) {
  const std::size_t L = model.num_layers(), h = model.hidden_size(), V = model.vocab_size();
  const std::size_t stride = h + kExitClassifierExtras;
  train.stride = test.stride = stride;
  const int bos = model.config().bos_token_id;
  std::vector<float> x((window + 1) * h), prev((window + 1) * h), logits((window + 1) * V);
  std::vector<float> normed(h), rows((L - 1) * (window + 1) * stride);  // (L-1, n, stride)
  std::vector<std::size_t> argmaxes(L * (window + 1));                    // (L, n)
  for (std::size_t start = 0; start < tokens.size(); start += window) {
    const std::size_t end = std::min(tokens.size(), start + window);
    if (!keep_train && end <= split) continue;
    const std::size_t n = end - start + 1;  // BOS and the window's tokens
    model.embed(bos, std::span<float>(x.data(), h));
    for (std::size_t t = 1; t < n; ++t)
      model.embed(tokens[start + t - 1], std::span<float>(x.data() + t * h, h));
    for (std::size_t i = 0; i < L; ++i) {
      std::copy(x.begin(), x.begin() + n * h, prev.begin());
      model.run_layers(i, i + 1, std::span<float>(x.data(), n * h), 0);
      model.exit_heads(std::span<const float>(x.data(), n * h),
                       std::span<float>(logits.data(), n * V));
      for (std::size_t t = 0; t < n; ++t) {
        argmaxes[i * n + t] = kernels::argmax(logits.data() + t * V, V);
        if (i + 1 == L) continue;
        const std::span<const float> state(x.data() + t * h, h);
        model.final_norm(state, normed);
        float* row = rows.data() + (i * n + t) * stride;
        std::copy(normed.begin(), normed.end(), row);
        ExitSignal s;  // as the decoder fills it with first exit 1, interval 1
        s.layer = i + 1;
        s.num_layers = L;
        s.state = state;
        if (i > 0) s.previous_state = std::span<const float>(prev.data() + t * h, h);
        exit_features(s, row + h);
      }
    }
    for (std::size_t t = 1; t < n; ++t) {
      const std::size_t j = start + t - 1;
      if (j < split && !keep_train) continue;
      Dataset& s = j < split ? train : test;
      for (std::size_t i = 0; i + 1 < L; ++i) {
        const float* row = rows.data() + (i * n + t) * stride;
        s.rows.insert(s.rows.end(), row, row + stride);
        s.labels.push_back(label(argmaxes[i * n + t], argmaxes[(L - 1) * n + t]));
        s.layers.push_back(static_cast<std::uint8_t>(i + 1));
      }
    }
  }
}

// Mean class-weighted cross-entropy of c on raw rows, through score_row (what decoding sees).
inline double weighted_loss(const ExitClassifier& c, const Dataset& d, ClassWeights w) {
  double loss = 0.0;
  for (std::size_t s = 0; s < d.size(); ++s) {
    const double p = c.score_row(d.row(s));
    const double q = d.labels[s] == 1 ? p : 1.0 - p;
    loss += (d.labels[s] == 1 ? w.positive : w.negative) * -std::log(std::max(q, 1e-12));
  }
  return d.size() > 0 ? loss / static_cast<double>(d.size()) : 0.0;
}

struct EpochReport {
  std::size_t epoch = 0;  // 0: before training
  double train_loss = 0.0, heldout_loss = 0.0;
  bool kept = false;  // the best held-out loss so far
};

// Uniform in [-a, a) from the top 24 bits of a mt19937_64 draw: the same numbers with any
// standard library (std::uniform_real_distribution's algorithm is unspecified).
inline float uniform(std::mt19937_64& rng, float a) {
  return (static_cast<float>(rng() >> 40) * 0x1.0p-24f * 2.0f - 1.0f) * a;
}

// Trains a classifier of flags.kind for hidden size `hidden` on `train` and returns the one of
// the epoch with the lowest class-weighted loss on `heldout` (early stopping after
// flags.patience epochs without improvement), reading raw features. Minibatch Adam (beta1 0.9,
// beta2 0.999) with a cosine-decayed learning rate, class weights from train's labels (§3c).
// The inputs are standardised per column in place in train.rows (the normed state's columns
// differ in scale by the final norm's gains, and one learning rate suits unit-scale inputs);
// the standardisation is folded into the returned classifier. Deterministic for a seed.
inline ExitClassifier train(Dataset& train, const Dataset& heldout, std::size_t hidden,
                            const TrainingFlags& flags,
                            const std::function<void(const EpochReport&)>& on_epoch = {}) {
  check_training_flags(flags);
  const std::size_t n = train.size(), stride = train.stride;
  if (n == 0 || stride < hidden + kExitClassifierExtras || train.rows.size() != n * stride ||
      heldout.stride != stride || heldout.rows.size() != heldout.size() * stride)
    throw Error("exit classifier training: need samples, rows (n, hidden + 3) in both sets");
  std::size_t n_pos = 0;
  for (int y : train.labels) n_pos += static_cast<std::size_t>(y);
  const ClassWeights w = balanced_weights(n_pos, n);

  std::vector<float> mean(stride, 0.0f), scale(stride, 1.0f);
  {
    std::vector<double> s1(stride, 0.0), s2(stride, 0.0);
    for (std::size_t s = 0; s < n; ++s)
      for (std::size_t j = 0; j < stride; ++j) {
        const double v = train.rows[s * stride + j];
        s1[j] += v;
        s2[j] += v * v;
      }
    for (std::size_t j = 0; j < stride; ++j) {
      const double m = s1[j] / double(n), var = std::max(0.0, s2[j] / double(n) - m * m);
      mean[j] = static_cast<float>(m);
      // A constant column (e.g. i / L of a one-layer set) stays as it is, only centred.
      scale[j] = var > 1e-12 ? static_cast<float>(std::sqrt(var)) : 1.0f;
    }
    for (std::size_t s = 0; s < n; ++s)
      for (std::size_t j = 0; j < stride; ++j)
        train.rows[s * stride + j] = (train.rows[s * stride + j] - mean[j]) / scale[j];
  }

  std::mt19937_64 rng(flags.seed);
  ExitClassifier clf;
  if (flags.kind == "linear") {
    const float zero[2] = {0.0f, 0.0f};
    clf = ExitClassifier(std::vector<float>(2 * hidden, 0.0f), zero);  // convex: start at 0
  } else {
    const std::size_t units = flags.hidden_units, f = hidden + kExitClassifierExtras;
    std::vector<float> w1(units * f), w2(units);
    for (float& v : w1) v = uniform(rng, 1.0f / std::sqrt(float(f)));  // PyTorch's nn.Linear
    for (float& v : w2) v = uniform(rng, 1.0f / std::sqrt(float(units)));
    clf = ExitClassifier::mlp(hidden, std::move(w1), std::vector<float>(units, 0.0f),
                              std::move(w2), 0.0f);
  }
  const auto folded = [&](const ExitClassifier& c) {
    ExitClassifier out = c;
    fold_standardisation(out, std::span<const float>(mean).first(c.num_inputs()),
                         std::span<const float>(scale).first(c.num_inputs()));
    return out;
  };

  const std::size_t P = clf.num_parameters(), B = std::min(flags.batch, n);
  const std::size_t total = (n + B - 1) / B * flags.epochs;
  std::vector<float> grad(P), m(P, 0.0f), v(P, 0.0f), batch_rows(B * stride);
  std::vector<int> batch_labels(B);
  std::vector<std::size_t> order(n);
  for (std::size_t s = 0; s < n; ++s) order[s] = s;
  ExitClassifier best = folded(clf);
  double best_loss = weighted_loss(best, heldout, w);
  std::size_t best_epoch = 0, step = 0;
  if (on_epoch) on_epoch({0, 0.0, best_loss, true});
  for (std::size_t e = 1; e <= flags.epochs; ++e) {
    for (std::size_t s = n - 1; s > 0; --s) std::swap(order[s], order[rng() % (s + 1)]);
    double train_loss = 0.0;
    for (std::size_t b0 = 0; b0 < n; b0 += B) {
      const std::size_t nb = std::min(B, n - b0);
      for (std::size_t k = 0; k < nb; ++k) {
        std::copy_n(train.rows.data() + order[b0 + k] * stride, stride,
                    batch_rows.data() + k * stride);
        batch_labels[k] = train.labels[order[b0 + k]];
      }
      train_loss += double(nb) * batch_loss_and_gradient(
                                     clf, std::span<const float>(batch_rows.data(), nb * stride),
                                     stride, std::span<const int>(batch_labels.data(), nb), w,
                                     grad);
      ++step;
      const double lr =
          flags.lr * 0.5 * (1.0 + std::cos(3.14159265358979323846 * double(step - 1) / double(total)));
      const double c1 = 1.0 - std::pow(0.9, double(step)), c2 = 1.0 - std::pow(0.999, double(step));
      std::size_t k = 0;
      for (std::span<float> p : clf.parameters())
        for (float& param : p) {
          const float g = grad[k];
          m[k] = 0.9f * m[k] + 0.1f * g;
          v[k] = 0.999f * v[k] + 0.001f * g * g;
          param -= static_cast<float>(lr * (m[k] / c1) / (std::sqrt(v[k] / c2) + 1e-8));
          ++k;
        }
    }
    ExitClassifier now = folded(clf);
    const double held = weighted_loss(now, heldout, w);
    const bool kept = held < best_loss;
    if (kept) {
      best_loss = held;
      best = std::move(now);
      best_epoch = e;
    }
    if (on_epoch) on_epoch({e, train_loss / double(n), held, kept});
    if (!kept && e - best_epoch >= flags.patience) break;
  }
  return best;
}

}  // namespace exit_classifier_training

}  // namespace calm
