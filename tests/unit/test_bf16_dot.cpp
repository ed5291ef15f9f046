// The bf16 dot product (kernels/bf16_dot.hpp, formats/bf16_dot.hpp, WeightFormat::bf16_dot):
// rounding to bf16 against hand-computed bits; every path (AVX512-BF16, its AVX-512 and AVX2
// emulations) bitwise equal to the scalar twin, which is checked against a float64 reading of
// the arithmetic; each row of an n-vector call bitwise the row alone for every n, grouping and
// thread count, denormals included; and a model on it against the float64 reference, its
// perplexity, and speculation and batches still exact.
#include <calm/calm.hpp>
#include <calm/kernels/bf16_dot.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <vector>

#include <doctest/doctest.h>

#include "unit/kernel_test_support.hpp"
#include "unit/quantized_model_checks.hpp"
#include "unit/test_models.hpp"

namespace fs = std::filesystem;
namespace k = calm::kernels;
using calm::bf16;
using calm::kernels::DotPath;

namespace {

std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The paths this build and host can run.
std::vector<DotPath> paths() {
  std::vector<DotPath> p = {DotPath::scalar};
#if defined(__AVX2__) && defined(__FMA__)
  p.push_back(DotPath::avx2);
#endif
#if defined(__AVX512F__)
  p.push_back(DotPath::avx512);
#endif
#if defined(__AVX512BF16__)
  p.push_back(DotPath::avx512bf16);
#endif
  return p;
}

template <class Fn>
void on_path(DotPath p, Fn&& fn) {
  switch (p) {
    case DotPath::scalar: fn.template operator()<DotPath::scalar>(); break;
#if defined(__AVX2__) && defined(__FMA__)
    case DotPath::avx2: fn.template operator()<DotPath::avx2>(); break;
#endif
#if defined(__AVX512F__)
    case DotPath::avx512: fn.template operator()<DotPath::avx512>(); break;
#endif
#if defined(__AVX512BF16__)
    case DotPath::avx512bf16: fn.template operator()<DotPath::avx512bf16>(); break;
#endif
    default: FAIL("path not built");
  }
}

// Random bf16 weights in [-1, 1) with some special values: denormals, tiny and large ones.
std::vector<bf16> weights(std::size_t n, std::mt19937& rng, bool specials) {
  std::vector<bf16> w(n);
  calm::test::fill(w.data(), n, rng);
  if (specials)
    for (std::size_t i = 0; i < n; i += 7) {
      const std::uint16_t s[] = {0x0001, 0x8003, 0x0080, 0x1000, 0x7000, 0x3f80, 0xbf80, 0x0000};
      std::memcpy(&w[i], &s[(i / 7) % 8], 2);
    }
  return w;
}
std::vector<float> inputs(std::size_t n, std::mt19937& rng, bool specials) {
  std::vector<float> x(n);
  std::uniform_real_distribution<float> d(-2.0f, 2.0f);
  for (float& v : x) v = d(rng);
  if (specials)
    for (std::size_t i = 3; i < n; i += 11) {
      const float s[] = {1e-39f, -3e-40f, 1.2e-38f, 1e-20f, 3e10f, 1.00390625f, -0.0f};
      x[i] = s[(i / 11) % 7];
    }
  return x;
}

// Path P's gathered rows (in any order, one twice) and two segments sharing x_0 in one pass
// (pool's threads): each the bits of its row in `alone` (x_0's rows computed alone).
template <DotPath P>
void check_gather_and_segments(const std::vector<bf16>& w, const std::vector<float>& x,
                               std::size_t rows, std::size_t cols, const float* alone,
                               calm::ThreadPool* pool) {
  const std::vector<std::uint32_t> picked = {std::uint32_t(rows - 1), 0, 0, std::uint32_t(rows / 2)};
  std::vector<float> g(picked.size());
  k::matvec_gather_bf16_dot<P>(g.data(), w.data(), x.data(), picked, cols);
  for (std::size_t i = 0; i < picked.size(); ++i) CHECK(bits(g[i]) == bits(alone[picked[i]]));
  std::vector<float> ya(rows), yb(rows);
  const calm::kernels::MatvecSegment<bf16> segs[] = {{ya.data(), w.data(), rows},
                                                     {yb.data(), w.data(), rows}};
  k::matvec_bf16_dot<P>(std::span(segs), x.data(), cols, pool);
  CHECK(std::memcmp(ya.data(), alone, rows * 4) == 0);
  CHECK(std::memcmp(yb.data(), alone, rows * 4) == 0);
}

}  // namespace

