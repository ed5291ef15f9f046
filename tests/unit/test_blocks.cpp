// The block-format kernels (kernels/blocks.hpp) over every codec (q8_0, q4_0): matvec against
// the exact product of the dequantized weights and against the scalar twin, over rows, cols
// and misalignment; the same bits for any thread count, segmenting, batch size and gather; the
// row dequantization exact; and the prefill (matmul_blocks: f32 panels and tiles, and on AMX-BF16
// the weights dequantized to bf16 on tiles) against the exact product of what each path
// multiplies, within f32 rounding, bitwise across thread counts.
#include <calm/core/thread_pool.hpp>
#include <calm/kernels/q4_0.hpp>
#include <calm/kernels/blocks.hpp>
#include <calm/kernels/q8_0.hpp>

#include <doctest/doctest.h>

#include "unit/kernel_test_support.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <vector>

namespace k = calm::kernels;
using calm::test::random_floats;

namespace {

// A (rows, cols) matrix quantized with codec C's format.
template <class C>
struct Quantized {
  std::size_t rows, cols;
  std::vector<typename C::unit> q;
  std::vector<float> d;
  Quantized(const std::vector<float>& w, std::size_t r, std::size_t c)
      : rows(r), cols(c), q(r * (c / 32) * C::units), d(r * (c / 32)) {
    for (std::size_t i = 0; i < r; ++i) {
      typename C::unit* qi = q.data() + i * (c / 32) * C::units;
      float* di = d.data() + i * (c / 32);
      if constexpr (std::is_same_v<C, k::Q8Codec>)
        REQUIRE(k::quantize_row_q8_0(qi, di, w.data() + i * c, c));
      else
        REQUIRE(k::quantize_row_q4_0(qi, di, w.data() + i * c, c));
    }
  }
  double weight(std::size_t r, std::size_t c) const {
    const std::size_t b = (r * cols + c) / 32;
    return double(d[b]) * C::weight(q.data() + b * C::units, c % 32);
  }
  k::BlockSegment<C> segment(float* y) const { return {y, q.data(), d.data(), rows}; }
  // x as the decode kernels see it: itself, or dequantized from int8 blocks for a codec that
  // quantizes x.
  static std::vector<float> seen(const float* x, std::size_t n, std::size_t cols) {
    std::vector<float> out(x, x + n * cols);
    if constexpr (C::quantizes_x) {
      std::vector<std::int8_t> xq(n * cols);
      std::vector<float> dx(n * cols / 32);
      std::vector<std::int32_t> kk(8 * dx.size());
      REQUIRE(k::quantize_x_blocks(xq.data(), dx.data(), kk.data(), x, n, cols, C::x_offset));
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = dx[i / 32] * float(xq[i]);
    }
    return out;
  }
  void matvec(float* y, const float* x, calm::ThreadPool* pool) const {
    const k::BlockSegment<C> s = segment(y);
    k::matvec_blocks<C>(std::span<const k::BlockSegment<C>>(&s, 1), x, cols, pool);
  }
};

}  // namespace

TEST_CASE_TEMPLATE("block matvec against the exact product and the scalar twin", C, k::Q8Codec,
                   k::Q4Codec) {
  for (std::size_t rows : {0u, 1u, 2u, 3u, 4u, 5u, 7u, 8u, 9u, 13u}) {
    for (std::size_t cols : {32u, 64u, 96u, 160u, 256u, 2080u, 4096u}) {
      CAPTURE(rows);
      CAPTURE(cols);
      const Quantized<C> m(random_floats(rows * cols, 3, 0.05f), rows, cols);
      const std::vector<float> xs = random_floats(cols + 1, 5);
      const float* x = xs.data() + 1;  // unaligned
      std::vector<float> y(rows), ys(rows);
      m.matvec(y.data(), x, nullptr);
      k::scalar::matvec_blocks<C>(ys.data(), m.q.data(), m.d.data(), x, rows, cols);
      const std::vector<float> xk = Quantized<C>::seen(x, 1, cols);
      for (std::size_t r = 0; r < rows; ++r) {
        // The dequantized weights' dot product with x as the kernel sees it, in double; and
        // with x itself, which an int8 x misses by at most dx / 2 per element.
        double exact = 0, mag = 0, exact_x = 0, x_error = 0;
        for (std::size_t c = 0; c < cols; ++c) {
          exact += m.weight(r, c) * xk[c];
          mag += std::fabs(m.weight(r, c) * xk[c]);
          exact_x += m.weight(r, c) * x[c];
          x_error += std::fabs(m.weight(r, c)) * std::fabs(double(xk[c]) - x[c]);
        }
        CHECK(std::fabs(y[r] - exact) <= 1e-6 * mag + 1e-30);
        CHECK(std::fabs(ys[r] - exact) <= 1e-6 * mag + 1e-30);
        CHECK(std::fabs(y[r] - exact_x) <= x_error + 1e-6 * mag + 1e-30);
      }
    }
  }
}

