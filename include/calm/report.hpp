// What a decode reports (docs/design.md §7): per token, where it exited and why; per sequence,
// layers saved next to time saved, since a layer skipped is not a second saved (§8).
#pragma once

#include <cstddef>
#include <limits>
#include <vector>

namespace calm {

struct TokenStats {
  int token = -1;               // the generated token
  std::size_t step = 0;         // t, 1-based
  std::size_t exit_layer = 0;   // 1-based; L when the token ran the whole model
  float confidence = std::numeric_limits<float>::quiet_NaN();  // c at the exit layer; NaN: no check
  float threshold = std::numeric_limits<float>::quiet_NaN();   // lambda_t; NaN: schedule has none
  std::size_t checks = 0;       // confidence checks run for this token
};

struct SequenceReport {
  std::size_t num_layers = 0;     // L
  std::size_t prompt_tokens = 0;
  std::vector<TokenStats> tokens;

  // Wall-clock seconds (std::steady_clock). Generation excludes the prefill.
  double prefill_seconds = 0.0;
  double generation_seconds = 0.0;
  double layer_seconds = 0.0;        // embed + layers run for the output
  double check_seconds = 0.0;        // confidence checks, including their vocabulary projections
  double propagation_seconds = 0.0;  // K/V of skipped layers (or their full run in true_cache)
  double head_seconds = 0.0;         // output projection and sampling at the exit layer

  // Mean exit layer over generated tokens (the first one always runs all layers: it comes out of
  // the prefill, docs/design.md §5).
  double average_layers() const noexcept {
    if (tokens.empty()) return 0.0;
    double sum = 0.0;
    for (const TokenStats& t : tokens) sum += static_cast<double>(t.exit_layer);
    return sum / static_cast<double>(tokens.size());
  }
  // L / average layers: the speedup counted in layers.
  double layer_speedup() const noexcept {
    const double avg = average_layers();
    return avg > 0.0 ? static_cast<double>(num_layers) / avg : 0.0;
  }
  double tokens_per_second() const noexcept {
    return generation_seconds > 0.0 ? static_cast<double>(tokens.size()) / generation_seconds
                                    : 0.0;
  }
  std::vector<int> token_ids() const {
    std::vector<int> ids;
    ids.reserve(tokens.size());
    for (const TokenStats& t : tokens) ids.push_back(t.token);
    return ids;
  }
};

// What speculation did over one generation.
struct SpeculationStats {
  std::size_t rounds = 0;       // verification passes
  std::size_t drafted = 0;      // tokens proposed
  std::size_t accepted = 0;     // proposals the full model agreed with
  std::size_t draft_layers = 0;  // sum of the early-exit proposals' exit layers
  std::size_t lookup_drafted = 0;   // of drafted: proposed by a TokenDraftSource (n-gram)
  std::size_t lookup_accepted = 0;  // of accepted: those
  std::size_t verified_rows = 0;     // rows through verification
  std::size_t verified_layers = 0;   // row-layers run by verification (reuse skips some)
  double draft_seconds = 0.0;   // drafting: early-exit layers, checks, propagation, heads
  double verify_seconds = 0.0;  // the batched full-model passes and their heads
  // γ, the most tokens a round asked its draft source for, over the rounds that drafted:
  // gamma_rounds[g] rounds asked for g (SpeculativeOptions::adaptive_gamma varies it; else it is
  // max_draft, less where the context or max_new_tokens leaves less room).
  bool adaptive_gamma = false;
  std::vector<std::size_t> gamma_rounds;

  void count_gamma(std::size_t gamma) {
    if (gamma_rounds.size() <= gamma) gamma_rounds.resize(gamma + 1, 0);
    ++gamma_rounds[gamma];
  }
  double mean_gamma() const noexcept {
    double n = 0.0, sum = 0.0;
    for (std::size_t g = 0; g < gamma_rounds.size(); ++g)
      n += double(gamma_rounds[g]), sum += double(g) * double(gamma_rounds[g]);
    return n > 0.0 ? sum / n : 0.0;
  }
  std::size_t min_gamma() const noexcept {
    for (std::size_t g = 0; g < gamma_rounds.size(); ++g)
      if (gamma_rounds[g]) return g;
    return 0;
  }
  std::size_t max_gamma() const noexcept {
    for (std::size_t g = gamma_rounds.size(); g-- > 0;)
      if (gamma_rounds[g]) return g;
    return 0;
  }
  // Adds another generation's counts (benchmarks sum over prompts).
  void add(const SpeculationStats& o) {
    rounds += o.rounds, drafted += o.drafted, accepted += o.accepted;
    draft_layers += o.draft_layers, lookup_drafted += o.lookup_drafted;
    lookup_accepted += o.lookup_accepted, verified_rows += o.verified_rows;
    verified_layers += o.verified_layers, draft_seconds += o.draft_seconds;
    verify_seconds += o.verify_seconds, adaptive_gamma = adaptive_gamma || o.adaptive_gamma;
    if (gamma_rounds.size() < o.gamma_rounds.size()) gamma_rounds.resize(o.gamma_rounds.size(), 0);
    for (std::size_t g = 0; g < o.gamma_rounds.size(); ++g) gamma_rounds[g] += o.gamma_rounds[g];
  }

  double acceptance_rate() const noexcept {
    return drafted ? static_cast<double>(accepted) / static_cast<double>(drafted) : 0.0;
  }
  // Tokens emitted per verification pass (accepted proposals + the full model's own token).
  double tokens_per_round() const noexcept {
    return rounds ? static_cast<double>(accepted + rounds) / static_cast<double>(rounds) : 0.0;
  }
  double mean_draft_exit() const noexcept {  // over the early-exit proposals
    const std::size_t exits = drafted - lookup_drafted;
    return exits ? static_cast<double>(draft_layers) / static_cast<double>(exits) : 0.0;
  }
};

}  // namespace calm
