// Weight formats (formats/): every listed format satisfies the concept, its row accounting
// matches the layout computed by hand, and Linear's methods run exactly the format's kernels:
// f32/f16/bf16 and q8_0 give the same bits through Linear as through the kernels called
// directly (the kernels themselves are tested against scalar twins in test_kernels,
// test_matmul and test_q8_0).
#include <calm/core/thread_pool.hpp>
#include <calm/formats/formats.hpp>
#include <calm/kernels/matmul.hpp>
#include <calm/kernels/matvec.hpp>
#include <calm/kernels/q8_0.hpp>
#include <calm/kernels/q8_0_dot.hpp>

#include <doctest/doctest.h>

#include "unit/kernel_test_support.hpp"

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <string_view>
#include <vector>

namespace f = calm::formats;
namespace k = calm::kernels;
using calm::test::same_bits;

static_assert(f::Format<f::F32> && f::Format<f::F16> && f::Format<f::BF16> && f::Format<f::Q8_0> &&
              f::Format<f::Q4_0>);
static_assert(f::QuantizedFormat<f::Q8_0> && f::QuantizedFormat<f::Q4_0>);
static_assert(!f::QuantizedFormat<f::BF16>);  // nothing is quantized to a dense format

namespace {

// A format that lacks a kernel (no gather) is not a Format.
struct NoGather : f::Dense<float, f::Id::f32> {
  static void matvec_gather() = delete;
};
static_assert(!f::Format<NoGather>);

bool same(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!same_bits(a[i], b[i])) return false;
  return true;
}

// A (rows, cols) matrix of random weights in a dense format, and its q8_0 quantization.
template <class T>
struct Weights {
  std::vector<T> w;
  std::vector<std::int8_t> q;
  std::vector<float> d;
  Weights(std::size_t rows, std::size_t cols, std::uint32_t seed)
      : w(rows * cols), q(rows * cols), d(rows * cols / k::kQ8Block) {
    std::mt19937 rng(seed);
    calm::test::fill(w.data(), w.size(), rng);
    for (std::size_t r = 0; r < rows; ++r)
      REQUIRE(k::quantize_row_q8_0(q.data() + r * cols, d.data() + r * (cols / k::kQ8Block),
                                   w.data() + r * cols, cols));
  }
};

template <class T>
calm::Linear dense(const std::vector<T>& w, std::size_t rows, std::size_t cols) {
  return calm::Linear{{reinterpret_cast<const std::byte*>(w.data()), nullptr, rows, cols},
                      f::dense_id(calm::dtype_of<T>())};
}

calm::Linear q8(const std::vector<std::int8_t>& q, const std::vector<float>& d, std::size_t rows,
                std::size_t cols) {
  return calm::Linear{{reinterpret_cast<const std::byte*>(q.data()), d.data(), rows, cols},
                      f::Id::q8_0};
}

// The rows check_linear gathers (a repeat included).
std::vector<std::uint32_t> picked_rows(std::size_t rows) { return {std::uint32_t(rows - 1), 0, 5, 5}; }

// Every Linear method against the kernels it stands for, bitwise, on one thread and on two.
// direct(which, y, x, n, pool) runs the kernel for one of: 0 matvec, 1 matmul, 2 matvec_batch,
// 3 gather (of picked_rows), 4 row 3.
template <class Direct>
void check_linear(const calm::Linear& lin, Direct direct) {
  const std::size_t rows = lin.rows, cols = lin.cols, n = 9;
  std::mt19937 rng(7);
  std::vector<float> x(n * cols);
  calm::test::fill(x.data(), x.size(), rng);
  calm::ThreadPool two(2);
  for (calm::ThreadPool* pool : {static_cast<calm::ThreadPool*>(nullptr), &two}) {
    CAPTURE(pool != nullptr);
    std::vector<float> a(n * rows), b(n * rows, 1.0f);
    lin.apply(a.data(), x.data(), pool);
    direct(0, b.data(), x.data(), n, pool);
    a.resize(rows), b.resize(rows);
    CHECK(same(a, b));

    a.assign(n * rows, 0.0f), b.assign(n * rows, 1.0f);
    lin.apply_batch(a.data(), x.data(), n, pool);
    direct(1, b.data(), x.data(), n, pool);
    CHECK(same(a, b));

    a.assign(n * rows, 0.0f), b.assign(n * rows, 1.0f);
    lin.apply_rows(a.data(), x.data(), n, pool);
    direct(2, b.data(), x.data(), n, pool);
    CHECK(same(a, b));

    const std::vector<std::uint32_t> picked = picked_rows(rows);
    a.assign(picked.size(), 0.0f), b.assign(picked.size(), 1.0f);
    lin.apply_gather(a.data(), x.data(), picked);
    direct(3, b.data(), x.data(), picked.size(), pool);
    CHECK(same(a, b));

    a.assign(cols, 0.0f), b.assign(cols, 1.0f);
    lin.row(3, a.data());
    direct(4, b.data(), x.data(), 0, pool);
    CHECK(same(a, b));
  }
}

}  // namespace