TEST_CASE_TEMPLATE("block kernels: the same bits for any thread count, segmenting, batch size and gather",
                   C, k::Q8Codec, k::Q4Codec) {
  const std::size_t cols = 2048, rows_a = 37, rows_b = 64, rows_c = 6, n = 9;
  const Quantized<C> a(random_floats(rows_a * cols, 21, 0.05f), rows_a, cols);
  const Quantized<C> b(random_floats(rows_b * cols, 22, 0.05f), rows_b, cols);
  const Quantized<C> c(random_floats(rows_c * cols, 23, 0.05f), rows_c, cols);
  const std::vector<float> xs = random_floats(n * cols, 24);
  std::vector<float> ya(rows_a), yb(rows_b), yc(rows_c);
  a.matvec(ya.data(), xs.data(), nullptr);
  b.matvec(yb.data(), xs.data(), nullptr);
  c.matvec(yc.data(), xs.data(), nullptr);
  for (std::size_t threads : {1u, 2u, 3u, 5u}) {
    CAPTURE(threads);
    calm::ThreadPool pool(threads);
    std::vector<float> y1(rows_a), s1(rows_a), s2(rows_b), s3(rows_c);
    a.matvec(y1.data(), xs.data(), &pool);
    CHECK(std::memcmp(y1.data(), ya.data(), rows_a * 4) == 0);
    const k::BlockSegment<C> segs[] = {a.segment(s1.data()), b.segment(s2.data()), c.segment(s3.data())};
    k::matvec_blocks<C>(std::span<const k::BlockSegment<C>>(segs), xs.data(), cols, &pool);
    CHECK(std::memcmp(s1.data(), ya.data(), rows_a * 4) == 0);
    CHECK(std::memcmp(s2.data(), yb.data(), rows_b * 4) == 0);
    CHECK(std::memcmp(s3.data(), yc.data(), rows_c * 4) == 0);
    for (std::size_t m = 1; m <= n; ++m) {
      CAPTURE(m);
      std::vector<float> yy(m * rows_a), one(rows_a);
      k::matvec_batch_blocks<C>(yy.data(), a.q.data(), a.d.data(), xs.data(), m, rows_a, cols, &pool);
      for (std::size_t t = 0; t < m; ++t) {
        a.matvec(one.data(), xs.data() + t * cols, nullptr);
        CHECK(std::memcmp(yy.data() + t * rows_a, one.data(), rows_a * 4) == 0);
      }
    }
  }
  const std::vector<std::uint32_t> pick = {36, 0, 7, 7, 3};
  std::vector<float> got(pick.size());
  k::matvec_gather_blocks<C>(got.data(), a.q.data(), a.d.data(), xs.data(), pick, cols);
  for (std::size_t i = 0; i < pick.size(); ++i) CHECK(std::memcmp(&got[i], &ya[pick[i]], 4) == 0);
  // The embedding lookup: a row dequantized, d_b * w_j exactly.
  std::vector<float> row(cols);
  k::dequantize_row_blocks<C>(row.data(), a.q.data(), a.d.data(), 5, cols);
  for (std::size_t j = 0; j < cols; ++j) CHECK(double(row[j]) == a.weight(5, j));
}

