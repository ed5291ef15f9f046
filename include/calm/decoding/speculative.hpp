// calm::SpeculativeDecoder<Backend, Confidence, Schedule, TokenDrafts>: lossless speculative
// decoding (docs/design.md §9; LayerSkip, Elhoushi et al. 2024; speculative decoding, Leviathan
// et al. 2023). Two draft sources, tried in this order each round:
//   TokenDrafts    a calm::TokenDraftSource that reads the tokens only: PromptLookup (n-gram
//                  drafts, Saxena 2023), or NoTokenDrafts (the default: none);
//   early exits    the early-exit decoder of the same policies drafts up to γ tokens, each
//                  leaving at its own exit layer. With Schedule = Never it drafts nothing, and a
//                  round without token drafts is one plain full-model step (no wasted pass).
// The full model then checks the drafts in one batched pass, and the output is exactly the full
// model's. PromptLookupDecoder<B> is n-gram drafts alone.
//
// One round, with the sequence cached up to position p and `a` the last emitted token:
//   draft   TokenDrafts proposes d_1..d_k from prompt + output (cut after a stop token); if it
//           has none, feed a, d_1, ..., d_{k-1} at p.. through Decoder<B, C, S> -> d_1..d_k;
//           drafting stops after γ tokens, or after a token that found no confident exit (the
//           schedule says drafting is guessing), or at a stop token;
//   verify  rows a, d_1..d_k at p..p+k through all layers (Products::matvec: each row bitwise
//           as full decoding computes it) -> the full model's next-token logits g_0..g_k;
//   accept  the longest prefix with d_{j+1} = argmax g_j (greedy) or the speculative sampling
//           rule, then the full model's own token at the first disagreement (or after d_k);
//           the cache is truncated past the rejected rows.
// γ is SpeculativeOptions::max_draft, or with adaptive_gamma (DEL, 2025) each round's choice
// from the acceptance of earlier rounds (calm/decoding/adaptive_gamma.hpp); either way it is
// fixed before the round drafts, so the output does not depend on it.
//
// Reusing the draft (SpeculativeOptions::reuse_draft): a drafted row whose exit layer E is not
// above any earlier row's has run layers 1..E on exact inputs (every earlier row's K/V there
// came from full layers), so its state after E and its K/V in layers <= E are the full model's,
// bit for bit; verification starts that row at layer E + 1. Rows after one that cannot be reused
// start at the embedding. Both variants give the same bits (tested); bench_speculative
// measures which is faster.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "calm/confidence/none.hpp"
#include "calm/decoding/adaptive_gamma.hpp"
#include "calm/decoding/common.hpp"
#include "calm/drafts/prompt_lookup.hpp"
#include "calm/drafts/sub_vocabulary.hpp"
#include "calm/kernels/argmax.hpp"
#include "calm/sampling/sampler.hpp"
#include "calm/schedule/never.hpp"

namespace calm {

struct SpeculativeOptions {
  std::size_t max_draft = 4;  // γ: most tokens drafted per round
  bool reuse_draft = true;    // verification skips the layers drafting ran on exact inputs
  // Adaptive γ (DEL, 2025; calm/decoding/adaptive_gamma.hpp): each round drafts up to the γ in
  // [1, max_draft] that maximises expected tokens per unit of `cost`, from the acceptance per
  // draft position tracked over earlier rounds (one tracker per draft source: n-gram lookups and
  // early exits). Off: every round drafts up to max_draft.
  bool adaptive_gamma = false;
  double acceptance_weight = 0.125;  // the newest round's weight in each α_k (about 8 rounds)
  double prior_acceptance = 0.8;     // α_k before any round has drafted position k
  SpeculationCost cost = {};

