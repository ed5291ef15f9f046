// Products of bf16 weights and bf16 vectors on AMX-BF16 tiles: Y(n, rows) = X(n, cols) W^T with
// `tdpbf16ps`, 16 weight rows (tile A: 32 columns of each, read where the rows are) by up to 16
// vectors (tile B: the vectors' column pairs), every column of a row summed in one f32 tile
// element. An element of the result depends only on its row of W and its vector: a tile of 1 row
// and 1 vector gives the bits a 16 x 16 tile gives it, whatever else shares the tile
// (tests/unit/test_bf16_dot.cpp checks it for every n, row count and thread count). So this is
// one arithmetic for every batch size on a host with AMX-BF16 (kernels/bf16_dot.hpp takes it for
// every n there, decoding included), and the bf16 prefill's fastest unit (kernels/matmul.hpp).
// The order in which the hardware accumulates inside a tile is its own, not vdpbf16ps's chain nor
// any order we could state and emulate (docs/design.md §16): hosts without AMX give other bits.
// cols must be a multiple of 32; the caller checks amx::bf16_usable().
#pragma once

#include "calm/kernels/amx.hpp"

#if CALM_AMX_BF16_BUILT

#include <cstddef>
#include <cstdint>
#include <span>

#include <immintrin.h>

#include "calm/core/aligned.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/kernels/row_groups.hpp"

namespace calm::kernels::detail::amx_bf16 {

// Vectors per B tile and rows per A tile.
inline constexpr std::size_t kTileVectors = 16, kTileRows = 16;

// The layout tile B reads: vectors in groups of 16, group g (its c = min(16, n - 16 g) vectors)
// at group_offset(g, cols), holding the column pairs of its vectors side by side:
// packed[group_offset(g) + q 2c + 2 t + j] = X[16 g + t][2 q + j]. One vector alone is its own
// bf16 row, unchanged.
inline std::size_t group_offset(std::size_t g, std::size_t cols) noexcept { return g * kTileVectors * cols; }
inline std::size_t group_size(std::size_t g, std::size_t n) noexcept {
  return n - kTileVectors * g < kTileVectors ? n - kTileVectors * g : kTileVectors;
}

// X (n rows of bf16 bits, stride x_stride) into the packed layout; returns the thread's buffer.
inline const std::uint16_t* pack(const std::uint16_t* x, std::size_t x_stride, std::size_t n,
                                 std::size_t cols) {
  thread_local AlignedBuffer<std::uint16_t> buffer;
  const std::size_t groups = (n + kTileVectors - 1) / kTileVectors;
  buffer.reserve_discard(groups * kTileVectors * cols);
  std::uint16_t* out = buffer.data();
  for (std::size_t g = 0; g < groups; ++g) {
    const std::size_t c = group_size(g, n);
    std::uint32_t* dst = reinterpret_cast<std::uint32_t*>(out + group_offset(g, cols));
    const std::uint16_t* src = x + kTileVectors * g * x_stride;
    // Written in order (c sources read side by side): a vector at a time, each store went to
    // another line (8% of q8_0_dot's prefill in perf).
    for (std::size_t q = 0; q < cols / 2; ++q)
      for (std::size_t t = 0; t < c; ++t) {
        std::uint32_t pair;
        __builtin_memcpy(&pair, src + t * x_stride + 2 * q, 4);
        dst[q * c + t] = pair;
      }
  }
  return out;
}

// The tiles of one pass: C0 = A0 B0, C1 = A0 B1, C2 = A1 B0, C3 = A1 B1; A0, A1 two groups of up
// to 16 weight rows; B0, B1 two groups of up to 16 vectors. Tile numbers must be literals.
#define CALM_AMX_C0 0
#define CALM_AMX_C1 1
#define CALM_AMX_C2 2
#define CALM_AMX_C3 3
#define CALM_AMX_A0 4
#define CALM_AMX_A1 5
#define CALM_AMX_B0 6
#define CALM_AMX_B1 7

// The configuration loaded on a thread, reloaded only when a pass's shape changes; released at
// the end of the task.
class Tiles {
 public:
  Tiles() = default;
  Tiles(const Tiles&) = delete;
  Tiles& operator=(const Tiles&) = delete;
  ~Tiles() {
    if (loaded_) _tile_release();
  }
  // m0, m1 weight rows (m1 may be 0), c0, c1 vectors (c1 may be 0).
  void shape(std::size_t m0, std::size_t m1, std::size_t c0, std::size_t c1) {
    if (loaded_ && m0 == m0_ && m1 == m1_ && c0 == c0_ && c1 == c1_) return;
    amx::TileConfig cfg;
    const std::size_t rows[8] = {m0, c1 ? m0 : 0, m1, c1 ? m1 : 0, m0, m1, 16, c1 ? std::size_t{16} : 0};
    const std::size_t bytes[8] = {4 * c0, 4 * c1, 4 * c0, 4 * c1, 64, 64, 4 * c0, 4 * c1};
    for (int t = 0; t < 8; ++t) {
      const bool used = rows[t] != 0 && bytes[t] != 0;
      cfg.rows[t] = static_cast<std::uint8_t>(used ? rows[t] : 0);
      cfg.colsb[t] = static_cast<std::uint16_t>(used ? bytes[t] : 0);
    }
    _tile_loadconfig(&cfg);
    loaded_ = true;
    m0_ = m0, m1_ = m1, c0_ = c0, c1_ = c1;
  }

