// Attention of one query token over the KV cache, with grouped-query heads (GQA).
#pragma once

#include <cmath>
#include <cstddef>
#include <string>

#include <xsimd/xsimd.hpp>

#include "calm/core/error.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/kernels/elementwise.hpp"
#include "calm/kernels/softmax.hpp"

namespace calm::kernels {

namespace detail {
inline void check_heads(std::size_t n_heads, std::size_t n_kv_heads) {
  if (n_kv_heads == 0 || n_heads % n_kv_heads != 0) {
    throw Error("attention: n_heads (" + std::to_string(n_heads) +
                ") must be a multiple of n_kv_heads (" + std::to_string(n_kv_heads) + ")");
  }
}
}  // namespace detail

namespace scalar {

// out: (n_heads, head_dim); q: (n_heads, head_dim);
// k_cache, v_cache: (n_pos, n_kv_heads, head_dim); scores: (n_heads, n_pos) scratch.
// Query head h reads kv head h / (n_heads / n_kv_heads). n_pos == 0 gives zeros.
inline void attention(float* out, const float* q, const float* k_cache, const float* v_cache,
                      std::size_t n_pos, std::size_t n_heads, std::size_t n_kv_heads,
                      std::size_t head_dim, float* scores, ThreadPool* /*pool*/ = nullptr) {
  detail::check_heads(n_heads, n_kv_heads);
  const std::size_t group = n_heads / n_kv_heads;
  const std::size_t kv_stride = n_kv_heads * head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  for (std::size_t h = 0; h < n_heads; ++h) {
    const std::size_t kv = h / group;
    const float* qh = q + h * head_dim;
    float* s = scores + h * n_pos;
    for (std::size_t p = 0; p < n_pos; ++p) {
      s[p] = dot(qh, k_cache + p * kv_stride + kv * head_dim, head_dim) * scale;
    }
    softmax(s, n_pos);
    float* o = out + h * head_dim;
    for (std::size_t d = 0; d < head_dim; ++d) o[d] = 0.0f;
    for (std::size_t p = 0; p < n_pos; ++p) axpy(o, s[p], v_cache + p * kv_stride + kv * head_dim, head_dim);
  }
}

}  // namespace scalar

// Same contract as scalar::attention. Heads are split over the pool; each head is computed by
// one task in a fixed order, so the result is identical for any thread count.
template <class Arch = xsimd::default_arch>
void attention(float* out, const float* q, const float* k_cache, const float* v_cache,
               std::size_t n_pos, std::size_t n_heads, std::size_t n_kv_heads,
               std::size_t head_dim, float* scores, ThreadPool* pool = nullptr) {
  detail::check_heads(n_heads, n_kv_heads);
  const std::size_t group = n_heads / n_kv_heads;
  const std::size_t kv_stride = n_kv_heads * head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  auto one_head = [&](std::size_t h) {
    const std::size_t kv = h / group;
    const float* qh = q + h * head_dim;
    float* s = scores + h * n_pos;
    for (std::size_t p = 0; p < n_pos; ++p) {
      s[p] = dot<Arch>(qh, k_cache + p * kv_stride + kv * head_dim, head_dim) * scale;
    }
    softmax<Arch>(s, n_pos);
    float* o = out + h * head_dim;
    for (std::size_t d = 0; d < head_dim; ++d) o[d] = 0.0f;
    for (std::size_t p = 0; p < n_pos; ++p) {
      axpy<Arch>(o, s[p], v_cache + p * kv_stride + kv * head_dim, head_dim);
    }
  };
  if (pool != nullptr) {
    pool->parallel_for(n_heads, one_head);
  } else {
    for (std::size_t h = 0; h < n_heads; ++h) one_head(h);
  }
}

}  // namespace calm::kernels
