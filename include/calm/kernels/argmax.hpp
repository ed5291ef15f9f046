// argmax and the top two entries of a vector (greedy decoding, softmax-response confidence), and
// the indices of the k largest (the candidate set of a narrowed exit check).
// Inputs must not contain NaN (the result is then unspecified, but always an index < n).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include <xsimd/xsimd.hpp>

#include "calm/kernels/load.hpp"

namespace calm::kernels {

// The two largest entries: v1 >= v2; on ties the lower index comes first (i1 < i2 when v1 == v2).
struct Top2 {
  std::size_t i1;
  float v1;
  std::size_t i2;
  float v2;
};

namespace scalar {

// First index of the maximum of x(n); n > 0.
inline std::size_t argmax(const float* x, std::size_t n) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

// x(n), n >= 2.
inline Top2 top2(const float* x, std::size_t n) {
  Top2 t{0, x[0], 1, x[1]};
  if (x[1] > x[0]) t = {1, x[1], 0, x[0]};
  for (std::size_t i = 2; i < n; ++i) {
    if (x[i] > t.v1) {
      t.i2 = t.i1;
      t.v2 = t.v1;
      t.i1 = i;
      t.v1 = x[i];
    } else if (x[i] > t.v2) {
      t.i2 = i;
      t.v2 = x[i];
    }
  }
  return t;
}

}  // namespace scalar

namespace detail {

// Maximum of x(n); -inf when n == 0.
template <class Arch>
float max_of(const float* x, std::size_t n) {
  using B = fbatch<Arch>;
  float m = -std::numeric_limits<float>::infinity();
  std::size_t i = 0;
  if (n >= B::size) {
    B vmax = B::load_unaligned(x);
    for (i = B::size; i + B::size <= n; i += B::size) vmax = xsimd::max(vmax, B::load_unaligned(x + i));
    m = reduce_max<Arch>(vmax);
  }
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// First index i in [begin, n) with x[i] == v, skipping `skip`; n if none.
template <class Arch>
std::size_t find_first(const float* x, std::size_t begin, std::size_t n, float v,
                       std::size_t skip) {
  using B = fbatch<Arch>;
  const B vv(v);
  std::size_t i = begin;
  for (; i + B::size <= n; i += B::size) {
    if (xsimd::any(B::load_unaligned(x + i) == vv)) {
      for (std::size_t j = i; j < i + B::size; ++j) {
        if (x[j] == v && j != skip) return j;
      }
    }
  }
  for (; i < n; ++i) {
    if (x[i] == v && i != skip) return i;
  }
  return n;
}

}  // namespace detail

// First index of the maximum of x(n); n > 0.
template <class Arch = xsimd::default_arch>
std::size_t argmax(const float* x, std::size_t n) {
  const std::size_t i = detail::find_first<Arch>(x, 0, n, detail::max_of<Arch>(x, n), n);
  return i < n ? i : 0;
}

// x(n), n >= 2. Two passes over x (max, then max without it): both are cheap next to the
// vocabulary projection that produced x.
template <class Arch = xsimd::default_arch>
Top2 top2(const float* x, std::size_t n) {
  const std::size_t i1 = argmax<Arch>(x, n);
  const float before = detail::max_of<Arch>(x, i1);
  const float after = detail::max_of<Arch>(x + i1 + 1, n - i1 - 1);
  const float v2 = before >= after ? before : after;
  std::size_t i2 = detail::find_first<Arch>(x, 0, n, v2, i1);
  if (i2 == n) i2 = i1 == 0 ? 1 : 0;
  return {i1, x[i1], i2, x[i2]};
}

// The indices of the k largest entries of x(n), k <= n, into out(k) in increasing index order;
// on ties the lower index is taken. A NaN counts as -inf (never a candidate before a number).
// A min-heap of the best k so far: O(n log k), and most entries cost one comparison with the
// heap's worst.
inline void top_k(const float* x, std::size_t n, std::size_t k, std::uint32_t* out) {
  if (k == 0) return;
  const auto key = [x](std::uint32_t i) {
    return std::isnan(x[i]) ? -std::numeric_limits<float>::infinity() : x[i];
  };
  // a ranks after b: smaller, or equal with a higher index. The heap's front is the worst kept.
  const auto after = [&](std::uint32_t a, std::uint32_t b) {
    const float ka = key(a), kb = key(b);
    return ka < kb || (ka == kb && a > b);
  };
  const auto heap_less = [&](std::uint32_t a, std::uint32_t b) { return after(b, a); };
  for (std::size_t i = 0; i < k; ++i) out[i] = static_cast<std::uint32_t>(i);
  std::make_heap(out, out + k, heap_less);
  for (std::size_t i = k; i < n; ++i) {
    const auto j = static_cast<std::uint32_t>(i);
    if (!after(out[0], j)) continue;  // not better than the worst kept
    std::pop_heap(out, out + k, heap_less);
    out[k - 1] = j;
    std::push_heap(out, out + k, heap_less);
  }
  std::sort(out, out + k);
}

}  // namespace calm::kernels