  void validate() const {
    if (max_draft == 0 || max_draft > 64)
      throw Error("SpeculativeOptions: max_draft (gamma) must be in [1, 64], got " +
                  std::to_string(max_draft));
    if (!(acceptance_weight > 0.0 && acceptance_weight <= 1.0))
      throw Error("SpeculativeOptions: acceptance_weight must be in (0, 1], got " +
                  std::to_string(acceptance_weight));
    if (!(prior_acceptance >= 0.0 && prior_acceptance <= 1.0))
      throw Error("SpeculativeOptions: prior_acceptance must be in [0, 1], got " +
                  std::to_string(prior_acceptance));
    cost.validate();
  }
};

struct SpeculativeResult {
  std::vector<int> tokens;  // generated tokens only
  SequenceReport report;    // every token is the full model's: exit_layer = L
  SpeculationStats speculation;
};

template <class Backend, class Confidence, class Schedule, class TokenDrafts = NoTokenDrafts>
class SpeculativeDecoder {
  static_assert(BatchedBackend<std::remove_reference_t<Backend>>,
                "calm::SpeculativeDecoder: the Backend needs `run_layers(first, last, x, pos0, "
                "calm::Products)` and `exit_heads(states, logits)` (BatchedBackend, "
                "calm/concepts.hpp)");
  static_assert(!traits::is_local_oracle<Schedule>(),
                "calm::SpeculativeDecoder: the local oracle runs the full model; it cannot draft");
  static_assert(TokenDraftSource<TokenDrafts>,
                "calm::SpeculativeDecoder: TokenDrafts needs `std::span<const int> "
                "propose(std::span<const int> history, std::size_t n) const noexcept` "
                "(TokenDraftSource, calm/concepts.hpp), e.g. calm::PromptLookup");
  using Drafter = Decoder<Backend, Confidence, Schedule>;
  static constexpr bool kLooksUpTokens = !std::is_same_v<TokenDrafts, NoTokenDrafts>;
  // Never exits: the model drafts nothing (PromptLookupDecoder).
  static constexpr bool kDraftsWithExits = !std::is_same_v<Schedule, Never>;

 public:
  using backend_type = std::remove_reference_t<Backend>;

  explicit SpeculativeDecoder(Backend backend, Confidence measure = {}, Schedule schedule = {},
                              DecoderOptions options = {}, SpeculativeOptions speculative = {},
                              TokenDrafts token_drafts = {})
      : drafter_(std::forward<Backend>(backend), std::move(measure), std::move(schedule),
                 options),
        options_(std::move(options)),
        spec_(speculative),
        token_drafts_(std::move(token_drafts)) {
    spec_.validate();
    if constexpr (requires { token_drafts_.validate(); }) token_drafts_.validate();
    const auto& b = drafter_.backend();
    L_ = b.num_layers();
    h_ = b.hidden_size();
    vocab_ = b.vocab_size();
    const std::size_t rows = spec_.max_draft + 1;
    head_share_ = spec_.cost.head >= 0.0 ? spec_.cost.head : head_share(b);
    reset_adaptation();
    rows_.resize(rows * h_);
    exit_states_.resize(rows * h_);
    logits_.resize(rows * vocab_);
  }

  backend_type& backend() noexcept { return drafter_.backend(); }
  const backend_type& backend() const noexcept { return drafter_.backend(); }
  Drafter& drafter() noexcept { return drafter_; }
  const TokenDrafts& token_drafts() const noexcept { return token_drafts_; }
  const SpeculativeOptions& speculative_options() const noexcept { return spec_; }
  std::size_t length() const noexcept { return drafter_.backend().length(); }

  // Adaptive γ (SpeculativeOptions::adaptive_gamma). The acceptance tracked per draft position,
  // for n-gram lookups and for early exits; it carries over from one generate() to the next (a
  // decoder learns its model and policy), until reset_adaptation() returns it to the prior.
  // With sampling, the draws (not their distribution) then depend on earlier generations.
  const AcceptanceTracker& lookup_acceptance() const noexcept { return lookup_tracker_; }
  const AcceptanceTracker& exit_acceptance() const noexcept { return exit_tracker_; }
  void reset_adaptation() {
    lookup_tracker_ =
        AcceptanceTracker(spec_.max_draft, spec_.acceptance_weight, spec_.prior_acceptance);
    exit_tracker_ = lookup_tracker_;
    exit_layer_mean_ = -1.0;
  }
  // The γ the next round would draft up to (before the context and max_new_tokens cut it):
  // max_draft, or with adaptive_gamma the choice for n-gram lookups (lookup) or early exits.
  std::size_t next_gamma(bool lookup) const noexcept {
    if (!spec_.adaptive_gamma) return spec_.max_draft;
    return lookup ? choose_gamma(lookup_tracker_.acceptance(), 0.0, spec_.cost.verify_row)
                  : choose_gamma(exit_tracker_.acceptance(), exit_draft_cost(),
                                 spec_.cost.verify_row);
  }
  // What an early-exit draft costs in decode steps (SpeculationCost): draft_token when set, else
  // from the mean exit layer of the drafts so far (L/2 before any), the head's share and the
  // draft head's V'/V.
  double exit_draft_cost() const noexcept {
    if (spec_.cost.draft_token > 0.0) return spec_.cost.draft_token;
    const double L = static_cast<double>(L_);
    const double e = exit_layer_mean_ >= 0.0 ? exit_layer_mean_ : L / 2.0;
    double head = head_share_;
    if (draft_head_)
      head *= static_cast<double>(draft_head_->size()) / static_cast<double>(vocab_);
    return e / L * (1.0 - head_share_) + head;
  }

