// SIMD kernels against their scalar twins (every length 0..2*width+k, unaligned pointers) and
// against hand-computed values.
#include <doctest/doctest.h>

#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "calm/core/aligned.hpp"
#include "calm/core/dtype.hpp"
#include "calm/core/error.hpp"
#include "calm/core/thread_pool.hpp"
#include "unit/kernel_test_support.hpp"
#include "calm/kernels/kernels.hpp"

namespace k = calm::kernels;
using calm::AlignedBuffer;
using calm::bf16;
using calm::f16;

namespace {

constexpr std::size_t kWidth = xsimd::batch<float>::size;
// Lengths 0..2*width+k; 32 is the bf16 pair-dot step of matmul, so cover past 2*32 too.
constexpr std::size_t kMaxLen = 2 * (kWidth > 32 ? kWidth : 32) + 5;

using calm::test::fill;
using calm::test::from_float;
using calm::test::Unaligned;

using calm::test::same_bits;
using calm::test::sum_tolerance;

}  // namespace

TEST_CASE("ThreadPool runs every task exactly once, for any size") {
  for (std::size_t threads : {1u, 2u, 3u}) {
    calm::ThreadPool pool(threads);
    CHECK(pool.size() == threads);
    for (std::size_t n_tasks : {0u, 1u, 2u, 5u, 64u}) {
      for (int repeat = 0; repeat < 50; ++repeat) {
        std::vector<std::atomic<int>> hits(n_tasks);
        pool.parallel_for(n_tasks, [&](std::size_t i) { hits[i].fetch_add(1); });
        for (std::size_t i = 0; i < n_tasks; ++i) REQUIRE(hits[i].load() == 1);
      }
    }
  }
}

TEST_CASE("ThreadPool rethrows a task's exception and stays usable") {
  calm::ThreadPool pool(2);
  CHECK_THROWS_AS(pool.parallel_for(4, [](std::size_t i) {
    if (i == 3) throw std::runtime_error("task 3");
  }), std::runtime_error);
  std::atomic<int> sum{0};
  pool.parallel_for(4, [&](std::size_t i) { sum += static_cast<int>(i); });
  CHECK(sum.load() == 6);
  CHECK_THROWS_AS(calm::ThreadPool(0), calm::Error);
}

TEST_CASE("AlignedBuffer is 64-byte aligned, zeroed and movable") {
  AlignedBuffer<float> a(37);
  CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % 64 == 0);
  for (float v : a) CHECK(v == 0.0f);
  a[5] = 2.0f;
  AlignedBuffer<float> b = std::move(a);
  CHECK(b.size() == 37);
  CHECK(b[5] == 2.0f);
  CHECK(a.size() == 0);
  CHECK(a.data() == nullptr);
}

TEST_CASE_TEMPLATE("widen matches calm::to_float bit for bit", T, bf16, f16, float) {
  std::mt19937 rng(1);
  for (std::size_t n = 0; n <= kMaxLen; ++n) {
    Unaligned<T> in(n);
    fill(in.data(), n, rng, -70000.0f, 70000.0f);
    if (n > 3) {  // specials: f16 subnormal, zero, negative zero
      in[0] = from_float<T>(3.0e-6f);
      in[1] = from_float<T>(0.0f);
      in[2] = from_float<T>(-0.0f);
    }
    Unaligned<float> got(n), want(n);
    k::widen(got.data(), in.data(), n);
    k::scalar::widen(want.data(), in.data(), n);
    for (std::size_t i = 0; i < n; ++i) REQUIRE(same_bits(got[i], want[i]));
  }
  const bf16 one_bf{0x3F80};
  const f16 one_h{0x3C00};
  float out = 0.0f;
  k::widen(&out, &one_bf, 1);
  CHECK(out == 1.0f);
  k::widen(&out, &one_h, 1);
  CHECK(out == 1.0f);
}

