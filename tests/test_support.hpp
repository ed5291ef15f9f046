// Helpers shared by calm's doctest suites.
#pragma once

#include <calm/core/error.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

namespace calm::test {

// The message of the calm::Error that f throws, or "" when it throws none (so a check that the
// message names something fails when nothing was thrown).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const calm::Error& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
struct ScratchDir {
  std::filesystem::path path;
  explicit ScratchDir(const std::string& name = "scratch") {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           ("calm_test_" + name + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  // Writes `bytes` to path/name and returns that path.
  std::filesystem::path write(const std::string& name, std::string_view bytes) const {
    std::ofstream(path / name, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    return path / name;
  }
};

}  // namespace calm::test

// expr must throw a calm::Error whose message contains every needle.
#define CHECK_ERROR_NAMES(expr, ...)                                                    \
  do {                                                                                  \
    const std::string calm_msg = ::calm::test::error_of([&] { (void)(expr); });         \
    CHECK_MESSAGE(!calm_msg.empty(), "no calm::Error thrown by " #expr);                \
    for (const std::string& needle : std::initializer_list<std::string>{__VA_ARGS__}) { \
      CHECK_MESSAGE(calm_msg.find(needle) != std::string::npos,                         \
                    "'" << needle << "' not in: " << calm_msg);                         \
    }                                                                                   \
  } while (0)