  // Early-exit drafts over a sub-vocabulary (calm/drafts/sub_vocabulary.hpp): a drafted token
  // that left the layers early takes its token from `head`'s V' rows instead of the whole head
  // (a row that ran every layer still uses the whole head: its draft is then the full model's
  // token). Verification keeps the whole head, so the output does not change. It saves the head
  // only where the exit check did not compute the logits already (the classifier, hidden-state
  // saturation and static exits do not; softmax measures do). nullptr: the whole head.
  void set_draft_head(std::shared_ptr<const SubVocabularyHead> head)
    requires requires(backend_type& b, std::span<const float> x, std::span<float> y) {
      b.final_norm(x, y);
      b.lm_head(x, y);
    }
  {
    if (head) {
      if (head->matrix().cols != h_)
        throw Error("SpeculativeDecoder::set_draft_head: a head over " +
                    std::to_string(head->matrix().cols) + " inputs for a model of hidden size " +
                    std::to_string(h_));
      if (head->tokens().back() >= vocab_)
        throw Error("SpeculativeDecoder::set_draft_head: token " +
                    std::to_string(head->tokens().back()) + " is outside the vocabulary (" +
                    std::to_string(vocab_) + ")");
      normed_.resize(h_);
      draft_logits_.resize(vocab_);
      sub_logits_.resize(head->size());
    }
    draft_head_ = std::move(head);
  }
  const std::shared_ptr<const SubVocabularyHead>& draft_head() const noexcept {
    return draft_head_;
  }

  // Greedy: the full model's greedy output, token for token. on_token(const TokenStats&) as in
  // Decoder::generate (returning false stops).
  template <class OnToken>
    requires std::invocable<OnToken&, const TokenStats&>
  SpeculativeResult generate(std::span<const int> prompt, std::size_t max_new_tokens,
                             OnToken&& on_token) {
    return run(prompt, max_new_tokens, nullptr, on_token);
  }
  SpeculativeResult generate(std::span<const int> prompt, std::size_t max_new_tokens) {
    return generate(prompt, max_new_tokens, [](const TokenStats&) {});
  }
  // Sampling (temperature, top-k, top-p; temperature 0 is greedy): the speculative sampling
  // rule, so the tokens are distributed as the full model's samples with these options.
  template <class OnToken>
    requires std::invocable<OnToken&, const TokenStats&>
  SpeculativeResult generate(std::span<const int> prompt, std::size_t max_new_tokens,
                             const SamplingOptions& sampling, OnToken&& on_token) {
    sampling.validate();
    if (sampling.temperature == 0.0f) return run(prompt, max_new_tokens, nullptr, on_token);
    SamplingState state(sampling, vocab_);
    return run(prompt, max_new_tokens, &state, on_token);
  }
  SpeculativeResult generate(std::span<const int> prompt, std::size_t max_new_tokens,
                             const SamplingOptions& sampling) {
    return generate(prompt, max_new_tokens, sampling, [](const TokenStats&) {});
  }

 private:
  // The distribution a token is sampled from under SamplingOptions (temperature, then top-k,
  // then top-p, as calm::Sampler), as probabilities over the vocabulary, and the uniform draws.
  struct SamplingState {
    SamplingOptions opts;
    std::mt19937_64 rng;
    std::vector<detail::WeightedToken> kept;  // (kept candidates) scratch
    std::vector<double> p, q;                 // (vocab) full model, draft

    SamplingState(const SamplingOptions& o, std::size_t vocab)
        : opts(o), rng(o.seed), p(vocab), q(vocab) {}

