// kernels::matmul (prefill) against its scalar twin, for the register-blocked f32 path
// (detail::matmul_rows_tiled: AVX2 and wider), the dot_rows path it falls back to (archs below
// AVX2, n < 4 tokens) and, where built, the AVX512-BF16 path. Every column count 0..2*width+k
// with unaligned pointers, shapes that cross the tile's row, token, column-block and panel
// edges, and bit-for-bit agreement across thread counts.
#include <doctest/doctest.h>

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <random>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "calm/core/aligned.hpp"
#include "calm/core/dtype.hpp"
#include "calm/core/thread_pool.hpp"
#include "unit/kernel_test_support.hpp"
#include "calm/kernels/amx.hpp"
#include "calm/kernels/matmul.hpp"

namespace k = calm::kernels;
using calm::AlignedBuffer;
using calm::bf16;
using calm::f16;

namespace {

using calm::test::fill;
using calm::test::from_float;
using calm::test::Unaligned;

using calm::test::same_bits;
using calm::test::sum_tolerance;

// The largest batch any arch here uses (AVX-512: 16 floats); lengths 0..2*16+5 cover every
// tail of every arch, and 32 (the AVX512-BF16 step) is passed too.
constexpr std::size_t kMaxCols = 2 * 32 + 5;

// matmul<Arch> with 1, 2 and 3 threads against scalar::matmul: within the reordering bound,
// and the thread counts bit for bit.
template <class Arch, class T>
void check_matmul(std::size_t n, std::size_t rows, std::size_t cols, std::mt19937& rng,
                  calm::ThreadPool& two, calm::ThreadPool& three) {
  Unaligned<T> w(rows * cols);
  Unaligned<float> x(n * cols), y1(n * rows), y2(n * rows), y3(n * rows), want(n * rows);
  fill(w.data(), rows * cols, rng);
  fill(x.data(), n * cols, rng);
  k::matmul<Arch>(y1.data(), w.data(), x.data(), n, rows, cols);
  k::matmul<Arch>(y2.data(), w.data(), x.data(), n, rows, cols, &two);
  k::matmul<Arch>(y3.data(), w.data(), x.data(), n, rows, cols, &three);
  k::scalar::matmul(want.data(), w.data(), x.data(), n, rows, cols);
  for (std::size_t t = 0; t < n; ++t) {
    for (std::size_t r = 0; r < rows; ++r) {
      float abs_sum = 0.0f;
      for (std::size_t c = 0; c < cols; ++c) abs_sum += std::fabs(calm::to_float(w[r * cols + c]) * x[t * cols + c]);
      float tol = sum_tolerance(cols, abs_sum);
#if defined(__AVX512BF16__)
      // bf16 weights on AVX-512 take the AVX512-BF16 path: activations are rounded to bf16
      // (relative error <= 2^-9 per product).
      if (std::is_same_v<T, bf16> && k::detail::kIsAvx512<Arch>) tol += abs_sum * (1.0f / 256.0f);
#endif
      const std::size_t i = t * rows + r;
      INFO("n=" << n << " rows=" << rows << " cols=" << cols << " t=" << t << " r=" << r);
      REQUIRE(std::fabs(y1[i] - want[i]) <= tol);
      REQUIRE(same_bits(y1[i], y2[i]));
      REQUIRE(same_bits(y1[i], y3[i]));
    }
  }
}

template <class Arch, class T>
void check_every_length() {
  std::mt19937 rng(20);
  calm::ThreadPool two(2), three(3);
  // Below kMatmulTileMinTokens (8) the dot_rows path, from 8 on the tiles: 6-token tiles and
  // every token tail 1..5.
  for (std::size_t n : {0u, 1u, 2u, 3u, 5u, 7u, 8u, 9u, 10u, 11u, 12u, 13u, 17u}) {
    for (std::size_t rows : {0u, 1u, 2u, 3u, 4u, 5u, 6u, 7u, 13u}) {
      for (std::size_t cols = 0; cols <= kMaxCols; ++cols) check_matmul<Arch, T>(n, rows, cols, rng, two, three);
    }
  }
}

// Column counts across kMatmulTileCols (one, two and a partial block), rows across the
// micro-panel's rows and token counts across several tiles.
template <class Arch, class T>
void check_blocks() {
  std::mt19937 rng(21);
  calm::ThreadPool two(2), three(3);
  constexpr std::size_t B = k::detail::kMatmulTileCols;
  const std::size_t P = k::detail::kHasTiledMatmul<Arch> ? k::detail::kMatmulTileRows<Arch> : 16;
  for (std::size_t cols : {B - 1, B, B + 1, B + 16, 2 * B + 21}) {
    for (std::size_t rows : {P - 1, P, P + 1, 2 * P + 5, 4 * P + 4}) {
      for (std::size_t n : {8u, 13u, 20u}) check_matmul<Arch, T>(n, rows, cols, rng, two, three);
    }
  }
}

// On the tiles every output is the fma chain over the columns in order, whatever the tile
// shape and batch width: bit for bit against that chain, written out in scalar code.
template <class Arch, class T>
void check_fma_chain() {
  std::mt19937 rng(24);
  for (std::size_t n : {8u, 9u, 14u}) {
    for (std::size_t rows : {1u, 15u, 16u, 17u, 33u, 70u}) {
      for (std::size_t cols : {0u, 1u, 7u, 8u, 9u, 31u, 255u, 256u, 257u, 600u}) {
        Unaligned<T> w(rows * cols);
        Unaligned<float> x(n * cols), y(n * rows);
        fill(w.data(), rows * cols, rng);
        fill(x.data(), n * cols, rng);
        k::matmul<Arch>(y.data(), w.data(), x.data(), n, rows, cols);
        for (std::size_t t = 0; t < n; ++t) {
          for (std::size_t r = 0; r < rows; ++r) {
            float s = 0.0f;
            for (std::size_t c = 0; c < cols; ++c) s = std::fma(calm::to_float(w[r * cols + c]), x[t * cols + c], s);
            INFO("n=" << n << " rows=" << rows << " cols=" << cols << " t=" << t << " r=" << r);
            REQUIRE(same_bits(y[t * rows + r], s));
          }
        }
      }
    }
  }
}

// A token's outputs do not depend on where it falls in a tile: drop the first of 15 tokens
// and the other 14 (now in other tile positions) come out bit for bit the same.
template <class Arch, class T>
void check_tile_position() {
  std::mt19937 rng(22);
  const std::size_t n = 15, rows = 21, cols = 45;
  Unaligned<T> w(rows * cols);
  Unaligned<float> x(n * cols), y(n * rows), y_shifted((n - 1) * rows);
  fill(w.data(), rows * cols, rng);
  fill(x.data(), n * cols, rng);
  k::matmul<Arch>(y.data(), w.data(), x.data(), n, rows, cols);
  k::matmul<Arch>(y_shifted.data(), w.data(), x.data() + cols, n - 1, rows, cols);
  for (std::size_t i = 0; i < (n - 1) * rows; ++i) REQUIRE(same_bits(y[rows + i], y_shifted[i]));
}

}  // namespace