TEST_CASE("first_non_finite finds the first NaN or Inf at every index, as its scalar twin") {
  std::mt19937 rng(9);
  const float bad[] = {std::nanf(""), INFINITY, -INFINITY};
  for (std::size_t n = 0; n <= kMaxLen; ++n) {
    Unaligned<float> x(n);
    fill(x.data(), n, rng);
    CHECK(k::first_non_finite(x.data(), n) == n);
    CHECK(k::scalar::first_non_finite(x.data(), n) == n);
    if (n > 0) {  // large finite values are finite: x - x stays 0
      x[n - 1] = FLT_MAX;
      CHECK(k::first_non_finite(x.data(), n) == n);
    }
    for (std::size_t at = 0; at < n; ++at) {
      for (float b : bad) {
        const float keep = x[at];
        x[at] = b;
        if (at + 1 < n) x[n - 1] = bad[0];  // a later one does not hide the first
        REQUIRE(k::first_non_finite(x.data(), n) == at);
        REQUIRE(k::scalar::first_non_finite(x.data(), n) == at);
        x[at] = keep;
        if (at + 1 < n) x[n - 1] = 0.5f;
      }
    }
  }
}

TEST_CASE("add, scale are exact, axpy and dot agree with the scalar twin to rounding") {
  std::mt19937 rng(2);
  for (std::size_t n = 0; n <= kMaxLen; ++n) {
    Unaligned<float> x(n), y(n), y2(n);
    fill(x.data(), n, rng);
    fill(y.data(), n, rng);
    std::memcpy(y2.data(), y.data(), n * sizeof(float));
    k::add(y.data(), x.data(), n);
    k::scalar::add(y2.data(), x.data(), n);
    for (std::size_t i = 0; i < n; ++i) REQUIRE(same_bits(y[i], y2[i]));

    k::scale(y.data(), 0.37f, n);
    k::scalar::scale(y2.data(), 0.37f, n);
    for (std::size_t i = 0; i < n; ++i) REQUIRE(same_bits(y[i], y2[i]));

    k::axpy(y.data(), -1.5f, x.data(), n);
    k::scalar::axpy(y2.data(), -1.5f, x.data(), n);
    // fused vs unfused multiply-add: one rounding apart.
    for (std::size_t i = 0; i < n; ++i) REQUIRE(std::fabs(y[i] - y2[i]) <= 4 * FLT_EPSILON);

    float abs_sum = 0.0f;
    for (std::size_t i = 0; i < n; ++i) abs_sum += std::fabs(x[i] * y[i]);
    const float d = k::dot(x.data(), y.data(), n);
    REQUIRE(std::fabs(d - k::scalar::dot(x.data(), y.data(), n)) <= sum_tolerance(n, abs_sum));
  }
  const float a[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
  CHECK(k::dot(a, a, 20) == 2870.0f);  // sum of squares 1..20
}

TEST_CASE("swiglu") {
  std::mt19937 rng(3);
  for (std::size_t n = 0; n <= kMaxLen; ++n) {
    Unaligned<float> g(n), g2(n), up(n);
    fill(g.data(), n, rng, -12.0f, 12.0f);
    fill(up.data(), n, rng);
    std::memcpy(g2.data(), g.data(), n * sizeof(float));
    k::swiglu(g.data(), up.data(), n);
    k::scalar::swiglu(g2.data(), up.data(), n);
    // xsimd::exp vs std::exp: a few ulp; a division and a product add two roundings.
    for (std::size_t i = 0; i < n; ++i) {
      REQUIRE(std::fabs(g[i] - g2[i]) <= 8 * FLT_EPSILON * std::fabs(g2[i]) + 1e-30f);
    }
  }
  float gate[] = {0.0f, 1.0f, -100.0f};
  const float up[] = {5.0f, 2.0f, 1.0f};
  k::swiglu(gate, up, 3);
  CHECK(gate[0] == 0.0f);
  CHECK(gate[1] == doctest::Approx(2.0 / (1.0 + std::exp(-1.0))).epsilon(1e-6));
  CHECK(std::fabs(gate[2]) < 1e-30f);  // silu(-100) ~ -3.7e-42
}

TEST_CASE("rmsnorm, also in place") {
  std::mt19937 rng(4);
  for (std::size_t n = 0; n <= kMaxLen; ++n) {
    Unaligned<float> x(n), w(n), out(n), want(n);
    fill(x.data(), n, rng, -3.0f, 3.0f);
    fill(w.data(), n, rng);
    k::rmsnorm(out.data(), x.data(), w.data(), n, 1e-5f);
    k::scalar::rmsnorm(want.data(), x.data(), w.data(), n, 1e-5f);
    // The mean of squares is summed in another order: relative error ~n*eps.
    for (std::size_t i = 0; i < n; ++i) {
      REQUIRE(std::fabs(out[i] - want[i]) <= sum_tolerance(n, std::fabs(want[i])) + 4 * FLT_EPSILON * std::fabs(want[i]));
    }
    k::rmsnorm(x.data(), x.data(), w.data(), n, 1e-5f);  // aliasing out == x
    for (std::size_t i = 0; i < n; ++i) REQUIRE(same_bits(x[i], out[i]));
  }
  // Hand: x = (3, 4): mean(x^2) = 12.5, rms = 3.5355339; w = (1, 2).
  const float x[] = {3.0f, 4.0f}, w[] = {1.0f, 2.0f};
  float out[2];
  k::rmsnorm(out, x, w, 2, 0.0f);
  CHECK(out[0] == doctest::Approx(0.84852814).epsilon(1e-6));
  CHECK(out[1] == doctest::Approx(2.26274170).epsilon(1e-6));
}

TEST_CASE("rope and rope_table") {
  std::mt19937 rng(5);
  for (std::size_t head_dim = 0; head_dim <= kMaxLen + 1; head_dim += 2) {
    const std::size_t n_heads = 3;
    std::vector<float> cos(head_dim / 2 + 1), sin(head_dim / 2 + 1);
    k::rope_table(cos.data(), sin.data(), head_dim, 17, 10000.0f);
    Unaligned<float> v(n_heads * head_dim), v2(n_heads * head_dim);
    fill(v.data(), n_heads * head_dim, rng);
    std::memcpy(v2.data(), v.data(), n_heads * head_dim * sizeof(float));
    k::rope(v.data(), n_heads, head_dim, cos.data(), sin.data());
    k::scalar::rope(v2.data(), n_heads, head_dim, cos.data(), sin.data());
    // Scalar may be contracted into FMAs by the compiler: two roundings of values <= ~2.
    for (std::size_t i = 0; i < n_heads * head_dim; ++i) REQUIRE(std::fabs(v[i] - v2[i]) <= 8 * FLT_EPSILON);
  }
  // Hand: head_dim 4, theta 10000, pos 1: inv_freq = (1, 0.01).
  float c[2], s[2];
  k::rope_table(c, s, 4, 1, 10000.0f);
  CHECK(c[0] == doctest::Approx(std::cos(1.0)).epsilon(1e-7));
  CHECK(s[0] == doctest::Approx(std::sin(1.0)).epsilon(1e-7));
  CHECK(c[1] == doctest::Approx(std::cos(0.01)).epsilon(1e-7));
  CHECK(s[1] == doctest::Approx(std::sin(0.01)).epsilon(1e-6));
  k::rope_table(c, s, 4, 0, 10000.0f);
  CHECK(c[0] == 1.0f);
  CHECK(s[1] == 0.0f);
  // Rotation by 90 degrees: (a, b) -> (-b, a) pairs j with j + head_dim/2.
  float v[] = {1.0f, 2.0f, 3.0f, 4.0f};
  const float cz[] = {0.0f, 0.0f}, sz[] = {1.0f, 1.0f};
  k::rope(v, 1, 4, cz, sz);
  CHECK(v[0] == -3.0f);
  CHECK(v[1] == -4.0f);
  CHECK(v[2] == 1.0f);
  CHECK(v[3] == 2.0f);
  CHECK_THROWS_AS(k::rope(v, 1, 3, cz, sz), calm::Error);
}

TEST_CASE("softmax") {
  std::mt19937 rng(6);
  for (std::size_t n = 0; n <= kMaxLen; ++n) {
    Unaligned<float> x(n), x2(n);
    fill(x.data(), n, rng, -20.0f, 20.0f);
    std::memcpy(x2.data(), x.data(), n * sizeof(float));
    k::softmax(x.data(), n);
    k::scalar::softmax(x2.data(), n);
    float total = 0.0f;
    for (std::size_t i = 0; i < n; ++i) {
      // exp to a few ulp, the normaliser summed in another order (~n eps).
      REQUIRE(std::fabs(x[i] - x2[i]) <= sum_tolerance(n, x2[i]) + 8 * FLT_EPSILON * x2[i]);
      total += x[i];
    }
    if (n > 0) REQUIRE(std::fabs(total - 1.0f) <= sum_tolerance(n, 1.0f) + 8 * FLT_EPSILON);
  }
  float a[] = {0.0f, std::log(3.0f)};
  k::softmax(a, 2);
  CHECK(a[0] == doctest::Approx(0.25).epsilon(1e-6));
  CHECK(a[1] == doctest::Approx(0.75).epsilon(1e-6));
  float big[] = {1000.0f, 1000.0f, -1000.0f};  // no overflow: the max is subtracted
  k::softmax(big, 3);
  CHECK(big[0] == 0.5f);
  CHECK(big[1] == 0.5f);
  CHECK(big[2] == 0.0f);
}

TEST_CASE("top_k: the k largest by a full sort, lower index first on ties, NaN last") {
  std::mt19937 rng(17);
  std::uniform_int_distribution<int> small(-3, 3);  // many ties
  for (std::size_t n = 1; n <= 70; ++n) {
    for (std::size_t kk : {std::size_t{1}, std::size_t{2}, std::size_t{5}, n}) {
      if (kk > n) continue;
      for (int trial = 0; trial < 6; ++trial) {
        std::vector<float> x(n);
        for (float& v : x) v = trial % 2 ? static_cast<float>(small(rng)) : std::uniform_real_distribution<float>(-1, 1)(rng);
        if (trial == 5) x[n / 2] = std::nanf("");
        std::vector<std::uint32_t> order(n);
        for (std::size_t i = 0; i < n; ++i) order[i] = static_cast<std::uint32_t>(i);
        const auto key = [&](std::uint32_t i) { return std::isnan(x[i]) ? -INFINITY : x[i]; };
        std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) { return key(a) > key(b); });
        std::vector<std::uint32_t> want(order.begin(), order.begin() + static_cast<long>(kk));
        std::sort(want.begin(), want.end());
        std::vector<std::uint32_t> got(kk);
        k::top_k(x.data(), n, kk, got.data());
        REQUIRE(got == want);
      }
    }
  }
  const float x[] = {0.5f, 2.0f, -1.0f, 2.0f, 3.0f};
  std::uint32_t out[3];
  k::top_k(x, 5, 3, out);
  CHECK(out[0] == 1);  // 2.0 at index 1 before the tie at 3, which is left out
  CHECK(out[1] == 3);
  CHECK(out[2] == 4);
  k::top_k(x, 5, 2, out);
  CHECK(out[0] == 1);
  CHECK(out[1] == 4);
}