    double uniform() { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

    void distribution(std::span<const float> logits, std::vector<double>& out) {
      const double total = detail::kept_tokens(logits, opts, kept);
      std::fill(out.begin(), out.end(), 0.0);
      for (const detail::WeightedToken& t : kept) out[t.id] = t.weight / total;
    }
    int sample(const std::vector<double>& dist) {
      const double u = uniform();
      double acc = 0.0;
      int last = 0;
      for (std::size_t i = 0; i < dist.size(); ++i) {
        if (dist[i] <= 0.0) continue;
        acc += dist[i];
        last = static_cast<int>(i);
        if (u < acc) return last;
      }
      return last;  // u rounded up to the total
    }
  };

  // q_rows[j] := the point mass on token d: a deterministic draft. Accepting it with min(1, p/q)
  // is accepting with probability p(d); the correction max(0, p - q) is p without d.
  void point_mass(std::vector<std::vector<double>>& q_rows, std::size_t j, int d) const {
    if (q_rows.size() <= j) q_rows.emplace_back(vocab_);
    std::fill(q_rows[j].begin(), q_rows[j].end(), 0.0);
    q_rows[j][static_cast<std::size_t>(d)] = 1.0;
  }

  int argmax_row(std::size_t row) const {
    return static_cast<int>(kernels::argmax(logits_.data() + row * vocab_, vocab_));
  }
  std::span<const float> logits_row(std::size_t row) const {
    return {logits_.data() + row * vocab_, vocab_};
  }

