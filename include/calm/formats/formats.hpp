// The list of weight formats, and Linear: a matrix in one of them, dispatched at run time (the
// format comes from the checkpoint or the load options) to the format's kernels.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string_view>

#include "calm/core/dtype.hpp"
#include "calm/core/thread_pool.hpp"
#include "calm/formats/bf16_dot.hpp"
#include "calm/formats/dense.hpp"
#include "calm/formats/format.hpp"
#include "calm/formats/q4_0.hpp"
#include "calm/formats/q4_0_dot.hpp"
#include "calm/formats/q8_0.hpp"
#include "calm/formats/q8_0_dot.hpp"

namespace calm::formats {

template <class... F>
struct List {};
// Every format, in Id order. A new format adds its struct here.
using All = List<F32, F16, BF16, Q8_0, Q4_0, BF16Dot, Q8_0Dot, Q4_0Dot>;

namespace detail {
template <class Fn, class F, class... Rest>
decltype(auto) visit_in(Id id, Fn&& fn, List<F, Rest...>) {
  static_assert(Format<F>, "every listed format satisfies calm::formats::Format");
  if constexpr (sizeof...(Rest) == 0) {
    return fn(F{});  // the last: id is F::id (an Id names a listed format)
  } else {
    if (id == F::id) return fn(F{});
    return visit_in(id, static_cast<Fn&&>(fn), List<Rest...>{});
  }
}
}  // namespace detail

// fn(F{}) for the format F that id names.
template <class Fn>
decltype(auto) visit(Id id, Fn&& fn) {
  return detail::visit_in(id, static_cast<Fn&&>(fn), All{});
}

constexpr Id dense_id(DType t) noexcept {
  return t == DType::f32 ? Id::f32 : t == DType::f16 ? Id::f16 : Id::bf16;
}

inline std::string_view name(Id id) {
  return visit(id, [](auto f) { return std::string_view(decltype(f)::name); });
}

}  // namespace calm::formats

namespace calm::formats {

// One output of a pass over several matrices that multiply the same x: y(w.rows) = w x.
inline constexpr std::size_t kMaxSharedOutputs = 4;
struct Output {
  const Matrix* w;
  float* y;
};

// Format F's kernels behind the plain signatures Linear calls. Defined out of the class and not
// inline on purpose: in the header-only mode every translation unit that calls them compiles
// them (implicit instantiation), while a build that defines CALM_COMPILED_FORMATS sees the
// `extern template` declarations below and links one instantiation per format instead (the
// calm_compiled library, src/formats/*.cpp). The results are the same bits either way: the same
// template, compiled with the same flags.
template <class F>
struct Kernels {
  static void matvec(float* y, const Matrix& w, const float* x, ThreadPool* pool);
  static void matvec_batch(float* y, const Matrix& w, const float* x, std::size_t n,
                           ThreadPool* pool);
  static void matmul(float* y, const Matrix& w, const float* x, std::size_t n, ThreadPool* pool);
  static void matvec_gather(float* y, const Matrix& w, const float* x,
                            std::span<const std::uint32_t> rows);
  static void dequantize_row(const Matrix& w, std::size_t r, float* out);
  // Every outputs[i].y = outputs[i].w x in one pass (at most kMaxSharedOutputs, equal cols).
  static void matvec_shared(std::span<const Output> outputs, const float* x, ThreadPool* pool);
};

template <class F>
void Kernels<F>::matvec(float* y, const Matrix& w, const float* x, ThreadPool* pool) {
  F::matvec(y, w, x, pool);
}
template <class F>
void Kernels<F>::matvec_batch(float* y, const Matrix& w, const float* x, std::size_t n,
                              ThreadPool* pool) {
  F::matvec_batch(y, w, x, n, pool);
}
template <class F>
void Kernels<F>::matmul(float* y, const Matrix& w, const float* x, std::size_t n,
                        ThreadPool* pool) {
  F::matmul(y, w, x, n, pool);
}
template <class F>
void Kernels<F>::matvec_gather(float* y, const Matrix& w, const float* x,
                               std::span<const std::uint32_t> rows) {
  F::matvec_gather(y, w, x, rows);
}
template <class F>
void Kernels<F>::dequantize_row(const Matrix& w, std::size_t r, float* out) {
  F::dequantize_row(w, r, out);
}
template <class F>
void Kernels<F>::matvec_shared(std::span<const Output> outputs, const float* x,
                               ThreadPool* pool) {
  std::array<typename F::Segment, kMaxSharedOutputs> segments{};
  std::size_t n = 0;
  for (const Output& o : outputs) segments[n++] = F::segment(*o.w, o.y);
  F::matvec(std::span<const typename F::Segment>(segments.data(), n), x, outputs[0].w->cols,
            pool);
}

#ifdef CALM_COMPILED_FORMATS
extern template struct Kernels<F32>;
extern template struct Kernels<F16>;
extern template struct Kernels<BF16>;
extern template struct Kernels<Q8_0>;
extern template struct Kernels<Q4_0>;
extern template struct Kernels<BF16Dot>;
extern template struct Kernels<Q8_0Dot>;
extern template struct Kernels<Q4_0Dot>;
#endif

// fn(Kernels<F>{}) for the format F that id names.
template <class Fn>
decltype(auto) visit_kernels(Id id, Fn&& fn) {
  return visit(id, [&](auto f) { return fn(Kernels<decltype(f)>{}); });
}

}  // namespace calm::formats