#if CALM_AMX_BF16_BUILT
// The AMX-BF16 prefill (bf16 weights, cols % 32 == 0, n >= kAmxBf16MinTokens, where the process
// may): within the bf16 path's tolerance of the scalar twin and thread counts bit for bit
// (check_matmul), across 16-row and 16-token tile edges and the two-tile blocks; a token's
// outputs the same bits wherever it sits (a tile element depends on its row of W and its token
// only); and within tolerance of the vdpbf16ps kernel (amx::enable(false)).
TEST_CASE("matmul (AMX-BF16 prefill): the bf16 path's tolerance, thread counts, token positions") {
  using Arch = xsimd::default_arch;
  if (!k::detail::kIsAvx512<Arch> || !k::amx::bf16_usable()) {
    MESSAGE("no AMX-BF16 in this process: the vdpbf16ps kernel runs (checked elsewhere)");
    return;
  }
  std::mt19937 rng(25);
  calm::ThreadPool two(2), three(3);
  for (std::size_t n : {8u, 15u, 16u, 17u, 33u, 40u})
    for (std::size_t rows : {1u, 15u, 16u, 17u, 31u, 32u, 33u, 50u})
      for (std::size_t cols : {32u, 64u, 96u, 512u}) check_matmul<Arch, bf16>(n, rows, cols, rng, two, three);
  const std::size_t n = 35, rows = 37, cols = 2048;
  Unaligned<bf16> w(rows * cols);
  Unaligned<float> x(n * cols), y(n * rows), shifted((n - 1) * rows), vdp(n * rows);
  fill(w.data(), rows * cols, rng);
  fill(x.data(), n * cols, rng);
  k::matmul<Arch>(y.data(), w.data(), x.data(), n, rows, cols);
  k::matmul<Arch>(shifted.data(), w.data(), x.data() + cols, n - 1, rows, cols, &two);
  for (std::size_t i = 0; i < (n - 1) * rows; ++i) REQUIRE(same_bits(y[rows + i], shifted[i]));
  k::amx::enable(false);
  k::matmul<Arch>(vdp.data(), w.data(), x.data(), n, rows, cols);
  k::amx::enable(true);
  std::size_t differ = 0;
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t r = 0; r < rows; ++r) {
      float abs_sum = 0.0f;
      for (std::size_t c = 0; c < cols; ++c)
        abs_sum += std::fabs(calm::to_float(w[r * cols + c]) * calm::to_float(calm::to_bf16(x[t * cols + c])));
      const std::size_t i = t * rows + r;
      REQUIRE(std::fabs(y[i] - vdp[i]) <= 2 * sum_tolerance(cols, abs_sum));
      differ += !same_bits(y[i], vdp[i]);
    }
  MESSAGE("AMX-BF16 against vdpbf16ps: " << differ << " of " << n * rows << " outputs differ in bits");
}
#endif