  template <class OnToken>
  SpeculativeResult run(std::span<const int> prompt, std::size_t max_new, SamplingState* sampling,
                        OnToken& on_token) {
    backend_type& session = drafter_.backend();
    SpeculativeResult out;
    SequenceReport& report = out.report;
    SpeculationStats& stats = out.speculation;
    stats.adaptive_gamma = spec_.adaptive_gamma;
    drafter_.start(prompt, max_new);  // a new sequence: the prompt through all layers
    report = drafter_.report();
    report.tokens.clear();
    if (max_new == 0) return out;

    const auto& stops = options_.stop_tokens;
    const auto t_start = detail::now();
    bool stopped = false;
    if constexpr (kLooksUpTokens) history_.assign(prompt.begin(), prompt.end());
    const auto is_stop = [&](int token) {
      return std::find(stops.begin(), stops.end(), token) != stops.end();
    };
    const auto emit = [&](int token) {
      TokenStats ts;
      ts.token = token;
      ts.step = report.tokens.size() + 1;
      ts.exit_layer = L_;
      report.tokens.push_back(ts);
      out.tokens.push_back(token);
      if constexpr (kLooksUpTokens) history_.push_back(token);
      bool go = true;
      if constexpr (std::is_void_v<decltype(on_token(ts))>) on_token(ts);
      else go = on_token(ts);
      if (!go || out.tokens.size() >= max_new || is_stop(token)) stopped = true;
    };

    // The first token: from the prompt's full forward.
    int a;
    if (sampling) {
      sampling->distribution(drafter_.last_logits(), sampling->p);
      a = sampling->sample(sampling->p);
    } else {
      a = static_cast<int>(kernels::argmax(drafter_.last_logits().data(), vocab_));
    }
    emit(a);

    std::vector<int> fed, drafts;
    std::vector<std::size_t> exits;
    std::vector<std::vector<double>> q_rows;  // draft distributions (sampling)
    while (!stopped && session.length() < session.max_context()) {
      const std::size_t p = session.length();
      // Room: rows a, d_1..d_k at p..p+k, and at most max_new tokens in all.
      const std::size_t room =
          std::min(session.max_context() - 1 - p, max_new - out.tokens.size() - 1);
      std::size_t gamma = std::min(next_gamma(kLooksUpTokens), room);
      fed.assign(1, a);
      drafts.clear();
      exits.clear();

      // --- draft
      const auto d0 = detail::now();
      bool looked_up = false;
      if constexpr (kLooksUpTokens) {
        const std::span<const int> proposed = token_drafts_.propose(history_, gamma);
        for (int d : proposed) {  // not past a stop token: the full model stops there
          drafts.push_back(d);
          exits.push_back(0);  // no layer run: verification starts at the embedding
          if (sampling) point_mass(q_rows, drafts.size() - 1, d);
          if (is_stop(d)) break;
        }
        looked_up = !drafts.empty();
        fed.insert(fed.end(), drafts.begin(), drafts.end());
        stats.lookup_drafted += drafts.size();
        if (!looked_up && kDraftsWithExits) gamma = std::min(next_gamma(false), room);
      }
      for (std::size_t j = 0; kDraftsWithExits && !looked_up && j < gamma; ++j) {
        detail::StepTimes times;
        const TokenStats ts = drafter_.advance(fed.back(), out.tokens.size() + j + 1, max_new,
                                               times, /*with_head=*/draft_head_ == nullptr);
        exits.push_back(ts.exit_layer);
        std::copy_n(drafter_.exit_state().data(), h_, exit_states_.data() + j * h_);
        int d = -1;
        std::span<const float> logits = drafter_.last_logits();
        if (draft_head_ && drafter_.logits_missing()) {
          if constexpr (requires { session.final_norm(logits, std::span<float>()); }) {
            session.final_norm(drafter_.exit_state(), std::span<float>(normed_));
            if (ts.exit_layer < L_) {
              sub_head(session);
              if (!sampling) d = draft_head_->argmax(sub_logits_);
              else draft_head_->scatter(sub_logits_, draft_logits_);
            } else {
              session.lm_head(normed_, std::span<float>(draft_logits_));
            }
            logits = draft_logits_;
          }
        }
        if (sampling) {
          if (q_rows.size() <= j) q_rows.emplace_back(vocab_);
          sampling->distribution(logits, q_rows[j]);
          d = sampling->sample(q_rows[j]);
        } else if (d < 0) {
          d = static_cast<int>(kernels::argmax(logits.data(), vocab_));
        }
        drafts.push_back(d);
        stats.draft_layers += ts.exit_layer;
        if (spec_.adaptive_gamma) {  // the mean exit layer, as the acceptance (same weight)
          const double e = static_cast<double>(ts.exit_layer);
          const double w = exit_layer_mean_ < 0.0 ? 1.0 : spec_.acceptance_weight;
          exit_layer_mean_ += w * (e - exit_layer_mean_);
        }
        const bool confident = ts.exit_layer < L_;
        if (!confident || is_stop(d)) break;
        if (j + 1 < gamma) fed.push_back(d);
      }
      const std::size_t k = drafts.size();
      if (k > 0 && fed.size() < k + 1) fed.push_back(drafts.back());  // row k: d_k
      const auto v0 = detail::now();
      stats.draft_seconds += detail::seconds(d0, v0);

      // --- verify rows 0..k (tokens fed[0..k]) at p..p+k
      verify(session, p, fed, exits, stats);
      stats.verify_seconds += detail::seconds(v0, detail::now());
      ++stats.rounds;
      stats.drafted += k;

      // --- accept
      std::size_t m = 0;
      int next;
      if (sampling) {
        for (;;) {
          sampling->distribution(logits_row(m), sampling->p);
          if (m == k) {
            next = sampling->sample(sampling->p);
            break;
          }
          const int d = drafts[m];
          const double pd = sampling->p[d], qd = q_rows[m][d];
          if (qd > 0.0 && sampling->uniform() * qd < pd) {  // accept with min(1, p/q)
            ++m;
            continue;
          }
          // Rejected: sample from norm(max(0, p - q)).
          double total = 0.0;
          for (std::size_t i = 0; i < vocab_; ++i)
            total += (sampling->p[i] = std::max(0.0, sampling->p[i] - q_rows[m][i]));
          if (total > 0.0) {
            for (double& v : sampling->p) v /= total;
            next = sampling->sample(sampling->p);
          } else {  // p == q: nothing to correct (unreachable for a rejected token)
            sampling->distribution(logits_row(m), sampling->p);
            next = sampling->sample(sampling->p);
          }
          break;
        }
      } else {
        while (m < k && drafts[m] == argmax_row(m)) ++m;
        next = argmax_row(m);
      }
      stats.accepted += m;
      if (looked_up) stats.lookup_accepted += m;
      if (k > 0) {
        stats.count_gamma(gamma);
        if (spec_.adaptive_gamma)
          (looked_up ? lookup_tracker_ : exit_tracker_).update(k, m, /*capped=*/k == gamma);
      }
      session.truncate(p + m + 1);  // rows 0..m are the sequence's; the rest are rejected
      for (std::size_t j = 0; j < m && !stopped; ++j) emit(drafts[j]);
      if (!stopped) emit(next);
      a = next;
    }
    report.generation_seconds = detail::seconds(t_start, detail::now());
    report.layer_seconds = stats.draft_seconds + stats.verify_seconds;
    return out;
  }

