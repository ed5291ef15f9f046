// The drivers every matrix kernel shares, dense (matvec.hpp, matmul.hpp) and block formats
// (blocks.hpp, q8_0.hpp): how a matrix's rows are cut into groups, how the groups are split over
// threads, and how the groups of several matrices that share x (segments), the rows of a group
// and a batch of vectors are walked. The arithmetic is the caller's (a functor given the rows
// and the vectors it owns); none of this changes which operations a row's sum takes, so each
// row's result is the same for any grouping, thread count or number of vectors.
#pragma once

#include <cstddef>
#include <span>
#include <type_traits>

#include "calm/core/thread_pool.hpp"
#include "calm/kernels/load.hpp"

namespace calm::kernels::detail {

// Rows per group: the unit of work of the matvec kernels, and the unit handed to threads.
inline constexpr std::size_t kMatvecRows = 4;

inline std::size_t row_groups(std::size_t rows) noexcept {
  return (rows + kMatvecRows - 1) / kMatvecRows;
}

// Runs task(g0, g1) over `groups` row groups: with a pool, one contiguous run of whole groups
// per thread (fewest calls; each thread streams one contiguous slab of the weights).
template <class Task>
inline void split_groups(std::size_t groups, ThreadPool* pool, Task&& task) {
  if (groups == 0) return;
  if (pool == nullptr || pool->size() == 1) {
    task(std::size_t{0}, groups);
    return;
  }
  const std::size_t n_tasks = pool->size() < groups ? pool->size() : groups;
  pool->parallel_for(n_tasks, [&](std::size_t i) {
    task(groups * i / n_tasks, groups * (i + 1) / n_tasks);
  });
}

// split_groups over the row groups of a (rows, ...) matrix, as rows: task(r0, r1).
template <class Task>
inline void split_rows(std::size_t rows, ThreadPool* pool, Task&& task) {
  split_groups(row_groups(rows), pool, [&](std::size_t g0, std::size_t g1) {
    const std::size_t r1 = g1 * kMatvecRows;
    task(g0 * kMatvecRows, r1 < rows ? r1 : rows);
  });
}

// Groups [g0, g1) of the segments' concatenated row groups (a segment's last group may be short):
// calls rows.template operator()<R>(segment, r, next) for each whole group (R = kMatvecRows) and
// for each row of a short one (R = 1), where `next` is the first weight after those rows in the
// stream -- the next rows, or at a segment's end the next segment's first row -- for the
// prefetcher. data(segment) is a segment's first row, row_stride the units between rows.
template <class Segment, class Data, class Rows>
inline void walk_segment_groups(std::span<const Segment> segments, std::size_t row_stride,
                                std::size_t g0, std::size_t g1, Data data, Rows&& rows) {
  constexpr std::size_t R = kMatvecRows;
  std::size_t base = 0;  // first global group of segment s
  for (std::size_t s = 0; s < segments.size() && base < g1; ++s) {
    const Segment& seg = segments[s];
    const std::size_t groups = row_groups(seg.rows);
    const std::size_t lo = g0 > base ? g0 - base : 0;
    const std::size_t hi = g1 - base < groups ? g1 - base : groups;
    const auto* first = data(seg);
    const auto* after = s + 1 < segments.size() ? data(segments[s + 1]) : first + seg.rows * row_stride;
    for (std::size_t g = lo; g < hi; ++g) {
      std::size_t r = g * R;
      if (r + R <= seg.rows) {
        rows.template operator()<R>(seg, r, r + R < seg.rows ? first + (r + R) * row_stride : after);
      } else {
        for (; r < seg.rows; ++r)
          rows.template operator()<1>(seg, r, r + 1 < seg.rows ? first + (r + 1) * row_stride : after);
      }
    }
    base += groups;
  }
}

// The rows of groups [g0, g1) of a (rows, ...) matrix, two at a time (a batch of vectors keeps
// two rows' accumulators in registers): pair.template operator()<R>(r) with R = 2, or 1 for a
// group's odd last row.
template <class Pair>
inline void walk_row_pairs(std::size_t rows, std::size_t g0, std::size_t g1, Pair&& pair) {
  for (std::size_t g = g0; g < g1; ++g) {
    const std::size_t end = (g + 1) * kMatvecRows < rows ? (g + 1) * kMatvecRows : rows;
    for (std::size_t r = g * kMatvecRows; r < end;) {
      if (r + 2 <= end) {
        pair.template operator()<2>(r);
        r += 2;
      } else {
        pair.template operator()<1>(r);
        r += 1;
      }
    }
  }
}

// Vectors per tile of a batch: as many as the registers hold next to 2 rows' accumulators (32
// vector registers on AVX-512, 16 on AVX2 and below).
template <class Arch>
inline constexpr std::size_t kBatchTile = kIsAvx512<Arch> ? 4 : 2;

// n vectors in tiles of V, the last one partial: tile.template operator()<v, First>(t) for the
// v vectors from t; First only for the first tile, which streams the rows from memory (the rest
// find them in L1).
template <std::size_t V, class Tile>
inline void walk_tiles(std::size_t n, Tile&& tile) {
  static_assert(V >= 1 && V <= 4, "walk_tiles: a partial tile has at most 3 vectors");
  std::size_t t = 0;
  if (t + V <= n) {
    tile.template operator()<V, true>(t);
    for (t += V; t + V <= n; t += V) tile.template operator()<V, false>(t);
  }
  const auto last = [&]<std::size_t v>() {
    if (t == 0)
      tile.template operator()<v, true>(t);
    else
      tile.template operator()<v, false>(t);
  };
  switch (n - t) {
    case 1: last.template operator()<1>(); break;
    case 2: if constexpr (V > 2) last.template operator()<2>(); break;
    case 3: if constexpr (V > 3) last.template operator()<3>(); break;
    default: break;
  }
}

// walk_tiles in tiles of kBatchTile<Arch>: tile.template operator()<V, Prefetch>(t), only the
// first tile prefetching.
template <class Arch, class Tile>
inline void walk_vector_tiles(std::size_t n, Tile&& tile) {
  walk_tiles<kBatchTile<Arch>>(n, static_cast<Tile&&>(tile));
}

}  // namespace calm::kernels::detail