TEST_CASE("formats: names, ids and the bytes of a row, by hand") {
  CHECK(f::name(f::Id::f32) == "f32");
  CHECK(f::name(f::Id::f16) == "f16");
  CHECK(f::name(f::Id::bf16) == "bf16");
  CHECK(f::name(f::Id::q8_0) == "q8_0");
  CHECK(f::name(f::Id::q4_0) == "q4_0");
  CHECK(f::name(f::Id::bf16_dot) == "bf16_dot");
  CHECK(f::name(f::Id::q8_0_dot) == "q8_0_dot");
  CHECK(f::name(f::Id::q4_0_dot) == "q4_0_dot");
  CHECK(f::dense_id(calm::DType::bf16) == f::Id::bf16);
  CHECK(f::dense_id(calm::DType::f16) == f::Id::f16);
  CHECK(f::dense_id(calm::DType::f32) == f::Id::f32);
  // 64 columns: f32 256 bytes, f16/bf16 128; q8_0 64 quants + 2 blocks x 4-byte scale = 72.
  CHECK(f::row_bytes<f::F32>(64) == 256);
  CHECK(f::row_bytes<f::BF16>(64) == 128);
  CHECK(f::row_bytes<f::Q8_0>(64) == 72);
  CHECK(f::row_bytes<f::Q4_0>(64) == 40);  // 32 bytes of nibbles + 2 scales
  CHECK(f::row_bytes<f::Q8_0Dot>(64) == 72);  // q8_0's blocks
  CHECK(f::row_bytes<f::Q4_0Dot>(64) == 40);  // q4_0's blocks
  calm::Linear lin{{nullptr, nullptr, 10, 64}, f::Id::q8_0};
  CHECK(lin.data_bytes() == 640);
  CHECK(lin.scale_bytes() == 80);
  CHECK(lin.bytes() == 720);
  CHECK(lin.row_bytes() == 72);
  lin.format = f::Id::f16;
  CHECK(lin.bytes() == 1280);
  CHECK(lin.scale_bytes() == 0);
}

TEST_CASE_TEMPLATE("formats: a dense Linear runs kernels::matvec/matmul/... bit for bit", T,
                   float, calm::f16, calm::bf16) {
  const std::size_t rows = 37, cols = 96;  // a short last row group, cols not a vector multiple
  const Weights<T> w(rows, cols, 3);
  const calm::Linear lin = dense(w.w, rows, cols);
  CHECK(lin.bytes() == rows * cols * sizeof(T));
  check_linear(lin, [&](int which, float* y, const float* x, std::size_t n, calm::ThreadPool* p) {
    switch (which) {
      case 0: return k::matvec(y, w.w.data(), x, rows, cols, p);
      case 1: return k::matmul(y, w.w.data(), x, n, rows, cols, p);
      case 2: return k::matvec_batch(y, w.w.data(), x, n, rows, cols, p);
      case 3: return k::matvec_gather(y, w.w.data(), x, picked_rows(rows), cols);
      default:  // row 3, widened exactly
        for (std::size_t c = 0; c < cols; ++c) y[c] = calm::to_float(w.w[3 * cols + c]);
    }
  });
}