namespace calm {

// A linear layer's weight W (rows, cols), row-major, in `format`; what data and scales hold is
// the format's (formats/format.hpp). The methods run that format's kernels.
struct Linear : formats::Matrix {
  formats::Id format = formats::Id::f32;

  std::size_t data_bytes() const {
    return formats::visit(format, [&](auto f) { return rows * decltype(f)::data_bytes(cols); });
  }
  std::size_t scale_bytes() const {
    return formats::visit(format, [&](auto f) { return rows * decltype(f)::scale_bytes(cols); });
  }
  std::size_t bytes() const { return data_bytes() + scale_bytes(); }
  // Bytes one row takes (what reading it costs).
  std::size_t row_bytes() const {
    return formats::visit(format, [&](auto f) { return formats::row_bytes<decltype(f)>(cols); });
  }

  // y(rows) = W x(cols)
  void apply(float* y, const float* x, ThreadPool* pool) const {
    formats::visit_kernels(format, [&](auto k) { k.matvec(y, *this, x, pool); });
  }
  // Y(n, rows) = X(n, cols) W^T, the prefill kernel (its numerics are the format's).
  void apply_batch(float* y, const float* x, std::size_t n, ThreadPool* pool) const {
    formats::visit_kernels(format, [&](auto k) { k.matmul(y, *this, x, n, pool); });
  }
  // Y(n, rows) = X(n, cols) W^T, each row bitwise what apply() gives for it; every weight is
  // still read from memory once.
  void apply_rows(float* y, const float* x, std::size_t n, ThreadPool* pool) const {
    formats::visit_kernels(format, [&](auto k) { k.matvec_batch(y, *this, x, n, pool); });
  }
  // y(k) = row rows[k] of W x(cols), each bitwise what apply() gives for that row: a few rows
  // of a large matrix (the exit check over a candidate set). One thread.
  void apply_gather(float* y, const float* x, std::span<const std::uint32_t> rows_to) const {
    formats::visit_kernels(format, [&](auto k) { k.matvec_gather(y, *this, x, rows_to); });
  }
  // out(cols) := row r of W in f32 (the embedding lookup).
  void row(std::size_t r, float* out) const {
    formats::visit_kernels(format, [&](auto k) { k.dequantize_row(*this, r, out); });
  }
};

// One output of apply_shared_input: y(w.rows) = w x.
struct LinearOutput {
  const Linear& w;
  float* y;
};

// Every y = W x for linears that multiply the same x(cols) (q/k/v, gate/up): one matvec pass over
// all their rows when they share format and cols (one pool call; the prefetch stream runs from
// one matrix into the next), else one apply each. The results are the same bits either way.
inline void apply_shared_input(std::initializer_list<LinearOutput> outputs, const float* x,
                               ThreadPool* pool) {
  const LinearOutput& first = *outputs.begin();
  bool together = outputs.size() <= formats::kMaxSharedOutputs;
  for (const LinearOutput& o : outputs)
    together = together && o.w.format == first.w.format && o.w.cols == first.w.cols;
  if (!together) {
    for (const LinearOutput& o : outputs) o.w.apply(o.y, x, pool);
    return;
  }
  std::array<formats::Output, formats::kMaxSharedOutputs> list{};
  std::size_t n = 0;
  for (const LinearOutput& o : outputs) list[n++] = {&o.w, o.y};
  formats::visit_kernels(first.w.format,
                         [&](auto k) { k.matvec_shared(std::span(list.data(), n), x, pool); });
}

}  // namespace calm