TEST_CASE("argmax and top2 match the scalar twin exactly, ties included") {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> small(-4, 4);  // many ties
  for (std::size_t n = 1; n <= kMaxLen; ++n) {
    for (int trial = 0; trial < 20; ++trial) {
      Unaligned<float> x(n);
      for (std::size_t i = 0; i < n; ++i) x[i] = trial % 2 ? static_cast<float>(small(rng)) : std::uniform_real_distribution<float>(-1, 1)(rng);
      REQUIRE(k::argmax(x.data(), n) == k::scalar::argmax(x.data(), n));
      if (n >= 2) {
        const k::Top2 got = k::top2(x.data(), n), want = k::scalar::top2(x.data(), n);
        REQUIRE(got.i1 == want.i1);
        REQUIRE(got.i2 == want.i2);
        REQUIRE(got.v1 == want.v1);
        REQUIRE(got.v2 == want.v2);
      }
    }
  }
  const float x[] = {1.0f, 3.0f, 3.0f, 2.0f};
  CHECK(k::argmax(x, 4) == 1);
  const k::Top2 t = k::top2(x, 4);
  CHECK(t.i1 == 1);
  CHECK(t.i2 == 2);
  CHECK(t.v1 == 3.0f);
  const float y[] = {-1.0f, -5.0f, 7.0f};
  const k::Top2 u = k::top2(y, 3);
  CHECK(u.i1 == 2);
  CHECK(u.i2 == 0);
  CHECK(u.v2 == -1.0f);
}

