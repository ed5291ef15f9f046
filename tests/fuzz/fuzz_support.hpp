// Shared by calm's libFuzzer targets (tests/fuzz/README.md). Each target writes the input to a
// file, as users hand calm files, and calls one loader. A calm::Error is the expected answer to
// bad input; anything else that escapes (another exception type, such as a bare nlohmann
// message), a crash, a hang, a leak or undefined behaviour is a finding.
#pragma once

#include <calm/core/error.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

namespace calm::fuzz {

// A folder of this process's own, removed at exit.
inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("calm-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] { std::filesystem::remove_all(scratch()); });
    return d;
  }();
  return dir;
}

// scratch()/name := the input bytes.
inline std::filesystem::path write_input(const std::uint8_t* data, std::size_t size,
                                         const std::string& name) {
  const std::filesystem::path p = scratch() / name;
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return p;
}

// Runs f; a calm::Error is a clean refusal. Its message must name something: an empty one is a
// finding too.
template <class F>
int refused_or_accepted(F&& f) {
  try {
    f();
  } catch (const calm::Error& e) {
    if (e.what()[0] == '\0') std::abort();
  }
  return 0;
}

}  // namespace calm::fuzz
