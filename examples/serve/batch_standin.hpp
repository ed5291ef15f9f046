// TEMPORARY stand-in for <calm/decoding/batch.hpp> until the batched decoder lands: the same
// interface, one Decoder per row stepped one after another. Deleted with the merge.
#pragma once

#include <calm/backends/llama/llama.hpp>
#include <calm/decoder.hpp>
#include <calm/sampling/sampler.hpp>

#include <map>
#include <memory>
#include <span>
#include <vector>

namespace calm {
struct BatchOptions {
  std::size_t max_rows = 16;
  std::size_t max_context = 0;
  std::shared_ptr<ThreadPool> pool;
};
struct SequenceRequest {
  std::vector<int> prompt;
  std::size_t max_new_tokens = 64;
  SamplingOptions sampling;
  DecoderOptions decoder;
};
using SequenceId = std::uint64_t;
struct BatchToken {
  SequenceId id;
  TokenStats stats;
  bool finished;
};
template <class Confidence, class Schedule, TokenSampler Sp = Sampler>
class BatchDecoder {
 public:
  using Row = Decoder<LlamaSession, Confidence, Schedule>;
  explicit BatchDecoder(std::shared_ptr<const LlamaModel> model, BatchOptions opts = {})
      : model_(std::move(model)), opts_(std::move(opts)) {}
  SequenceId join(const SequenceRequest& r, Confidence measure = {}, Schedule schedule = {}) {
    if (rows_.size() >= opts_.max_rows) throw Error("BatchDecoder::join: full");
    auto row = std::make_unique<Entry>(Entry{
        Row(LlamaSession(model_, {.max_context = opts_.max_context, .pool = opts_.pool}),
            std::move(measure), std::move(schedule), r.decoder),
        Sp(r.sampling)});
    row->decoder.start(r.prompt, r.max_new_tokens);
    const SequenceId id = next_++;
    rows_.emplace(id, std::move(row));
    return id;
  }
  void leave(SequenceId id) { rows_.erase(id); }
  std::span<const BatchToken> step() {
    out_.clear();
    for (auto& [id, e] : rows_)
      if (!e->decoder.done()) {
        const TokenStats ts = e->decoder.step(e->sampler);
        out_.push_back({id, ts, e->decoder.done()});
      }
    return out_;
  }
  std::size_t size() const noexcept { return rows_.size(); }
  std::size_t active() const noexcept {
    std::size_t n = 0;
    for (auto& [id, e] : rows_) n += !e->decoder.done();
    return n;
  }
  std::size_t capacity() const noexcept { return opts_.max_rows; }
  const SequenceReport& report(SequenceId id) const { return rows_.at(id)->decoder.report(); }

 private:
  struct Entry {
    Row decoder;
    Sp sampler;
  };
  std::shared_ptr<const LlamaModel> model_;
  BatchOptions opts_;
  std::map<SequenceId, std::unique_ptr<Entry>> rows_;
  std::vector<BatchToken> out_;
  SequenceId next_ = 1;
};
}  // namespace calm
