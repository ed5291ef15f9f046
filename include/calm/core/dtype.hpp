// Storage dtypes of weights as they sit in a checkpoint. Activations are always f32;
// weights stay in their file dtype and are widened inside the kernels.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace calm {

// bfloat16: the upper 16 bits of an IEEE f32.
struct bf16 {
  std::uint16_t bits;
};
// IEEE half precision.
struct f16 {
  std::uint16_t bits;
};
static_assert(sizeof(bf16) == 2 && sizeof(f16) == 2);

enum class DType : std::uint8_t { f32, f16, bf16 };

constexpr std::size_t dtype_size(DType t) noexcept { return t == DType::f32 ? 4 : 2; }

constexpr std::string_view dtype_name(DType t) noexcept {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
  }
  return "?";
}

template <class T>
constexpr DType dtype_of() noexcept;
template <>
constexpr DType dtype_of<float>() noexcept { return DType::f32; }
template <>
constexpr DType dtype_of<f16>() noexcept { return DType::f16; }
template <>
constexpr DType dtype_of<bf16>() noexcept { return DType::bf16; }

inline float to_float(float x) noexcept { return x; }

inline float to_float(bf16 x) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(x.bits) << 16);
}

// Exact f16 -> f32, including subnormals, infinities and NaN.
inline float to_float(f16 x) noexcept {
  const std::uint32_t h = x.bits;
  const std::uint32_t sign = (h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t mant = h & 0x3FFu;
  std::uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: renormalise
    exp = 113;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

// Round-to-nearest-even f32 -> bf16 (NaN stays NaN).
inline bf16 to_bf16(float f) noexcept {
  std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return bf16{static_cast<std::uint16_t>((u >> 16) | 0x40u)};
  u += 0x7FFFu + ((u >> 16) & 1u);
  return bf16{static_cast<std::uint16_t>(u >> 16)};
}

// Round-to-nearest-even f32 -> f16 with overflow to inf and subnormals.
inline f16 to_f16(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t abs = u & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return f16{static_cast<std::uint16_t>(sign | 0x7E00u)};
  if (abs >= 0x477FF000u) return f16{static_cast<std::uint16_t>(sign | 0x7C00u)};  // rounds to inf
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    const float a = std::bit_cast<float>(abs);
    const float scaled = a * 16777216.0f;  // 2^24: one unit of the subnormal half
    auto m = static_cast<std::uint32_t>(scaled);
    const float rem = scaled - static_cast<float>(m);
    if (rem > 0.5f || (rem == 0.5f && (m & 1u))) ++m;
    return f16{static_cast<std::uint16_t>(sign | m)};
  }
  std::uint32_t r = abs + 0xFFFu + ((abs >> 13) & 1u);  // round mantissa to 10 bits
  r = ((r >> 23) - 112) << 10 | ((r >> 13) & 0x3FFu);
  return f16{static_cast<std::uint16_t>(sign | r)};
}

}  // namespace calm
