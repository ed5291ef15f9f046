// calm::BatchDecoder — many sequences decoded together, one token each per step, each leaving
// the network at its own layer (continuous batching with per-row early exit).
//
// Each sequence is a row: its own LlamaSession on the shared model, its own measure, schedule,
// sampler, stop tokens and length. A step runs the layers once over the rows still in flight
// (one pass over each weight matrix for all of them: where weights stream from memory, n rows
// cost little more than one); after each exit point the rows whose confidence passes leave the
// batch — their skipped layers get K/V by the decoder's propagation — and the rest go on as a
// smaller batch. The rows that need the output head get it in one batched product.
//
// Exactness: every stage is the single-sequence decoder's own (calm::Decoder's start_token /
// exit_after / propagation / sampling), and the batched products are the per-token-exact ones
// (Products::matvec: each row bitwise what the matvec gives it alone), so a row's tokens, exit
// layers, confidences and cache equal the sequence decoded alone — greedy, or sampled with the
// same seed — whatever else is in the batch and whenever it joined (tests/unit/test_batch.cpp).
//
// CALM's reference code runs a batch until its least confident row exits; here no row waits for
// another. Sequences join (prefilling their prompt, alone) and leave between steps.
//
// Not batched: the local oracle (an analysis tool that runs every layer anyway) and speculative
// decoding (each row's draft length differs per step; a row can be decoded speculatively on its
// own SpeculativeDecoder).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "calm/backends/llama/session.hpp"
#include "calm/core/error.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/decoder.hpp"
#include "calm/sampling/sampler.hpp"

namespace calm {

struct BatchOptions {
  std::size_t max_rows = 16;         // sequences held at once (join() refuses more)
  std::size_t max_context = 0;       // each sequence's KV cache length; 0 = the model's
  std::shared_ptr<ThreadPool> pool{};  // threads for every row's products; null: the caller only
};

// One sequence to decode.
struct SequenceRequest {
  std::vector<int> prompt{};  // token ids, non-empty
  std::size_t max_new_tokens = 64;
  SamplingOptions sampling{};  // temperature 0: greedy
  DecoderOptions decoder{};    // exit points, propagation, stop tokens
};

using SequenceId = std::uint64_t;

// A token one step produced, or the error that ended its sequence.
struct BatchToken {
  SequenceId id = 0;
  TokenStats stats;
  bool finished = false;  // the sequence's last token (max_new_tokens, a stop token, full context)
  std::string error;      // non-empty: no token; the sequence failed (e.g. non-finite logits)
};

template <class Confidence, class Schedule, TokenSampler Sp = Sampler>
class BatchDecoder {
  static_assert(!traits::is_local_oracle<Schedule>(),
                "calm::BatchDecoder: the local oracle runs every layer of every token (analysis); "
                "decode it with calm::Decoder");

 public:
  using Row = Decoder<LlamaSession, Confidence, Schedule>;

  explicit BatchDecoder(std::shared_ptr<const LlamaModel> model, BatchOptions opts = {})
      : model_(std::move(model)), opts_(std::move(opts)) {
    if (!model_) throw Error("calm::BatchDecoder: the model is null");
    if (opts_.max_rows == 0) throw Error("calm::BatchDecoder: max_rows must be at least 1");
  }

  // Prefills the prompt (all layers, alone) and adds the sequence; its first token comes with
  // the next step(). Throws calm::Error on bad input or when max_rows sequences are held.
  SequenceId join(const SequenceRequest& request, Confidence measure = {},
                  Schedule schedule = {}) {
    if (rows_.size() >= opts_.max_rows)
      throw Error("calm::BatchDecoder::join: the batch holds its maximum of " +
                  std::to_string(opts_.max_rows) + " sequences (BatchOptions::max_rows)");
    SessionOptions so;
    so.max_context = opts_.max_context;
    so.pool = opts_.pool;
    auto row = std::make_unique<RowState>(
        Row(LlamaSession(model_, std::move(so)), std::move(measure), std::move(schedule),
            request.decoder),
        Sp(request.sampling));
    row->decoder.start(request.prompt, request.max_new_tokens);
    row->id = next_id_++;
    rows_.push_back(std::move(row));
    return rows_.back()->id;
  }

  // Frees the sequence's session at once (finished or cancelled).
  void leave(SequenceId id) {
    const auto it = find(id);
    rows_.erase(it);
  }

  // One token for every unfinished sequence, decoded together; in joining order.
  std::span<const BatchToken> step() {
    produced_.clear();
    in_flight_.clear();
    for (auto& r : rows_) {
      if (r->finished()) continue;
      r->step = r->decoder.open_step();
      in_flight_.push_back(r.get());
    }
    run_layers();
    for (RowState* r : in_flight_) {
      BatchToken t;
      t.id = r->id;
      try {
        t.stats = r->decoder.close_step(r->sampler, r->step);
        t.finished = r->decoder.done();
      } catch (const Error& e) {  // this row's logits or sampler failed; the others go on
        r->failed = true;
        t.error = e.what();
        t.finished = true;
      }
      produced_.push_back(std::move(t));
    }
    return produced_;
  }