TEST_CASE("cosine") {
  std::mt19937 rng(8);
  for (std::size_t n = 0; n <= kMaxLen; ++n) {
    Unaligned<float> a(n), b(n);
    fill(a.data(), n, rng);
    fill(b.data(), n, rng);
    const float got = k::cosine(a.data(), b.data(), n), want = k::scalar::cosine(a.data(), b.data(), n);
    // Each of the three sums is off by ~n eps relative to its absolute sum, all <= norms.
    REQUIRE(std::fabs(got - want) <= 3 * sum_tolerance(n, 1.0f) + 8 * FLT_EPSILON);
  }
  const float a[] = {1, 0, 0}, b[] = {0, 2, 0}, c[] = {2, 0, 0}, z[] = {0, 0, 0};
  CHECK(k::cosine(a, b, 3) == 0.0f);
  CHECK(k::cosine(a, c, 3) == doctest::Approx(1.0));
  CHECK(k::cosine(a, z, 3) == 0.0f);
  CHECK(k::cosine(z, z, 3) == 0.0f);
}

TEST_CASE_TEMPLATE("matvec matches the scalar twin, 1 and 2 threads agree bit for bit", T, float, bf16, f16) {
  std::mt19937 rng(9);
  calm::ThreadPool pool(2);
  for (std::size_t rows = 0; rows <= 9; ++rows) {
    for (std::size_t cols = 0; cols <= kMaxLen; ++cols) {
      Unaligned<T> w(rows * cols);
      Unaligned<float> x(cols), y(rows), y2(rows), want(rows);
      fill(w.data(), rows * cols, rng);
      fill(x.data(), cols, rng);
      k::matvec(y.data(), w.data(), x.data(), rows, cols);
      k::matvec(y2.data(), w.data(), x.data(), rows, cols, &pool);
      k::scalar::matvec(want.data(), w.data(), x.data(), rows, cols);
      for (std::size_t r = 0; r < rows; ++r) {
        float abs_sum = 0.0f;
        for (std::size_t c = 0; c < cols; ++c) abs_sum += std::fabs(calm::to_float(w[r * cols + c]) * x[c]);
        REQUIRE(std::fabs(y[r] - want[r]) <= sum_tolerance(cols, abs_sum));
        REQUIRE(same_bits(y[r], y2[r]));
      }
    }
  }
  // Hand: W = [[1, 2], [3, 4], [0.5, -1]], x = (1, -1) -> (-1, -1, 1.5); all exact in bf16/f16.
  const T w[] = {from_float<T>(1), from_float<T>(2), from_float<T>(3), from_float<T>(4), from_float<T>(0.5f), from_float<T>(-1)};
  const float x[] = {1.0f, -1.0f};
  float y[3];
  k::matvec(y, w, x, 3, 2);
  CHECK(y[0] == -1.0f);
  CHECK(y[1] == -1.0f);
  CHECK(y[2] == 1.5f);
}

