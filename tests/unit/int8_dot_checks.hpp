// What the int8 dot product's tests share (test_q8_0_dot, test_q4_0_dot): the paths this build
// runs, x with extreme and zero blocks, a twin written from the definition (kernels/int8_dot.hpp:
// x's blocks quantized, exact integer block sums, 8 f32 partial sums by block index mod 8 and a
// fixed tree), and the check that every kernel gives the twin's bits for every path, batch size,
// thread count, gather and segmenting.
#pragma once

#include <calm/core/thread_pool.hpp>
#include <calm/kernels/int8_dot.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <vector>

namespace calm::test {

using calm::kernels::Int8DotPath;

// The paths this build and host can run.
inline std::vector<Int8DotPath> int8_dot_paths() {
  std::vector<Int8DotPath> p = {Int8DotPath::scalar};
#if defined(__AVX2__) && defined(__FMA__)
  p.push_back(Int8DotPath::avx2);
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
  p.push_back(Int8DotPath::avx512vnni);
#endif
  return p;
}

// fn.template operator()<p>().
template <class Fn>
void on_int8_dot_path(Int8DotPath p, Fn&& fn) {
  switch (p) {
    case Int8DotPath::scalar: fn.template operator()<Int8DotPath::scalar>(); break;
#if defined(__AVX2__) && defined(__FMA__)
    case Int8DotPath::avx2: fn.template operator()<Int8DotPath::avx2>(); break;
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    case Int8DotPath::avx512vnni: fn.template operator()<Int8DotPath::avx512vnni>(); break;
#endif
    default: FAIL("path not built");
  }
}

// n inputs uniform in [-2, 2); `extremes`: every 5th block +-3 (quantized to +-127, against the
// weight fixtures' extreme blocks) and every 7th from block 2 zeros (d_x = 0).
inline std::vector<float> int8_dot_inputs(std::size_t n, std::mt19937& rng, bool extremes) {
  std::vector<float> x(n);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (float& v : x) v = u(rng);
  if (extremes) {
    for (std::size_t b = 0; b < n / 32; b += 5)
      for (std::size_t j = 0; j < 32; ++j) x[b * 32 + j] = (j % 3 == 0) ? -3.0f : 3.0f;
    for (std::size_t b = 2; b < n / 32; b += 7)
      for (std::size_t j = 0; j < 32; ++j) x[b * 32 + j] = 0.0f;
  }
  return x;
}

// The twin, from the definition, for n vectors x(n, cols): x's block b quantized (d = max|x| /
// 127, q = x / d to nearest even), s_b = sum_j w(r, c) * q_x (w the integer weight, scale
// aside) in int64, acc[b % 8] = fma(float(s_b), d_w * d_x, acc[b % 8]) in block order, then
// ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)). Returns y(n, rows).
template <class Weight>
std::vector<float> int8_dot_twin(std::size_t rows, std::size_t cols, Weight w, const float* dw,
                                 const float* x, std::size_t n) {
  const std::size_t nb = cols / 32;
  std::vector<float> y(n * rows);
  for (std::size_t t = 0; t < n; ++t) {
    const float* xt = x + t * cols;
    std::vector<std::int8_t> xq(cols);
    std::vector<float> dx(nb);
    for (std::size_t b = 0; b < nb; ++b) {
      float m = 0;
      for (std::size_t j = 0; j < 32; ++j) m = std::max(m, std::fabs(xt[b * 32 + j]));
      dx[b] = m / 127.0f;
      for (std::size_t j = 0; j < 32; ++j) {
        const double v = dx[b] == 0 ? 0.0 : std::nearbyint(double(xt[b * 32 + j] / dx[b]));
        REQUIRE(std::fabs(v) <= 127);
        xq[b * 32 + j] = static_cast<std::int8_t>(v);
      }
    }
    for (std::size_t r = 0; r < rows; ++r) {
      float a[8] = {};
      for (std::size_t b = 0; b < nb; ++b) {
        std::int64_t s = 0;
        for (std::size_t j = 0; j < 32; ++j) s += std::int64_t{w(r, b * 32 + j)} * xq[b * 32 + j];
        a[b % 8] = std::fma(float(s), dw[r * nb + b] * dx[b], a[b % 8]);
      }
      y[t * rows + r] = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
    }
  }
  return y;
}

// Kernels of blocks C (kernels/int8_dot.hpp) on W (rows, cols: blocks q, scales d) and n vectors
// x(n, cols) on path P, against want(n, rows), the twin's, bit for bit: each vector alone, every
// batch of the first m = 1..n, on 1 and 2 threads; a gather of rows in any order; two segments.
template <class C, Int8DotPath P, class Segment>
void check_int8_dot_kernels(const typename C::unit* q, const float* d, std::size_t rows,
                            std::size_t cols, const float* x, std::size_t n,
                            const std::vector<float>& want) {
  namespace k = calm::kernels;
  calm::ThreadPool two(2);
  for (calm::ThreadPool* pool : {static_cast<calm::ThreadPool*>(nullptr), &two}) {
    CAPTURE(pool != nullptr);
    for (std::size_t t = 0; t < n; ++t) {
      std::vector<float> one(rows);
      k::matvec_int8_dot<C, P>(one.data(), q, d, x + t * cols, rows, cols, pool);
      CHECK(std::memcmp(one.data(), want.data() + t * rows, rows * 4) == 0);
    }
    std::vector<float> batch(n * rows);
    // On the AVX-512 path batches run on AMX where the process may: with it and without it
    // (switched off), and the AMX kernel itself from n = 1.
    const bool amx = P == Int8DotPath::avx512vnni && k::amx::usable();
    for (const bool amx_on : {true, false}) {
      if (!amx_on && !amx) continue;
      k::amx::enable(amx_on);
      for (std::size_t m = 1; m <= n; ++m) {
        CAPTURE(m);
        CAPTURE(amx_on);
        std::fill(batch.begin(), batch.end(), 0.0f);
        k::matvec_batch_int8_dot<C, P>(batch.data(), q, d, x, m, rows, cols, pool);
        CHECK(std::memcmp(batch.data(), want.data(), m * rows * 4) == 0);
      }
      k::amx::enable(true);
    }
#if CALM_AMX_INT8_BUILT
    if (amx) {
      for (std::size_t m = 1; m <= n; ++m) {
        CAPTURE(m);
        std::fill(batch.begin(), batch.end(), 0.0f);
        k::detail::matvec_batch_int8_amx<C>(batch.data(), q, d, x, m, rows, cols, pool);
        CHECK(std::memcmp(batch.data(), want.data(), m * rows * 4) == 0);
      }
    }
#endif
  }
  // A few rows, in any order: each the bits of its row in matvec.
  const std::vector<std::uint32_t> picked = {std::uint32_t(rows - 1), 0, 0};
  std::vector<float> g(picked.size());
  k::matvec_gather_int8_dot<C, P>(g.data(), q, d, x, picked, cols);
  for (std::size_t i = 0; i < picked.size(); ++i)
    CHECK(std::memcmp(&g[i], &want[picked[i]], 4) == 0);
  // Segments: two matrices sharing x in one pass, each its own matvec's bits.
  std::vector<float> ya(rows), yb(rows);
  const Segment segs[] = {{ya.data(), q, d, rows}, {yb.data(), q, d, rows}};
  k::matvec_int8_dot<C, P>(std::span<const Segment>(segs), x, cols, &two);
  CHECK(std::memcmp(ya.data(), want.data(), rows * 4) == 0);
  CHECK(std::memcmp(yb.data(), want.data(), rows * 4) == 0);
}

// Every path against the twin over matrices M(rows, cols, rng, extremes) (members q and d, the
// blocks and scales, and weight(r, c), the integer weight) of 1 to 37 rows and widths that take
// the SIMD paths' steps (8 blocks on AVX2, 16 on AVX-512) partly and whole: 32, 96 and 192 only
// a partial step; 256 one whole step or a partial one; 512 one or two whole steps; 2144 8 or 4
// whole steps and a partial one. `extremes`: the matrix's and x's extreme blocks, x's zero blocks.
template <class C, class Segment, class M>
void check_int8_dot_against_twin() {
  std::mt19937 rng(17);
  for (const bool extremes : {false, true}) {
    for (const std::size_t rows : {1u, 3u, 4u, 7u, 37u}) {
      for (const std::size_t cols : {32u, 96u, 192u, 256u, 512u, 2048u + 96u}) {
        CAPTURE(extremes);
        CAPTURE(rows);
        CAPTURE(cols);
        const std::size_t n = 17;
        const M w(rows, cols, rng, extremes);
        const auto x = int8_dot_inputs(n * cols, rng, extremes);
        const auto want = int8_dot_twin(
            rows, cols, [&](std::size_t r, std::size_t c) { return w.weight(r, c); }, w.d.data(),
            x.data(), n);
        for (const Int8DotPath p : int8_dot_paths()) {
          CAPTURE(int(p));
          on_int8_dot_path(p, [&]<Int8DotPath P>() {
            check_int8_dot_kernels<C, P, Segment>(w.q.data(), w.d.data(), rows, cols, x.data(), n,
                                                  want);
          });
        }
      }
    }
  }
}

// One row of W (cols; blocks q, scales d) times x on every path: `expected` exactly, -expected
// for -x, and NaN once an element of x is infinite.
template <class C>
void check_int8_dot_extremes(const typename C::unit* q, const float* d, const std::vector<float>& x,
                             float expected) {
  const std::size_t cols = x.size();
  for (const Int8DotPath p : int8_dot_paths()) {
    CAPTURE(int(p));
    on_int8_dot_path(p, [&]<Int8DotPath P>() {
      float y = 0;
      calm::kernels::matvec_int8_dot<C, P>(&y, q, d, x.data(), 1, cols);
      CHECK(y == expected);
      std::vector<float> neg(cols);
      for (std::size_t c = 0; c < cols; ++c) neg[c] = -x[c];
      calm::kernels::matvec_int8_dot<C, P>(&y, q, d, neg.data(), 1, cols);
      CHECK(y == -expected);
      std::vector<float> bad = x;
      bad[cols / 2] = std::numeric_limits<float>::infinity();
      calm::kernels::matvec_int8_dot<C, P>(&y, q, d, bad.data(), 1, cols);
      CHECK(std::isnan(y));
    });
  }
}

}  // namespace calm::test
