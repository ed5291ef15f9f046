// What the kernel tests share: unaligned buffers, random weights in f32/bf16/f16, the bound
// on reordered sums, and bitwise equality.
#pragma once

#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#include "calm/core/aligned.hpp"
#include "calm/core/dtype.hpp"

namespace calm::test {

// Unaligned on purpose: one element past a 64-byte boundary.
template <class T>
struct Unaligned {
  AlignedBuffer<T> buf;
  explicit Unaligned(std::size_t n) : buf(n + 1) {}
  T* data() { return buf.data() + 1; }
  T& operator[](std::size_t i) { return buf[i + 1]; }
};

template <class T>
T from_float(float v) {
  if constexpr (std::is_same_v<T, bf16>) return to_bf16(v);
  else if constexpr (std::is_same_v<T, f16>) return to_f16(v);
  else return v;
}

// n values uniform in [lo, hi), rounded to T.
template <class T>
void fill(T* p, std::size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  for (std::size_t i = 0; i < n; ++i) p[i] = from_float<T>(d(rng));
}

// Two f32 sums of n terms in different orders differ by at most ~n*eps*sum|terms| each.
inline float sum_tolerance(std::size_t n, float abs_sum) {
  return 2.0f * static_cast<float>(n + 1) * FLT_EPSILON * abs_sum + 1e-30f;
}

inline bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// n floats uniform in [-scale, scale).
inline std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

}  // namespace calm::test