TEST_CASE_TEMPLATE("matvec_gather gives each listed row the bits of matvec, the scalar twin agrees", T, float, bf16, f16) {
  std::mt19937 rng(13);
  for (std::size_t cols : {std::size_t{1}, std::size_t{31}, std::size_t{64}, std::size_t{192}, kMaxLen}) {
    CAPTURE(cols);
    const std::size_t rows = 23;
    Unaligned<T> w(rows * cols);
    Unaligned<float> x(cols), all(rows);
    fill(w.data(), rows * cols, rng);
    fill(x.data(), cols, rng);
    k::matvec(all.data(), w.data(), x.data(), rows, cols);
    // Any order, repeats, the first and the last row.
    const std::vector<std::uint32_t> pick = {22, 0, 5, 5, 17, 1, 21, 9};
    std::vector<float> got(pick.size()), want(pick.size());
    k::matvec_gather(got.data(), w.data(), x.data(), pick, cols);
    k::scalar::matvec_gather(want.data(), w.data(), x.data(), pick, cols);
    for (std::size_t i = 0; i < pick.size(); ++i) {
      REQUIRE(same_bits(got[i], all[pick[i]]));
      float abs_sum = 0.0f;
      for (std::size_t c = 0; c < cols; ++c) abs_sum += std::fabs(calm::to_float(w[pick[i] * cols + c]) * x[c]);
      REQUIRE(std::fabs(got[i] - want[i]) <= sum_tolerance(cols, abs_sum));
    }
  }
  k::matvec_gather(static_cast<float*>(nullptr), static_cast<const T*>(nullptr), nullptr, {}, 8);  // no rows: nothing read
}

