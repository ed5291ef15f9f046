// Per-layer key/value cache of one sequence: for each layer, K and V of shape
// (max_context, kv_heads*head_dim), f32. Memory is reserved up front but left untouched, so the
// pages of positions never reached are never faulted in.
#pragma once

#include <cstddef>
#include <memory>

namespace calm {

class KvCache {
 public:
  KvCache() = default;
  KvCache(std::size_t layers, std::size_t max_context, std::size_t row_size)
      : layers_(layers),
        max_context_(max_context),
        row_size_(row_size),
        data_(new float[2 * layers * max_context * row_size]) {}  // uninitialised on purpose

  std::size_t row_size() const noexcept { return row_size_; }
  std::size_t max_context() const noexcept { return max_context_; }

  float* k(std::size_t layer, std::size_t pos) noexcept { return data_.get() + offset(layer, 0, pos); }
  float* v(std::size_t layer, std::size_t pos) noexcept { return data_.get() + offset(layer, 1, pos); }
  const float* k(std::size_t layer, std::size_t pos) const noexcept {
    return data_.get() + offset(layer, 0, pos);
  }
  const float* v(std::size_t layer, std::size_t pos) const noexcept {
    return data_.get() + offset(layer, 1, pos);
  }

 private:
  std::size_t offset(std::size_t layer, std::size_t which, std::size_t pos) const noexcept {
    return ((layer * 2 + which) * max_context_ + pos) * row_size_;
  }
  std::size_t layers_ = 0, max_context_ = 0, row_size_ = 0;
  std::unique_ptr<float[]> data_;  // (layers, 2, max_context, row_size)
};

}  // namespace calm