TEST_CASE("formats: a q8_0 Linear runs the q8_0 kernels bit for bit") {
  const std::size_t rows = 37, cols = 128;
  const Weights<calm::bf16> w(rows, cols, 4);
  const calm::Linear lin = q8(w.q, w.d, rows, cols);
  const std::int8_t* q = w.q.data();
  const float* d = w.d.data();
  check_linear(lin, [&](int which, float* y, const float* x, std::size_t n, calm::ThreadPool* p) {
    switch (which) {
      case 0: return k::matvec_q8_0(y, q, d, x, rows, cols, p);
      case 1: return k::matmul_q8_0(y, q, d, x, n, rows, cols, p);
      case 2: return k::matvec_batch_q8_0(y, q, d, x, n, rows, cols, p);
      case 3: return k::matvec_gather_q8_0(y, q, d, x, picked_rows(rows), cols);
      default:  // row 3
        return k::dequantize_row_q8_0(y, q + 3 * cols, d + 3 * (cols / k::kQ8Block), cols);
    }
  });
}

TEST_CASE("formats: q8_0_dot's prefill is AMX-BF16 tiles from 16 tokens where it may, else its batch") {
  const std::size_t rows = 37, cols = 128;
  const Weights<calm::bf16> w(rows, cols, 4);
  calm::Linear lin = q8(w.q, w.d, rows, cols);
  lin.format = f::Id::q8_0_dot;
  std::mt19937 rng(9);
  for (std::size_t n : {8u, 15u, 16u, 17u}) {  // around kAmxPrefillMinTokens
    CAPTURE(n);
    std::vector<float> x(n * cols), a(n * rows), b(n * rows, 1.0f);
    calm::test::fill(x.data(), x.size(), rng);
    lin.apply_batch(a.data(), x.data(), n, nullptr);
#if CALM_AMX_BF16_BUILT
    if (n >= f::Q8_0Dot::kAmxPrefillMinTokens && k::detail::blocks_on_amx(n, rows))
      k::detail::matmul_blocks_amx<k::Q8Codec>(b.data(), w.q.data(), w.d.data(), x.data(), n, rows,
                                               cols, nullptr);
    else
#endif
      k::matvec_batch_int8_dot<k::Int8Q8Blocks>(b.data(), w.q.data(), w.d.data(), x.data(), n, rows,
                                                cols);
    CHECK(same(a, b));
  }
}

TEST_CASE("formats: apply_shared_input gives each output's own apply, in every format") {
  const std::size_t cols = 128;
  const Weights<calm::bf16> a(40, cols, 5), b(24, cols, 6), c(8, cols, 7);
  std::vector<float> wf(a.w.size());
  for (std::size_t i = 0; i < wf.size(); ++i) wf[i] = calm::to_float(a.w[i]);
  std::mt19937 rng(8);
  std::vector<float> x(cols);
  calm::test::fill(x.data(), cols, rng);
  calm::ThreadPool pool(2);
  const auto check = [&](const calm::Linear& l1, const calm::Linear& l2, const calm::Linear& l3) {
    for (calm::ThreadPool* p : {static_cast<calm::ThreadPool*>(nullptr), &pool}) {
      std::vector<float> y1(l1.rows), y2(l2.rows), y3(l3.rows);
      std::vector<float> z1(l1.rows), z2(l2.rows), z3(l3.rows);
      calm::apply_shared_input({{l1, y1.data()}, {l2, y2.data()}, {l3, y3.data()}}, x.data(), p);
      l1.apply(z1.data(), x.data(), p);
      l2.apply(z2.data(), x.data(), p);
      l3.apply(z3.data(), x.data(), p);
      CHECK(same(y1, z1));
      CHECK(same(y2, z2));
      CHECK(same(y3, z3));
    }
  };
  SUBCASE("bf16, one pass") { check(dense(a.w, 40, cols), dense(b.w, 24, cols), dense(c.w, 8, cols)); }
  SUBCASE("q8_0, one pass") {
    check(q8(a.q, a.d, 40, cols), q8(b.q, b.d, 24, cols), q8(c.q, c.d, 8, cols));
  }
  SUBCASE("mixed formats: one apply each") {
    check(dense(wf, 40, cols), q8(b.q, b.d, 24, cols), dense(c.w, 8, cols));
  }
}