TEST_CASE_TEMPLATE("segmented matvec gives each segment the bits of its own matvec, for 1 and 2 threads", T, float, bf16, f16) {
  std::mt19937 rng(11);
  calm::ThreadPool pool(2);
  // Segment row counts with short last groups (rows % 4 != 0) between full ones; cols past the
  // 2 KiB prefetch distance too, so the stream crosses into the next group and segment.
  const std::vector<std::vector<std::size_t>> layouts = {{0}, {5}, {8, 3}, {3, 0, 9, 4}, {1, 1, 1}};
  for (const auto& layout : layouts) {
    for (std::size_t cols : {std::size_t{1}, std::size_t{33}, std::size_t{kMaxLen}, std::size_t{1100}, std::size_t{2053}}) {
      std::vector<Unaligned<T>> ws;
      std::vector<Unaligned<float>> ys, ys2, wants;
      std::vector<k::MatvecSegment<T>> segs, segs2;
      Unaligned<float> x(cols);
      fill(x.data(), cols, rng);
      ws.reserve(layout.size()), ys.reserve(layout.size()), ys2.reserve(layout.size()), wants.reserve(layout.size());
      for (std::size_t rows : layout) {
        ws.emplace_back(rows * cols);
        fill(ws.back().data(), rows * cols, rng);
        ys.emplace_back(rows), ys2.emplace_back(rows), wants.emplace_back(rows);
        segs.push_back({ys.back().data(), ws.back().data(), rows});
        segs2.push_back({ys2.back().data(), ws.back().data(), rows});
      }
      k::matvec(std::span<const k::MatvecSegment<T>>(segs), x.data(), cols);
      k::matvec(std::span<const k::MatvecSegment<T>>(segs2), x.data(), cols, &pool);
      for (std::size_t s = 0; s < layout.size(); ++s) {
        // Reference: the single-matrix matvec, itself checked against the scalar twin above.
        k::matvec(wants[s].data(), ws[s].data(), x.data(), layout[s], cols);
        for (std::size_t r = 0; r < layout[s]; ++r) {
          REQUIRE(same_bits(ys[s][r], wants[s][r]));
          REQUIRE(same_bits(ys2[s][r], wants[s][r]));
        }
      }
    }
  }
  // Hand: segments [[1, 2]] and [[3, 4], [0.5, -1]] with x = (1, -1) -> (-1) and (-1, 1.5).
  const T w0[] = {from_float<T>(1), from_float<T>(2)};
  const T w1[] = {from_float<T>(3), from_float<T>(4), from_float<T>(0.5f), from_float<T>(-1)};
  const float x[] = {1.0f, -1.0f};
  float y0[1], y1[2], s0[1], s1[2];
  const k::MatvecSegment<T> hand[] = {{y0, w0, 1}, {y1, w1, 2}};
  k::matvec(std::span<const k::MatvecSegment<T>>(hand), x, 2);
  const k::MatvecSegment<T> hand_scalar[] = {{s0, w0, 1}, {s1, w1, 2}};
  k::scalar::matvec(std::span<const k::MatvecSegment<T>>(hand_scalar), x, 2);
  CHECK(y0[0] == -1.0f);
  CHECK(y1[0] == -1.0f);
  CHECK(y1[1] == 1.5f);
  CHECK(s0[0] == -1.0f);
  CHECK(s1[0] == -1.0f);
  CHECK(s1[1] == 1.5f);
}

