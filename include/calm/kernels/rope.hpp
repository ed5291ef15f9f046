// Rotary position embedding, Hugging Face "rotate_half" convention: within a head, dimension j
// pairs with j + head_dim/2 (not the interleaved 2j, 2j+1 of the original paper's code).
#pragma once

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "calm/core/error.hpp"
#include "calm/kernels/load.hpp"

namespace calm::kernels {

namespace detail {
inline void check_head_dim(std::size_t head_dim, const char* where) {
  if (head_dim % 2 != 0) {
    throw Error(std::string(where) + ": head_dim must be even for RoPE (got " +
                std::to_string(head_dim) + ")");
  }
}
}  // namespace detail

// The base rotary frequencies inv_freq_j = 1 / theta^(2j/head_dim), j < head_dim/2.
// Numerics: HF computes inv_freq, pos * inv_freq and cos/sin in float32. We round at the same
// points (exponent, inv_freq and the angle are f32 values, the angle is an f32 product), and
// evaluate pow/cos/sin in double before rounding, so the tables match HF's to ~1 ulp of the
// angle; at large positions both inherit the f32 rounding of the angle itself.
inline std::vector<float> rope_inv_freq(std::size_t head_dim, float theta) {
  detail::check_head_dim(head_dim, "rope_inv_freq");
  std::vector<float> inv_freq(head_dim / 2);
  for (std::size_t j = 0; j < inv_freq.size(); ++j) {
    const float exponent = static_cast<float>(2 * j) / static_cast<float>(head_dim);
    const float power = static_cast<float>(std::pow(static_cast<double>(theta), exponent));
    inv_freq[j] = 1.0f / power;
  }
  return inv_freq;
}

// cos(half), sin(half) for position pos: angle_j = pos * inv_freq_j.
inline void rope_table(float* cos, float* sin, const float* inv_freq, std::size_t half,
                       std::size_t pos) {
  const float position = static_cast<float>(pos);
  for (std::size_t j = 0; j < half; ++j) {
    const float angle = position * inv_freq[j];
    cos[j] = static_cast<float>(std::cos(static_cast<double>(angle)));
    sin[j] = static_cast<float>(std::sin(static_cast<double>(angle)));
  }
}

// The same for plain RoPE with base theta.
inline void rope_table(float* cos, float* sin, std::size_t head_dim, std::size_t pos, float theta) {
  const std::vector<float> inv_freq = rope_inv_freq(head_dim, theta);
  rope_table(cos, sin, inv_freq.data(), inv_freq.size(), pos);
}

namespace scalar {

// v: (n_heads, head_dim), rotated in place; cos, sin: (head_dim/2).
inline void rope(float* v, std::size_t n_heads, std::size_t head_dim, const float* cos,
                 const float* sin) {
  detail::check_head_dim(head_dim, "rope");
  const std::size_t half = head_dim / 2;
  for (std::size_t h = 0; h < n_heads; ++h) {
    float* x = v + h * head_dim;
    for (std::size_t j = 0; j < half; ++j) {
      const float a = x[j], b = x[j + half];
      x[j] = a * cos[j] - b * sin[j];
      x[j + half] = b * cos[j] + a * sin[j];
    }
  }
}

}  // namespace scalar

// v: (n_heads, head_dim), rotated in place; cos, sin: (head_dim/2).
template <class Arch = xsimd::default_arch>
void rope(float* v, std::size_t n_heads, std::size_t head_dim, const float* cos,
          const float* sin) {
  using B = detail::fbatch<Arch>;
  detail::check_head_dim(head_dim, "rope");
  const std::size_t half = head_dim / 2;
  for (std::size_t h = 0; h < n_heads; ++h) {
    float* x = v + h * head_dim;
    std::size_t j = 0;
    for (; j + B::size <= half; j += B::size) {
      const B a = B::load_unaligned(x + j), b = B::load_unaligned(x + j + half);
      const B c = B::load_unaligned(cos + j), s = B::load_unaligned(sin + j);
      (a * c - b * s).store_unaligned(x + j);
      (b * c + a * s).store_unaligned(x + j + half);
    }
    for (; j < half; ++j) {
      const float a = x[j], b = x[j + half];
      x[j] = a * cos[j] - b * sin[j];
      x[j + half] = b * cos[j] + a * sin[j];
    }
  }
}

}  // namespace calm::kernels