TEST_CASE_TEMPLATE("matmul (default arch) matches the scalar twin for every length, threads agree bit for bit", T,
                   float, bf16, f16) {
  check_every_length<xsimd::default_arch, T>();
}

TEST_CASE_TEMPLATE("matmul (default arch) across column blocks, panels and token tiles", T, float, bf16, f16) {
  check_blocks<xsimd::default_arch, T>();
}

TEST_CASE_TEMPLATE("matmul (default arch): a token's result does not depend on its tile position", T, float,
                   bf16, f16) {
  check_tile_position<xsimd::default_arch, T>();
}

TEST_CASE_TEMPLATE("matmul (default arch) tiles are the in-order fma chain, bit for bit", T, float, bf16, f16) {
#if defined(__FMA__)
  using Arch = xsimd::default_arch;
  if constexpr (k::detail::kHasTiledMatmul<Arch>) {
#if defined(__AVX512BF16__)
    if (std::is_same_v<T, bf16> && k::detail::kIsAvx512<Arch>) return;  // the AVX512-BF16 path
#endif
    check_fma_chain<Arch, T>();
  }
#endif
}

#if defined(__AVX2__) && defined(__FMA__)
// The AVX2 + FMA tiles, also where the build's default arch is AVX-512.
TEST_CASE_TEMPLATE("matmul (AVX2 + FMA) matches the scalar twin and the fma chain", T, float, bf16, f16) {
  using Arch = xsimd::fma3<xsimd::avx2>;
  static_assert(k::detail::kHasTiledMatmul<Arch>);
  check_every_length<Arch, T>();
  check_blocks<Arch, T>();
  check_tile_position<Arch, T>();
  check_fma_chain<Arch, T>();
}
#endif

#if defined(__SSE2__)
// Archs below AVX2 keep the dot_rows path; the tiles themselves are plain xsimd and run there
// too (not dispatched to, but kept working).
TEST_CASE_TEMPLATE("matmul (SSE2: dot_rows path) matches the scalar twin", T, float, bf16, f16) {
  using Arch = xsimd::sse2;
  static_assert(!k::detail::kHasTiledMatmul<Arch>);
  check_every_length<Arch, T>();
}

TEST_CASE_TEMPLATE("matmul_rows_tiled on SSE2 matches the scalar twin", T, float, bf16, f16) {
  using Arch = xsimd::sse2;
  std::mt19937 rng(23);
  constexpr std::size_t B = k::detail::kMatmulTileCols;
  for (std::size_t n : {1u, 6u, 11u}) {
    for (std::size_t rows : {1u, 3u, 7u, 8u, 9u, 50u}) {
      for (std::size_t cols : {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{4}, std::size_t{9}, std::size_t{37}, B + 3}) {
        Unaligned<T> w(rows * cols);
        Unaligned<float> x(n * cols), y(n * rows), want(n * rows);
        fill(w.data(), rows * cols, rng);
        fill(x.data(), n * cols, rng);
        k::detail::matmul_rows_tiled<Arch>(y.data(), w.data(), x.data(), n, 0, rows, rows, cols);
        k::scalar::matmul(want.data(), w.data(), x.data(), n, rows, cols);
        for (std::size_t t = 0; t < n; ++t) {
          for (std::size_t r = 0; r < rows; ++r) {
            float abs_sum = 0.0f;
            for (std::size_t c = 0; c < cols; ++c) abs_sum += std::fabs(calm::to_float(w[r * cols + c]) * x[t * cols + c]);
            REQUIRE(std::fabs(y[t * rows + r] - want[t * rows + r]) <= sum_tolerance(cols, abs_sum));
          }
        }
      }
    }
  }
}
#endif