TEST_CASE("round_to_bf16: nearest even, denormals to zero, NaN and infinities kept") {
  CHECK(k::round_to_bf16(1.0f) == 0x3f80);
  CHECK(k::round_to_bf16(from_bits(0x3f808000u)) == 0x3f80);  // tie, even below
  CHECK(k::round_to_bf16(from_bits(0x3f818000u)) == 0x3f82);  // tie, even above
  CHECK(k::round_to_bf16(from_bits(0x3f808001u)) == 0x3f81);  // above the tie
  CHECK(k::round_to_bf16(from_bits(0x3f807fffu)) == 0x3f80);  // below the tie
  CHECK(k::round_to_bf16(from_bits(0x7f7fffffu)) == 0x7f80);  // FLT_MAX rounds to +inf
  CHECK(k::round_to_bf16(-std::numeric_limits<float>::infinity()) == 0xff80);
  CHECK(k::round_to_bf16(1e-39f) == 0x0000);   // denormal
  CHECK(k::round_to_bf16(-1e-39f) == 0x8000);  // its sign kept
  CHECK(k::round_to_bf16(from_bits(0x00800000u)) == 0x0080);  // the smallest normal
  const std::uint16_t nan = k::round_to_bf16(std::numeric_limits<float>::quiet_NaN());
  CHECK((nan & 0x7f80) == 0x7f80);
  CHECK((nan & 0x007f) != 0);
  CHECK((k::round_to_bf16(from_bits(0x7f800001u)) & 0x0040) != 0);  // a signalling NaN, quieted
  // The array form (vcvtne2ps2bf16 where built, 32 at a time, then element by element) gives
  // each element's bits: ties, denormals, NaNs, infinities, and random values; lengths with a tail.
  std::mt19937 rng(5);
  std::vector<float> x(32 * 40 + 13);
  std::uniform_real_distribution<float> d(-4.0f, 4.0f);
  const std::uint32_t special[] = {0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f807fffu, 0x7f7fffffu,
                                   0xff800000u, 0x00000001u, 0x80400000u, 0x00800000u, 0x7f800001u,
                                   0xffc00000u, 0x80000000u, 0x007fffffu, 0x33800000u};
  for (std::size_t i = 0; i < x.size(); ++i)
    x[i] = i % 3 == 0 ? from_bits(special[(i / 3) % 14]) : d(rng);
  for (const std::size_t n : {x.size(), std::size_t{31}, std::size_t{64}}) {
    std::vector<std::uint16_t> out(n);
    k::round_to_bf16(out.data(), x.data(), n);
    for (std::size_t i = 0; i < n; ++i) REQUIRE(out[i] == k::round_to_bf16(x[i]));
  }
}

TEST_CASE("the scalar twin computes vdpbf16ps's arithmetic (float64 reading of each step)") {
  // With inputs whose products and partial sums stay normal, each step is two fused
  // multiply-adds of exact products: a float64 evaluation rounded to f32 after each add.
  std::mt19937 rng(5);
  const std::size_t rows = 3, cols = 96;
  const auto w = weights(rows * cols, rng, false);
  const auto x = inputs(cols, rng, false);
  std::vector<float> y(rows);
  k::matvec_bf16_dot<DotPath::scalar>(y.data(), w.data(), x.data(), rows, cols);
  for (std::size_t r = 0; r < rows; ++r) {
    double lanes[16] = {};
    float flanes[16] = {};
    for (std::size_t c = 0; c < cols; c += 32)
      for (int i = 0; i < 16; ++i)
        for (int j : {2 * i + 1, 2 * i}) {
          const double p = double(calm::to_float(w[r * cols + c + j])) *
                           double(calm::to_float(calm::bf16{k::round_to_bf16(x[c + j])}));
          flanes[i] = float(double(flanes[i]) + p);  // one rounding per add
          lanes[i] += p;
        }
    const float s8[8] = {flanes[0] + flanes[8], flanes[1] + flanes[9], flanes[2] + flanes[10],
                         flanes[3] + flanes[11], flanes[4] + flanes[12], flanes[5] + flanes[13],
                         flanes[6] + flanes[14], flanes[7] + flanes[15]};
    const float s4[4] = {s8[0] + s8[4], s8[1] + s8[5], s8[2] + s8[6], s8[3] + s8[7]};
    CHECK(bits(y[r]) == bits((s4[0] + s4[2]) + (s4[1] + s4[3])));
    double exact = 0;
    for (double l : lanes) exact += l;
    CHECK(std::abs(double(y[r]) - exact) <= 1e-5 * (1 + std::abs(exact)));
  }
}