 private:
  bool loaded_ = false;
  std::size_t m0_ = 0, m1_ = 0, c0_ = 0, c1_ = 0;
};

// No work between the tile steps of a block.
struct NoWork {
  void operator()() const noexcept {}
};

// How many times block(..., between) calls `between` for n vectors of cols columns: once per
// 32-column step of each pass.
inline std::size_t block_steps(std::size_t n, std::size_t cols) noexcept {
  return (n + 2 * kTileVectors - 1) / (2 * kTileVectors) * (cols / 32);
}

// Rows [0, m) (m <= 32) of a weight block w (row stride cols) times all n packed vectors:
// y[t * y_stride + i] for row i and vector t. Two row groups and two vector groups per pass.
// between() runs after each step's tile products are issued (block_steps times in all): vector
// work placed there runs while the tile unit computes.
template <class Between = NoWork>
inline void block(float* y, std::size_t y_stride, const std::uint16_t* w, std::size_t m,
                  std::size_t cols, const std::uint16_t* packed, std::size_t n, Tiles& tiles,
                  Between&& between = {}) {
  const std::size_t steps = cols / 32, groups = (n + kTileVectors - 1) / kTileVectors;
  const std::size_t m0 = m < kTileRows ? m : kTileRows, m1 = m - m0;
  const long w_stride = static_cast<long>(cols * 2);
  const std::uint16_t* a0 = w;
  const std::uint16_t* a1 = w + kTileRows * cols;
  alignas(64) float c[4][kTileRows][kTileVectors];
  for (std::size_t g = 0; g < groups; g += 2) {
    const std::size_t c0 = group_size(g, n), c1 = g + 1 < groups ? group_size(g + 1, n) : 0;
    tiles.shape(m0, m1, c0, c1);
    const std::uint16_t* x0 = packed + group_offset(g, cols);
    const std::uint16_t* x1 = packed + group_offset(g + 1, cols);
    const long x0_stride = static_cast<long>(4 * c0), x1_stride = static_cast<long>(4 * c1);
    __asm__ volatile("" ::: "memory");  // GCC 12's tile loads declare no memory input
    _tile_zero(CALM_AMX_C0);
    if (c1) _tile_zero(CALM_AMX_C1);
    if (m1) {
      _tile_zero(CALM_AMX_C2);
      if (c1) _tile_zero(CALM_AMX_C3);
    }
    for (std::size_t s = 0; s < steps; ++s) {
      _tile_loadd(CALM_AMX_A0, a0 + 32 * s, w_stride);
      _tile_loadd(CALM_AMX_B0, x0 + 32 * s * c0, x0_stride);
      _tile_dpbf16ps(CALM_AMX_C0, CALM_AMX_A0, CALM_AMX_B0);
      if (c1) {
        _tile_loadd(CALM_AMX_B1, x1 + 32 * s * c1, x1_stride);
        _tile_dpbf16ps(CALM_AMX_C1, CALM_AMX_A0, CALM_AMX_B1);
      }
      if (m1) {
        _tile_loadd(CALM_AMX_A1, a1 + 32 * s, w_stride);
        _tile_dpbf16ps(CALM_AMX_C2, CALM_AMX_A1, CALM_AMX_B0);
        if (c1) _tile_dpbf16ps(CALM_AMX_C3, CALM_AMX_A1, CALM_AMX_B1);
      }
      between();
    }
    _tile_stored(CALM_AMX_C0, c[0], 64);
    if (c1) _tile_stored(CALM_AMX_C1, c[1], 64);
    if (m1) {
      _tile_stored(CALM_AMX_C2, c[2], 64);
      if (c1) _tile_stored(CALM_AMX_C3, c[3], 64);
    }
    __asm__ volatile("" ::: "memory");  // and its tile stores no memory output
    // c[2 a + h][o][t] = Y[16 (g + h) + t][16 a + o]
    for (std::size_t h = 0; h < (c1 ? 2u : 1u); ++h)
      for (std::size_t a = 0; a < (m1 ? 2u : 1u); ++a)
        for (std::size_t t = 0; t < (h ? c1 : c0); ++t)
          for (std::size_t o = 0; o < (a ? m1 : m0); ++o)
            y[(kTileVectors * (g + h) + t) * y_stride + kTileRows * a + o] = c[2 * a + h][o][t];
  }
}

#undef CALM_AMX_C0
#undef CALM_AMX_C1
#undef CALM_AMX_C2
#undef CALM_AMX_C3
#undef CALM_AMX_A0
#undef CALM_AMX_A1
#undef CALM_AMX_B0
#undef CALM_AMX_B1

// Rows per block: the unit handed to threads.
inline constexpr std::size_t kBlockRows = 2 * kTileRows;

// Y(n, rows) = X W^T for packed X, rows split over the pool's threads in blocks of 32.
inline void matmul(float* y, const std::uint16_t* w, const std::uint16_t* packed, std::size_t n,
                   std::size_t rows, std::size_t cols, ThreadPool* pool) {
  split_groups((rows + kBlockRows - 1) / kBlockRows, pool, [&](std::size_t b0, std::size_t b1) {
    Tiles tiles;
    for (std::size_t b = b0; b < b1; ++b) {
      const std::size_t r = kBlockRows * b, m = rows - r < kBlockRows ? rows - r : kBlockRows;
      block(y + r, rows, w + r * cols, m, cols, packed, n, tiles);
    }
  });
}

// For each segment (y, w, rows) sharing one packed vector: y = W x, the segments' blocks of 32
// rows split over the threads as one list.
template <class Segment, class Bits>
inline void matvec(std::span<const Segment> segments, Bits bits, const std::uint16_t* packed,
                   std::size_t cols, ThreadPool* pool) {
  std::size_t blocks = 0;
  for (const Segment& s : segments) blocks += (s.rows + kBlockRows - 1) / kBlockRows;
  split_groups(blocks, pool, [&](std::size_t b0, std::size_t b1) {
    Tiles tiles;
    std::size_t base = 0;  // first block of segment s
    for (const Segment& s : segments) {
      const std::size_t count = (s.rows + kBlockRows - 1) / kBlockRows;
      for (std::size_t b = b0 > base ? b0 - base : 0; b < count && base + b < b1; ++b) {
        const std::size_t r = kBlockRows * b, m = s.rows - r < kBlockRows ? s.rows - r : kBlockRows;
        block(s.y + r, 0, bits(s) + r * cols, m, cols, packed, 1, tiles);
      }
      base += count;
    }
  });
}

// y(k) = row rows[k] of W x for one packed vector, on this thread: the picked rows are copied
// into blocks of 32 first (a tile reads rows at one stride).
inline void gather(float* y, const std::uint16_t* w, const std::uint16_t* packed,
                   std::span<const std::uint32_t> rows, std::size_t cols) {
  thread_local AlignedBuffer<std::uint16_t> buffer;
  buffer.reserve_discard(kBlockRows * cols);
  Tiles tiles;
  for (std::size_t k = 0; k < rows.size(); k += kBlockRows) {
    const std::size_t m = rows.size() - k < kBlockRows ? rows.size() - k : kBlockRows;
    for (std::size_t i = 0; i < m; ++i)
      __builtin_memcpy(buffer.data() + i * cols, w + std::size_t{rows[k + i]} * cols, cols * 2);
    block(y + k, 0, buffer.data(), m, cols, packed, 1, tiles);
  }
}

}  // namespace calm::kernels::detail::amx_bf16

#endif  // CALM_AMX_BF16_BUILT