TEST_CASE("q4_0 decode: x is quantized per block of 32, a non-finite x takes the f32 path") {
  using C = k::Q4Codec;
  const std::size_t rows = 6, cols = 64;
  const Quantized<C> m(random_floats(rows * cols, 41, 0.05f), rows, cols);
  // By hand: x = 1 in block 0 (dx = 1/127, every code 127), 0 in block 1: row r's result is
  // d_{r,0} * (1/127) * 127 * sum_j (q_j - 8) over block 0.
  std::vector<float> x(cols, 0.0f);
  for (std::size_t j = 0; j < 32; ++j) x[j] = 1.0f;
  std::vector<float> y(rows);
  m.matvec(y.data(), x.data(), nullptr);
  for (std::size_t r = 0; r < rows; ++r) {
    double block = 0;
    for (std::size_t j = 0; j < 32; ++j) block += C::weight(m.q.data() + r * 32, j);
    CHECK(y[r] == doctest::Approx(double(m.d[r * 2]) * block).epsilon(1e-6));
  }
  x[40] = std::numeric_limits<float>::quiet_NaN();
  m.matvec(y.data(), x.data(), nullptr);
  for (std::size_t r = 0; r < rows; ++r) CHECK(std::isnan(y[r]));
  x[40] = std::numeric_limits<float>::infinity();
  m.matvec(y.data(), x.data(), nullptr);
  for (std::size_t r = 0; r < rows; ++r) CHECK(!std::isfinite(y[r]));
}

TEST_CASE("block quantizers: scales too small for a finite reciprocal give zero codes, no UB") {
  // 1e-39 is subnormal: max / 127 (or / 8) is nonzero, its reciprocal overflows f32.
  std::vector<float> w(32, 1e-39f);
  w[5] = -1e-39f;
  std::vector<std::int8_t> q8(32, 1), q8s(32, 1);
  float d8 = 1, d8s = 1;
  REQUIRE(k::quantize_row_q8_0(q8.data(), &d8, w.data(), 32));
  REQUIRE(k::scalar::quantize_row_q8_0(q8s.data(), &d8s, w.data(), 32));
  CHECK(d8 == 0.0f);
  CHECK(d8s == 0.0f);
  for (std::size_t j = 0; j < 32; ++j) CHECK((q8[j] == 0 && q8s[j] == 0));
  std::vector<std::uint8_t> q4(16, 0);
  float d4 = 1;
  REQUIRE(k::quantize_row_q4_0(q4.data(), &d4, w.data(), 32));
  CHECK(d4 == 0.0f);
  for (std::size_t j = 0; j < 32; ++j) CHECK(k::Q4Codec::weight(q4.data(), j) == 0.0f);
  std::vector<std::int8_t> xq(32, 1);
  float dx = 0;
  std::vector<std::int32_t> kk(8, 1);
  REQUIRE(k::quantize_x_blocks(xq.data(), &dx, kk.data(), w.data(), 1, 32, 8));
  for (std::size_t j = 0; j < 32; ++j) CHECK(xq[j] == 0);
  CHECK(kk[0] == 0);
}

namespace {

// Switches the AMX kernels off for a scope (and back on, also when a check throws).
struct AmxOff {
  AmxOff() { k::amx::enable(false); }
  ~AmxOff() { k::amx::enable(true); }
  AmxOff(const AmxOff&) = delete;
  AmxOff& operator=(const AmxOff&) = delete;
};

}  // namespace