TEST_CASE("bf16 dot: every path gives the scalar twin's bits, rows of a batch are the rows alone") {
  std::mt19937 rng(11);
  calm::ThreadPool two(2);
  for (const bool specials : {false, true}) {
    for (const std::size_t rows : {1u, 3u, 4u, 7u, 37u}) {
      for (const std::size_t cols : {32u, 96u, 2048u + 64u}) {
        CAPTURE(specials);
        CAPTURE(rows);
        CAPTURE(cols);
        const std::size_t n = 9;
        const auto w = weights(rows * cols, rng, specials);
        const auto x = inputs(n * cols, rng, specials);
        std::vector<float> twin(n * rows);
        for (std::size_t t = 0; t < n; ++t)
          k::matvec_bf16_dot<DotPath::scalar>(twin.data() + t * rows, w.data(),
                                              x.data() + t * cols, rows, cols);
        for (const DotPath p : paths()) {
          CAPTURE(int(p));
          on_path(p, [&]<DotPath P>() {
            for (calm::ThreadPool* pool : {static_cast<calm::ThreadPool*>(nullptr), &two}) {
              std::vector<float> one(rows), batch(n * rows);
              k::matvec_bf16_dot<P>(one.data(), w.data(), x.data(), rows, cols, pool);
              CHECK(std::memcmp(one.data(), twin.data(), rows * 4) == 0);
              for (std::size_t m : {1u, 2u, 3u, 4u, 5u, 9u}) {
                CAPTURE(m);
                std::fill(batch.begin(), batch.end(), 0.0f);
                k::matvec_batch_bf16_dot<P>(batch.data(), w.data(), x.data(), m, rows, cols, pool);
                CHECK(std::memcmp(batch.data(), twin.data(), m * rows * 4) == 0);
              }
            }
            check_gather_and_segments<P>(w, x, rows, cols, twin.data(), &two);
          });
        }
      }
    }
  }
}

TEST_CASE("bf16 dot: denormal inputs read as zero and denormal results flush to zero") {
  const std::size_t cols = 32;
  for (const DotPath p : paths()) {
    CAPTURE(int(p));
    on_path(p, [&]<DotPath P>() {
      std::vector<bf16> w(cols);
      std::vector<float> x(cols, 0.0f), y(1);
      const auto set = [&](std::size_t i, std::uint16_t v) { std::memcpy(&w[i], &v, 2); };
      for (std::size_t i = 0; i < cols; ++i) set(i, 0);
      // A denormal weight times a large x: zero, not the denormal's product.
      set(5, 0x0001);
      x[5] = 1e30f;
      k::matvec_bf16_dot<P>(y.data(), w.data(), x.data(), 1, cols);
      CHECK(bits(y[0]) == 0u);
      // Two normal factors whose product is denormal: flushed.
      set(5, 0x0400);  // 2^-119
      x[5] = 1e-10f;   // ~2^-33: the product ~2^-152 is below f32's normal range
      k::matvec_bf16_dot<P>(y.data(), w.data(), x.data(), 1, cols);
      CHECK((bits(y[0]) & 0x7fffffffu) == 0u);
      // Normal products keep their value.
      set(5, 0x3f80);
      x[5] = 3.0f;
      k::matvec_bf16_dot<P>(y.data(), w.data(), x.data(), 1, cols);
      CHECK(y[0] == 3.0f);
    });
  }
}

