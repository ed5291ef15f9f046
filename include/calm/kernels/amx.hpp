// Intel AMX (Advanced Matrix Extensions): whether this process may run tile instructions, and
// the tile configuration the AMX kernels load.
//
// Three things must hold before the first tile instruction: the build compiled the kernels
// (-march with amx-tile and amx-int8), the CPU has them (CPUID leaf 7: EDX bits 24 and 25), and
// Linux granted this process the tile data state: since Linux 5.16 a process asks for it once
// with arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA); without that grant a tile
// instruction raises SIGILL. A refused request (an older kernel, a seccomp policy, a hypervisor
// that hides the state) leaves the process on the AVX-512 kernels, which give the same bits
// (kernels/int8_dot.hpp).
#pragma once

#include <atomic>
#include <cstdint>

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

// 1 where this build compiles the AMX-INT8 kernels (they sit beside the AVX-512 VNNI ones).
#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512VNNI__) && defined(__AVX512DQ__) && \
    defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__linux__)
#define CALM_AMX_INT8_BUILT 1
#else
#define CALM_AMX_INT8_BUILT 0
#endif

// 1 where this build compiles the AMX-BF16 prefill kernel (kernels/matmul.hpp).
#if CALM_AMX_INT8_BUILT && defined(__AMX_BF16__) && defined(__AVX512BF16__)
#define CALM_AMX_BF16_BUILT 1
#else
#define CALM_AMX_BF16_BUILT 0
#endif

namespace calm::kernels::amx {

// Whether this build compiles the AMX-INT8 kernels.
inline constexpr bool kBuilt = CALM_AMX_INT8_BUILT != 0;

namespace detail {

// The CPU check and the request, uncached: true if the CPU has AMX-TILE and AMX-INT8 and Linux
// granted the tile data state (a process keeps a grant; asking again is harmless).
inline bool request_tile_data() noexcept {
#if defined(__x86_64__) && defined(__linux__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  const bool tile = (d >> 24) & 1u, int8 = (d >> 25) & 1u;
  if (!tile || !int8) return false;
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;  // <asm/prctl.h>
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

// Whether the CPU has AMX-BF16 (CPUID leaf 7: EDX bit 22).
inline bool cpu_has_bf16() noexcept {
#if defined(__x86_64__) && defined(__linux__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
  return (d >> 22) & 1u;
#else
  return false;
#endif
}

inline std::atomic<bool>& switched_on() noexcept {
  static std::atomic<bool> on{true};
  return on;
}

// What the request gave: -1 not asked yet, 0 refused, 1 granted. Tests set -1 to ask again
// (in a child process whose request they make fail).
inline std::atomic<int>& grant() noexcept {
  static std::atomic<int> state{-1};
  return state;
}

}  // namespace detail

// Whether the AMX kernels run in this process: built, granted (asked on first use), and not
// switched off by enable(false).
inline bool usable() noexcept {
  if constexpr (!kBuilt) {
    return false;
  } else {
    int granted = detail::grant().load(std::memory_order_acquire);
    if (granted < 0) {  // threads that race here all ask; the answer is the same
      granted = detail::request_tile_data() ? 1 : 0;
      detail::grant().store(granted, std::memory_order_release);
    }
    return granted == 1 && detail::switched_on().load(std::memory_order_relaxed);
  }
}

// Whether the AMX-BF16 prefill runs: usable() and the CPU has AMX-BF16.
inline bool bf16_usable() noexcept {
  if constexpr (CALM_AMX_BF16_BUILT == 0) {
    return false;
  } else {
    static const bool has = detail::cpu_has_bf16();
    return has && usable();
  }
}

// Switches the AMX kernels off (or back on) for the whole process; the outputs do not change,
// only which unit computes them.
inline void enable(bool on) noexcept { detail::switched_on().store(on, std::memory_order_relaxed); }

// The 64-byte operand of ldtilecfg (palette 1: 8 tiles of at most 16 rows of 64 bytes).
struct alignas(64) TileConfig {
  std::uint8_t palette = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};  // bytes per row, per tile
  std::uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

}  // namespace calm::kernels::amx