TEST_CASE_TEMPLATE("matmul matches the scalar twin, 1 and 2 threads agree bit for bit", T, float, bf16, f16) {
  std::mt19937 rng(10);
  calm::ThreadPool pool(2);
  for (std::size_t n : {0u, 1u, 3u, 4u, 5u, 9u}) {
    for (std::size_t rows : {0u, 1u, 4u, 7u, 13u}) {
      for (std::size_t cols = 0; cols <= kMaxLen; cols += (cols < 40 ? 1 : 3)) {
        Unaligned<T> w(rows * cols);
        Unaligned<float> x(n * cols), y(n * rows), y2(n * rows), want(n * rows);
        fill(w.data(), rows * cols, rng);
        fill(x.data(), n * cols, rng);
        k::matmul(y.data(), w.data(), x.data(), n, rows, cols);
        k::matmul(y2.data(), w.data(), x.data(), n, rows, cols, &pool);
        k::scalar::matmul(want.data(), w.data(), x.data(), n, rows, cols);
        for (std::size_t t = 0; t < n; ++t) {
          for (std::size_t r = 0; r < rows; ++r) {
            float abs_sum = 0.0f;
            for (std::size_t c = 0; c < cols; ++c) abs_sum += std::fabs(calm::to_float(w[r * cols + c]) * x[t * cols + c]);
            float tol = sum_tolerance(cols, abs_sum);
#if defined(__AVX512BF16__)
            // bf16 weights take the AVX512-BF16 path: activations are rounded to bf16
            // (relative error <= 2^-9 per product).
            if (std::is_same_v<T, bf16>) tol += abs_sum * (1.0f / 256.0f);
#endif
            REQUIRE(std::fabs(y[t * rows + r] - want[t * rows + r]) <= tol);
            REQUIRE(same_bits(y[t * rows + r], y2[t * rows + r]));
          }
        }
      }
    }
  }
}

TEST_CASE("attention with grouped-query heads") {
  std::mt19937 rng(11);
  calm::ThreadPool pool(2);
  for (std::size_t n_pos : {0u, 1u, 2u, 7u, 33u}) {
    for (std::size_t head_dim : {1u, 8u, 16u, 19u, 64u}) {
      const std::size_t n_heads = 4, n_kv = 2;
      Unaligned<float> q(n_heads * head_dim), kc(n_pos * n_kv * head_dim), vc(n_pos * n_kv * head_dim);
      fill(q.data(), n_heads * head_dim, rng, -2, 2);
      fill(kc.data(), n_pos * n_kv * head_dim, rng, -2, 2);
      fill(vc.data(), n_pos * n_kv * head_dim, rng);
      std::vector<float> out(n_heads * head_dim), out2(out.size()), want(out.size());
      std::vector<float> sc(n_heads * n_pos + 1), sc2(sc.size());
      k::attention(out.data(), q.data(), kc.data(), vc.data(), n_pos, n_heads, n_kv, head_dim, sc.data());
      k::attention(out2.data(), q.data(), kc.data(), vc.data(), n_pos, n_heads, n_kv, head_dim, sc2.data(), &pool);
      k::scalar::attention(want.data(), q.data(), kc.data(), vc.data(), n_pos, n_heads, n_kv, head_dim, sc.data());
      for (std::size_t i = 0; i < out.size(); ++i) {
        // Convex combination of values in [-1, 1]; scores within ~1e-6 relative.
        REQUIRE(std::fabs(out[i] - want[i]) <= 1e-5f);
        REQUIRE(same_bits(out[i], out2[i]));
      }
    }
  }
  // Hand: 2 positions, head_dim 1, q = 0 -> uniform weights; heads 0,1 read kv 0; heads 2,3 kv 1.
  const float q[] = {0, 0, 0, 0};
  const float kc[] = {1, 2, 3, 4};     // (pos, kv, dim)
  const float vc[] = {10, 20, 30, 40};
  float out[4], sc[8];
  k::attention(out, q, kc, vc, 2, 4, 2, 1, sc);
  CHECK(out[0] == doctest::Approx(20.0));
  CHECK(out[1] == doctest::Approx(20.0));
  CHECK(out[2] == doctest::Approx(30.0));
  CHECK(out[3] == doctest::Approx(30.0));
  CHECK_THROWS_AS(k::attention(out, q, kc, vc, 2, 3, 2, 1, sc), calm::Error);
}