  // sub_logits_ := the draft head over normed_, on the session's threads where it has some.
  void sub_head(backend_type& session) {
    ThreadPool* pool = nullptr;
    if constexpr (requires { session.pool(); }) pool = session.pool();
    draft_head_->apply(normed_, sub_logits_, pool);
  }

  // Rows 0..k (tokens fed[0..k]) at p..p+k through the full model; logits_ rows 0..k := their
  // heads. Row j < k was drafted (exit layer exits[j], exit state in exit_states_); row k was not.
  void verify(backend_type& session, std::size_t p, const std::vector<int>& fed,
              const std::vector<std::size_t>& exits, SpeculationStats& stats) {
    const std::size_t n = fed.size(), k = n - 1;
    // start[j]: layers of row j already exact (0 = from the embedding); non-increasing in j.
    std::vector<std::size_t> start(n, 0);
    if (spec_.reuse_draft) {
      std::size_t bound = L_;
      for (std::size_t j = 0; j < k; ++j) {
        if (exits[j] > bound) break;  // ran layers on inexact inputs: this row and later ones
        start[j] = bound = exits[j];
      }
    }
    for (std::size_t j = 0; j < n; ++j) {
      float* row = rows_.data() + j * h_;
      if (start[j] > 0)
        std::copy_n(exit_states_.data() + j * h_, h_, row);
      else
        session.embed(fed[j], std::span<float>(row, h_));
    }
    if (!spec_.reuse_draft) session.truncate(p);
    for (std::size_t layer = 0; layer < L_; ++layer) {
      std::size_t j0 = 0;  // rows j0..k need this layer (start[j] <= layer)
      while (j0 < n && start[j0] > layer) ++j0;
      if (j0 == n) continue;
      session.run_layers(layer, layer + 1,
                         std::span<float>(rows_.data() + j0 * h_, (n - j0) * h_), p + j0,
                         Products::matvec);
      stats.verified_layers += n - j0;
    }
    stats.verified_rows += n;
    session.exit_heads(std::span<const float>(rows_.data(), n * h_),
                       std::span<float>(logits_.data(), n * vocab_));
    for (std::size_t j = 0; j < n; ++j)
      detail::require_finite_logits(logits_row(j), p + j, detail::kVerification, L_, L_);
  }

  // The head's share of a decode step, from the weights' bytes where the backend shows them.
  static double head_share(const backend_type& b) {
    if constexpr (requires { b.model().weights().lm_head.bytes(); b.model().weights().layers; }) {
      const auto& w = b.model().weights();
      double layers = 0.0;
      for (const auto& l : w.layers)
        for (const auto* m : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down})
          layers += static_cast<double>(m->bytes());
      const double head = static_cast<double>(w.lm_head.bytes());
      return head + layers > 0.0 ? head / (head + layers) : 0.1;
    } else {
      return 0.1;
    }
  }

  Drafter drafter_;
  DecoderOptions options_;
  SpeculativeOptions spec_;
  AcceptanceTracker lookup_tracker_, exit_tracker_;  // adaptive γ: α_k per draft source
  double exit_layer_mean_ = -1.0;  // moving mean of the early-exit drafts' exit layers; < 0: none
  double head_share_ = 0.1;
  [[no_unique_address]] TokenDrafts token_drafts_;
  std::vector<int> history_;  // prompt + output: what TokenDrafts looks up
  std::size_t L_ = 0, h_ = 0, vocab_ = 0;
  std::vector<float> rows_;         // (γ + 1, hidden) states being verified
  std::vector<float> exit_states_;  // (γ, hidden) drafted rows' states at their exits
  std::vector<float> logits_;       // (γ + 1, vocab) the full model's logits per row
  std::shared_ptr<const SubVocabularyHead> draft_head_;  // null: drafts use the whole head
  std::vector<float> normed_;        // (hidden) a draft's exit state through the final norm
  std::vector<float> sub_logits_;    // (V') the draft head's logits
  std::vector<float> draft_logits_;  // (vocab) a draft's logits over the whole vocabulary
};

// n-gram (prompt-lookup) drafts alone: no early exit; a round with no match is a plain step.
template <class Backend>
using PromptLookupDecoder = SpeculativeDecoder<Backend, NoConfidence, Never, PromptLookup>;

}  // namespace calm