TEST_CASE_TEMPLATE("matmul_blocks (prefill) against the exact product, within f32 rounding", C,
                   k::Q8Codec, k::Q4Codec) {
  const AmxOff f32_paths;  // AMX-BF16's tiles are checked below
  for (std::size_t n : {1u, 7u, 8u, 9u, 33u}) {  // below and above the tiles' 8 tokens
    for (std::size_t rows : {1u, 5u, 64u, 301u}) {
      for (std::size_t cols : {32u, 64u, 2080u}) {
        CAPTURE(n);
        CAPTURE(rows);
        CAPTURE(cols);
        const Quantized<C> m(random_floats(rows * cols, 31, 0.05f), rows, cols);
        const std::vector<float> x = random_floats(n * cols, 32);
        std::vector<float> y(n * rows), y3(n * rows);
        k::matmul_blocks<C>(y.data(), m.q.data(), m.d.data(), x.data(), n, rows, cols);
        calm::ThreadPool pool(3);
        k::matmul_blocks<C>(y3.data(), m.q.data(), m.d.data(), x.data(), n, rows, cols, &pool);
        CHECK(std::memcmp(y.data(), y3.data(), y.size() * 4) == 0);
        // Tiles (>= 8 tokens) take x in f32; fewer tokens run the decode kernel, which sees x
        // quantized for a codec that quantizes it.
        const std::vector<float> xk = n >= 8 ? x : Quantized<C>::seen(x.data(), n, cols);
        for (std::size_t t = 0; t < n; ++t)
          for (std::size_t r = 0; r < rows; ++r) {
            double exact = 0, mag = 0;
            for (std::size_t c = 0; c < cols; ++c) {
              const double p = m.weight(r, c) * xk[t * cols + c];
              exact += p;
              mag += std::fabs(p);
            }
            CHECK(std::fabs(y[t * rows + r] - exact) <= calm::test::sum_tolerance(cols, float(mag)));
          }
      }
    }
  }
}

#if CALM_AMX_BF16_BUILT
// On AMX-BF16 (n >= kAmxBf16MinTokens) the prefill multiplies bf16(d_b * w_j) by bf16(x) and sums
// in f32: against that exact product (the roundings written out in scalar code) within f32
// rounding, whatever the row and token counts around the 16- and 32-row tiles; bitwise across
// thread counts; and against the unrounded product within the two bf16 roundings (2^-8 per
// product).
TEST_CASE_TEMPLATE("matmul_blocks on AMX-BF16 tiles: the product of the bf16-rounded weights and x", C,
                   k::Q8Codec, k::Q4Codec) {
  if (!k::amx::bf16_usable()) {
    MESSAGE("no AMX-BF16 in this process: matmul_blocks runs the f32 tiles (checked above)");
    return;
  }
  calm::ThreadPool three(3);
  for (std::size_t n : {8u, 9u, 17u, 33u}) {
    for (std::size_t rows : {1u, 5u, 16u, 17u, 33u, 64u, 301u}) {
      for (std::size_t cols : {32u, 64u, 2080u}) {
        CAPTURE(n);
        CAPTURE(rows);
        CAPTURE(cols);
        REQUIRE(k::detail::blocks_on_amx(n, rows));
        const Quantized<C> m(random_floats(rows * cols, 41, 0.05f), rows, cols);
        const std::vector<float> x = random_floats(n * cols, 42);
        std::vector<float> y(n * rows), y3(n * rows);
        k::matmul_blocks<C>(y.data(), m.q.data(), m.d.data(), x.data(), n, rows, cols);
        k::matmul_blocks<C>(y3.data(), m.q.data(), m.d.data(), x.data(), n, rows, cols, &three);
        CHECK(std::memcmp(y.data(), y3.data(), y.size() * 4) == 0);
        for (std::size_t t = 0; t < n; ++t)
          for (std::size_t r = 0; r < rows; ++r) {
            double rounded = 0, exact = 0, mag = 0;
            for (std::size_t c = 0; c < cols; ++c) {
              const float w = static_cast<float>(m.weight(r, c)), xc = x[t * cols + c];
              const double p =
                  double(calm::to_float(calm::to_bf16(w))) * calm::to_float(calm::to_bf16(xc));
              rounded += p;
              exact += double(w) * xc;
              mag += std::fabs(p);
            }
            const float got = y[t * rows + r];
            const float f32_rounding = calm::test::sum_tolerance(cols, float(mag));
            CHECK(std::fabs(got - rounded) <= f32_rounding);
            CHECK(std::fabs(got - exact) <= 0x1p-8 * mag + f32_rounding);
          }
      }
    }
  }
}
#endif