#if CALM_AMX_BF16_BUILT
// DotPath::amx (AMX-BF16 tiles: the process's arithmetic where it may use them): its bits are
// the tile unit's own, so it is checked for what the exactness of speculation needs -- each row
// of an n-vector call bitwise the row alone, for every n (across 16-vector groups), row count
// (across 16-row tiles and 32-row blocks), thread count, segments and gathered rows -- and
// against the scalar twin within the tolerance of two f32 sums of the same exact products
// (each at most cols / 2 roundings of 2^-24 of the running sum of |w x|).
TEST_CASE("bf16 dot on AMX tiles: every row of a batch is the row alone, near the twin") {
  if (!k::amx::bf16_usable()) {
    MESSAGE("no AMX-BF16 in this process: DotPath::host is the vdpbf16ps chain (checked above)");
    return;
  }
  std::mt19937 rng(23);
  calm::ThreadPool two(2), three(3);
  std::size_t differ = 0, outputs = 0;
  for (const bool specials : {false, true}) {
    for (const std::size_t rows : {1u, 15u, 16u, 17u, 33u, 64u, 70u}) {
      for (const std::size_t cols : {32u, 96u, 2048u + 64u}) {
        CAPTURE(specials);
        CAPTURE(rows);
        CAPTURE(cols);
        const std::size_t n = 35;
        const auto w = weights(rows * cols, rng, specials);
        const auto x = inputs(n * cols, rng, specials);
        std::vector<float> alone(n * rows), twin(rows);
        for (std::size_t t = 0; t < n; ++t) {
          float* a = alone.data() + t * rows;
          k::matvec_bf16_dot<DotPath::amx>(a, w.data(), x.data() + t * cols, rows, cols);
          // The default path is the tiles here.
          std::vector<float> host(rows);
          k::matvec_bf16_dot(host.data(), w.data(), x.data() + t * cols, rows, cols, &two);
          REQUIRE(std::memcmp(host.data(), a, rows * 4) == 0);
          k::matvec_bf16_dot<DotPath::scalar>(twin.data(), w.data(), x.data() + t * cols, rows, cols);
          for (std::size_t r = 0; r < rows; ++r) {
            double abs_sum = 0;
            for (std::size_t c = 0; c < cols; ++c)
              abs_sum += std::fabs(double(calm::to_float(w[r * cols + c])) *
                                   double(calm::to_float(calm::bf16{k::round_to_bf16(x[t * cols + c])})));
            if (abs_sum > 1e38) continue;  // overflows f32 in some order: no bound to state
            REQUIRE(std::fabs(double(a[r]) - double(twin[r])) <= double(cols) * 0x1p-24 * abs_sum + 1e-30);
            differ += bits(a[r]) != bits(twin[r]);
            ++outputs;
          }
        }
        for (calm::ThreadPool* pool : {static_cast<calm::ThreadPool*>(nullptr), &two, &three})
          for (const std::size_t m : {1u, 2u, 8u, 15u, 16u, 17u, 32u, 35u}) {
            CAPTURE(m);
            std::vector<float> batch(m * rows, -1.0f);
            k::matvec_batch_bf16_dot<DotPath::amx>(batch.data(), w.data(), x.data(), m, rows, cols, pool);
            REQUIRE(std::memcmp(batch.data(), alone.data(), m * rows * 4) == 0);
          }
        check_gather_and_segments<DotPath::amx>(w, x, rows, cols, alone.data(), &three);
      }
    }
  }
  MESSAGE("AMX-BF16 against the vdpbf16ps chain: " << differ << " of " << outputs << " outputs differ in bits");
  // Switched off, the default path is the chain again: the twin's bits.
  const std::size_t rows = 20, cols = 64;
  const auto w = weights(rows * cols, rng, false);
  const auto x = inputs(cols, rng, false);
  std::vector<float> host(rows), twin(rows);
  k::amx::enable(false);
  k::matvec_bf16_dot(host.data(), w.data(), x.data(), rows, cols);
  k::amx::enable(true);
  k::matvec_bf16_dot<DotPath::scalar>(twin.data(), w.data(), x.data(), rows, cols);
  CHECK(std::memcmp(host.data(), twin.data(), rows * 4) == 0);
}
#endif

TEST_CASE("bf16_dot weights: the model against the float64 reference, and what is converted") {
  // Measured (every path gives the same bits): the worst relative error of any state and exit
  // head, the random fixtures 0.66-1.0% and 0.69-1.03% (the f32 and f16 fixtures' weights are
  // rounded to bf16 too), the trained bundled model 0.33-0.38% per layer and 0.57% on the logits
  // (the f32-activation path: ~1e-6, the float64 reference's own rounding). Written down with
  // margin:
  calm::test::check_against_reference(calm::WeightFormat::bf16_dot, "bf16_dot", 0.05, 0.05);
  const fs::path dir = fs::path(CALM_MODELS) / "shakespeare-8l";
  const auto model = calm::LlamaModel::load(dir, {.weights = calm::WeightFormat::bf16_dot});
  for (const auto& l : model->weights().layers)
    for (const calm::Linear* m : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down})
      CHECK(m->format == calm::formats::Id::bf16_dot);
  CHECK(model->weights().lm_head.format == calm::formats::Id::bf16_dot);
  CHECK(model->weights().embed.format == calm::formats::Id::bf16);
}

TEST_CASE("bf16_dot perplexity on the bundled model's test split is within 1% of bf16's") {
  calm::test::check_perplexity(calm::WeightFormat::bf16_dot, "bf16_dot", 1.01);
}

TEST_CASE("bf16_dot: speculation's greedy output and cache are the full model's, bit for bit") {
  calm::test::check_speculation_exact(calm::WeightFormat::bf16_dot);
}
