// The process's resident memory, to measure what loading a model costs (Linux /proc; no Google
// Benchmark needed, so tests use it too).
//   const std::size_t before = calm::bench::resident_bytes();
//   const bool peak_known = calm::bench::reset_peak_resident();  // peak := now
//   auto model = calm::LlamaModel::load(dir);
//   peak growth = calm::bench::peak_resident_bytes() - before (if peak_known)
#pragma once

#include <cstddef>
#include <fstream>
#include <string>
#include <string_view>

namespace calm::bench {

namespace detail {

// A "Key:   N kB" line of /proc/self/status, in bytes; 0 where there is none (not Linux).
inline std::size_t proc_status_bytes(std::string_view key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.size() > key.size() && line.compare(0, key.size(), key) == 0 && line[key.size()] == ':')
      return std::stoull(line.substr(key.size() + 1)) * 1024;
  return 0;
}

}  // namespace detail

// Resident set size now (VmRSS), and its peak since the start or the last reset (VmHWM).
inline std::size_t resident_bytes() { return detail::proc_status_bytes("VmRSS"); }
inline std::size_t peak_resident_bytes() { return detail::proc_status_bytes("VmHWM"); }

// Sets the peak to the current resident size (Linux >= 4.0, /proc/self/clear_refs); false where
// the kernel does not allow it, and the peak then still counts from earlier.
inline bool reset_peak_resident() {
  {
    std::ofstream out("/proc/self/clear_refs");
    if (!(out << "5")) return false;
  }
  return peak_resident_bytes() <= resident_bytes() + (std::size_t{1} << 20);
}

}  // namespace calm::bench
