// The three policy roles of calm::Decoder, one C++20 concept each:
//
//   TransformerBackend  one sequence of a model: runs one layer at a time on a residual stream,
//                       owns that sequence's KV cache, can rewind it (calm::LlamaSession).
//   ConfidenceMeasure   c_t^i (docs/design.md §3): a score, higher = more confident. Publishes
//                       `needs_logits` so the decoder runs the V x d vocabulary projection only
//                       for measures that read it (checked with if constexpr).
//   ExitSchedule        lambda_t (docs/design.md §4), or a fixed exit layer for the baselines.
//
// Each concept is the conjunction of small single-member concepts in calm::traits; Decoder
// checks those one by one with static_asserts whose messages name the missing member, so a
// policy that does not fit fails with one readable line rather than a concept dump.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>

namespace calm {

// How run_layers multiplies n > 1 tokens by the weights.
enum class Products : unsigned char {
  matmul,  // matrix-matrix products: fastest for long prompts; rounds differently from decoding
  matvec,  // each token bitwise as run_layer computes it alone (kernels::matvec_batch), every
           // weight still read once: speculative verification, which must equal decoding
};


// What a confidence measure sees at an exit point (after layer `layer`, 1-based, < num_layers).
struct ExitSignal {
  std::size_t layer = 0;       // i, 1-based as in the paper
  std::size_t num_layers = 0;  // L
  std::size_t step = 0;        // t, 1-based generation step
  std::span<const float> state;           // d_t^i, pre-norm residual stream (hidden)
  std::span<const float> previous_state;  // d_t at the previous exit point; empty at the first
  // RMSNorm_final(d_t^i) (hidden): filled when the measure needs logits or declares
  // `static constexpr bool needs_normed_state = true`; empty otherwise.
  std::span<const float> normed_state;
  // W_head . RMSNorm_final(d_t^i) (vocab): filled only when the measure's needs_logits is true.
  // For a measure that narrows its checks (traits::narrows_logits), after the token's first
  // check only the rows `candidates` lists: logits[k] is the logit of token candidates[k].
  std::span<const float> logits;
  std::span<const std::uint32_t> candidates;  // empty: logits covers the whole vocabulary
};

namespace traits {

// --- ConfidenceMeasure members -------------------------------------------------------------
template <class C>
concept HasNeedsLogits = requires {
  { C::needs_logits } -> std::convertible_to<bool>;
  typename std::bool_constant<C::needs_logits>;  // must be a constant expression
};
template <class C>
concept HasScore = requires(C& c, const ExitSignal& s) {
  { c.score(s) } noexcept -> std::same_as<float>;
};

// Optional measure traits, with their defaults.
template <class C>
constexpr bool needs_normed_state() {
  if constexpr (requires { typename std::bool_constant<C::needs_normed_state>; })
    return C::needs_normed_state;
  else
    return false;
}
template <class C>
constexpr bool needs_previous_state() {
  if constexpr (requires { typename std::bool_constant<C::needs_previous_state>; })
    return C::needs_previous_state;
  else
    return false;
}
// Whether this object reads the previous exit point's state: a measure whose type declares
// needs_previous_state may still say per object that it does not (`bool uses_previous_state()
// const noexcept`; the exit classifier's linear kind), and the decoder then copies no state.
template <class C>
bool uses_previous_state(const C& c) noexcept {
  if constexpr (!needs_previous_state<C>())
    return false;
  else if constexpr (requires { { c.uses_previous_state() } noexcept -> std::convertible_to<bool>; })
    return c.uses_previous_state();
  else
    return true;
}
// A measure with `std::size_t candidates() const noexcept` (k > 0) narrows its checks: the
// first check of each token sees the whole vocabulary's logits, and the later ones only the
// logits of that check's k most likely tokens (docs/design.md §3d), k rows of the head instead of
// V. Needs a backend with lm_head_rows.
template <class C>
constexpr bool narrows_logits() {
  return requires(const C& c) {
    { c.candidates() } noexcept -> std::convertible_to<std::size_t>;
  };
}
// Upper bound on any score the measure can return: a threshold above it can never be met, so
// the decoder skips the checks of that token altogether (exact, docs/design.md §8).
template <class C>
constexpr float max_score() {
  if constexpr (requires { { C::max_score } -> std::convertible_to<float>; })
    return C::max_score;
  else
    return std::numeric_limits<float>::infinity();
}

// --- ExitSchedule members ------------------------------------------------------------------
template <class S>
concept HasUsesConfidence = requires {
  { S::uses_confidence } -> std::convertible_to<bool>;
  typename std::bool_constant<S::uses_confidence>;
};
template <class S>
concept HasThreshold = requires(const S& s, std::size_t step, std::size_t max_steps) {
  { s.threshold(step, max_steps) } noexcept -> std::same_as<float>;
};
template <class S>
concept HasFixedExitLayer = requires(const S& s, std::size_t num_layers) {
  { s.fixed_exit_layer(num_layers) } noexcept -> std::convertible_to<std::size_t>;
};
// Schedules that compare against a threshold need threshold(); the others name their layer.
template <class S>
concept HasScheduleBody = HasUsesConfidence<S> &&
                          (S::uses_confidence ? HasThreshold<S> : HasFixedExitLayer<S>);
// Analysis mode: run the full model, exit at the first layer agreeing with the top (§7).
template <class S>
constexpr bool is_local_oracle() {
  if constexpr (requires { typename std::bool_constant<S::local_oracle>; })
    return S::local_oracle;
  else
    return false;
}

// --- TransformerBackend members ------------------------------------------------------------
template <class B>
concept HasDimensions = requires(const B& b) {
  { b.num_layers() } -> std::convertible_to<std::size_t>;
  { b.hidden_size() } -> std::convertible_to<std::size_t>;
  { b.vocab_size() } -> std::convertible_to<std::size_t>;
  { b.max_context() } -> std::convertible_to<std::size_t>;
};
template <class B>
concept HasEmbed = requires(const B& b, int token, std::span<float> x) { b.embed(token, x); };
template <class B>
concept HasRunLayer = requires(B& b, std::size_t layer, std::span<float> x, std::size_t pos) {
  b.run_layer(layer, x, pos);
};
template <class B>
concept HasFinalNorm = requires(const B& b, std::span<const float> x, std::span<float> out) {
  b.final_norm(x, out);
};
template <class B>
concept HasLmHead = requires(B& b, std::span<const float> normed, std::span<float> logits) {
  b.lm_head(normed, logits);
};
// logits(k) := the rows `rows` of the head times normed (for measures that narrow their checks).
template <class B>
concept HasLmHeadRows = requires(B& b, std::span<const float> normed,
                                 std::span<const std::uint32_t> rows, std::span<float> logits) {
  b.lm_head_rows(normed, rows, logits);
};
template <class B>
concept HasPropagateKv = requires(B& b, std::size_t layer, std::span<const float> x,
                                  std::size_t pos) { b.propagate_kv(layer, x, pos); };
template <class B>
concept HasPrefill = requires(B& b, std::span<const int> tokens, std::size_t pos0,
                              std::span<float> x_last) { b.prefill(tokens, pos0, x_last); };

// length(): positions cached; truncate(n): rewind to the first n (a new sequence is truncate(0)).
template <class B>
concept HasSequence = requires(B& b, const B& cb, std::size_t n) {
  { cb.length() } -> std::convertible_to<std::size_t>;
  b.truncate(n);
};

}  // namespace traits

template <class B>
concept TransformerBackend = traits::HasDimensions<B> && traits::HasEmbed<B> &&
                             traits::HasRunLayer<B> && traits::HasFinalNorm<B> &&
                             traits::HasLmHead<B> && traits::HasPropagateKv<B> &&
                             traits::HasPrefill<B> && traits::HasSequence<B> &&
                             std::move_constructible<B>;

// A backend that also runs layers over several consecutive tokens at once and applies the exit
// head to several states: what speculative verification needs (calm::LlamaSession).
template <class B>
concept BatchedBackend = TransformerBackend<B> &&
    requires(B& b, std::size_t layer, std::span<float> x, std::span<const float> cx,
             std::size_t pos) {
      b.run_layers(layer, layer, x, pos, Products::matvec);
      b.exit_heads(cx, x);
    };

template <class C>
concept ConfidenceMeasure = traits::HasNeedsLogits<C> && traits::HasScore<C>;

template <class S>
concept ExitSchedule = traits::HasScheduleBody<S>;

// A source of draft tokens that reads only the tokens so far, no model (prompt lookup,
// docs/design.md §9): SpeculativeDecoder verifies its proposals like any draft. propose(history,
// n) returns at most n proposed next tokens, the empty span when it has none. Proposals are
// deterministic, so under sampling their draft distribution is a point mass on each token.
template <class D>
concept TokenDraftSource = requires(const D& d, std::span<const int> history, std::size_t n) {
  { d.propose(history, n) } noexcept -> std::same_as<std::span<const int>>;
};

// Anything with `int sample(logits)`, e.g. calm::Sampler.
template <class Sp>
concept TokenSampler = requires(Sp& s, std::span<float> logits) {
  { s.sample(logits) } -> std::convertible_to<int>;
};

}  // namespace calm