namespace {

// matvec_batch against per-token matvec, both on architecture Arch: bitwise, for 1 and 2 threads.
template <class Arch, class T>
void check_matvec_batch_bits(std::mt19937& rng, calm::ThreadPool& pool) {
  for (std::size_t n : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{4},
                        std::size_t{5}, std::size_t{8}, std::size_t{9}}) {
    for (std::size_t rows = 0; rows <= 9; ++rows) {
      for (std::size_t cols : {std::size_t{0}, std::size_t{1}, std::size_t{7}, kWidth,
                               2 * kWidth + 3, std::size_t{33}, std::size_t{64}, kMaxLen,
                               std::size_t{1100}}) {
        Unaligned<T> w(rows * cols);
        Unaligned<float> x(n * cols), y(n * rows), y2(n * rows), want(rows);
        fill(w.data(), rows * cols, rng);
        fill(x.data(), n * cols, rng);
        k::matvec_batch<Arch>(y.data(), w.data(), x.data(), n, rows, cols);
        k::matvec_batch<Arch>(y2.data(), w.data(), x.data(), n, rows, cols, &pool);
        for (std::size_t t = 0; t < n; ++t) {
          k::matvec<Arch>(want.data(), w.data(), x.data() + t * cols, rows, cols);
          for (std::size_t r = 0; r < rows; ++r) {
            CAPTURE(n);
            CAPTURE(rows);
            CAPTURE(cols);
            CAPTURE(t);
            CAPTURE(r);
            REQUIRE(same_bits(y[t * rows + r], want[r]));
            REQUIRE(same_bits(y2[t * rows + r], want[r]));
          }
        }
      }
    }
  }
}

}  // namespace

TEST_CASE_TEMPLATE("matvec_batch gives each token the bits of its own matvec, 1 and 2 threads", T, float, bf16, f16) {
  std::mt19937 rng(13);
  calm::ThreadPool pool(2);
  check_matvec_batch_bits<xsimd::default_arch, T>(rng, pool);
#if defined(__AVX2__) && defined(__FMA__)
  check_matvec_batch_bits<xsimd::fma3<xsimd::avx2>, T>(rng, pool);  // the AVX2 hosts' path
#endif
  // And the scalar twin: one matvec per token.
  const T w[] = {from_float<T>(1), from_float<T>(2), from_float<T>(3), from_float<T>(4)};
  const float x[] = {1.0f, -1.0f, 0.5f, 2.0f};  // two tokens
  float y[4], want[4];
  k::matvec_batch(y, w, x, 2, 2, 2);
  k::scalar::matvec_batch(want, w, x, 2, 2, 2);
  for (int i = 0; i < 4; ++i) CHECK(y[i] == want[i]);
  CHECK(y[0] == -1.0f);
  CHECK(y[3] == 9.5f);
}