  std::size_t size() const noexcept { return rows_.size(); }
  std::size_t capacity() const noexcept { return opts_.max_rows; }
  // Sequences with tokens still to come.
  std::size_t active() const noexcept {
    return static_cast<std::size_t>(std::count_if(
        rows_.begin(), rows_.end(), [](const auto& r) { return !r->finished(); }));
  }
  // No more tokens will come for the sequence (finished, or failed with an error).
  bool done(SequenceId id) const { return (*find(id))->finished(); }
  const SequenceReport& report(SequenceId id) const { return (*find(id))->decoder.report(); }
  // The row's decoder (its session, measure, schedule): for inspection between steps.
  const Row& row(SequenceId id) const { return (*find(id))->decoder; }

 private:
  using Step = typename Row::StepInFlight;
  struct RowState {
    RowState(Row d, Sp s) : decoder(std::move(d)), sampler(std::move(s)) {}
    Row decoder;
    Sp sampler;
    SequenceId id = 0;
    Step step;
    bool failed = false;
    bool finished() const noexcept { return failed || decoder.done(); }
  };

  // The layers of this step's tokens: all rows in flight at the first layer, fewer after each
  // exit point; then one batched head for the rows whose exit check left no logits.
  void run_layers() {
    batch_.clear();
    for (RowState* r : in_flight_) {
      if (!r->step.needs_forward) continue;
      r->decoder.begin_forward(r->step);
      batch_.push_back(r);
    }
    if (batch_.empty()) return;
    const std::size_t h = model_->hidden_size(), L = model_->num_layers();
    heads_.clear();
    for (std::size_t layer = 1; !batch_.empty() && layer <= L; ++layer) {
      const std::size_t n = batch_.size();
      states_.resize(n * h);
      sessions_.resize(n);
      for (std::size_t i = 0; i < n; ++i) {
        const std::span<float> x = batch_[i]->decoder.state();
        std::copy(x.begin(), x.end(), states_.begin() + i * h);
        sessions_[i] = &batch_[i]->decoder.backend();
      }
      LlamaSession::run_layers(sessions_, layer - 1, layer, std::span<float>(states_),
                               Products::matvec);
      std::size_t kept = 0;
      for (std::size_t i = 0; i < n; ++i) {
        RowState* r = batch_[i];
        const std::span<float> x = r->decoder.state();
        std::copy_n(states_.begin() + i * h, h, x.begin());
        if (!r->decoder.leaves_after(layer, r->step)) {
          batch_[kept++] = r;
          continue;
        }
        if (r->decoder.end_forward(layer, r->step, /*with_head=*/false)) heads_.push_back(r);
      }
      batch_.resize(kept);
    }
    batched_head();
  }

  // logits := W_head · RMSNorm_final(state) for every row in heads_, in one product.
  void batched_head() {
    const std::size_t n = heads_.size();
    if (n == 0) return;
    const std::size_t h = model_->hidden_size(), v = model_->vocab_size();
    const auto t0 = detail::now();
    states_.resize(n * h);
    logits_.resize(n * v);
    for (std::size_t i = 0; i < n; ++i) {
      const std::span<float> x = heads_[i]->decoder.state();
      std::copy(x.begin(), x.end(), states_.begin() + i * h);
    }
    heads_[0]->decoder.backend().exit_heads(std::span<const float>(states_),
                                            std::span<float>(logits_));
    const double seconds = detail::seconds(t0, detail::now());
    for (std::size_t i = 0; i < n; ++i) {
      std::copy_n(logits_.begin() + i * v, v, heads_[i]->decoder.logits().begin());
      heads_[i]->step.times.head += seconds;
    }
  }

  auto find(SequenceId id) const {
    const auto it = std::find_if(rows_.begin(), rows_.end(),
                                 [id](const auto& r) { return r->id == id; });
    if (it == rows_.end())
      throw Error("calm::BatchDecoder: no sequence with id " + std::to_string(id) +
                  " (it left, or was never joined)");
    return it;
  }
  auto find(SequenceId id) {
    const auto it = std::as_const(*this).find(id);
    return rows_.begin() + (it - rows_.cbegin());
  }

  std::shared_ptr<const LlamaModel> model_;
  BatchOptions opts_;
  std::vector<std::unique_ptr<RowState>> rows_;  // in joining order
  SequenceId next_id_ = 1;
  // Per step (kept to reuse their storage).
  std::vector<BatchToken> produced_;
  std::vector<RowState*> in_flight_, batch_, heads_;
  std::vector<LlamaSession*> sessions_;
  std::vector<float> states_, logits_;  // (rows, hidden), (rows, vocab)
};

}  // namespace calm
