// Helpers shared by calm's doctest suites.
#pragma once

#include <calm/core/error.hpp>
#include <calm/io/json.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <filesystem>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <initializer_list>
#include <string>
#include <string_view>
#include <system_error>

#include <sys/wait.h>
#include <unistd.h>

namespace calm::test {

// Under the sanitizers (tools/test.sh --sanitize, --tsan) tests that repeat one path over many
// inputs take a sample of them: the same code and bounds, a fraction of the time (a sanitized
// decode runs about 10x slower).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

// A JSON text read as calm's loaders read it (strict: no key twice). In calm's own build the
// reader is compiled once (src/io/json.cpp), where nlohmann::json::parse would instantiate its
// parser in every test unit that calls it (~3 s of compile time each).
inline nlohmann::json parse_json(std::string_view text) {
  return calm::io::parse_json(text, "JSON text", "the test");
}

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

// The whole content of a file ("" if it cannot be read).
inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A file with exactly `bytes` (the check fails if it cannot be written).
inline void write_file(const std::filesystem::path& p, std::string_view bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// n as 8 little-endian bytes.
inline std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return s;
}

// A safetensors file: the header's length, the header padded with spaces to a multiple of 8
// bytes as the safetensors library writes it (then `misalign` spaces more), and the data.
inline std::string safetensors_bytes(std::string header, std::string_view data, std::size_t misalign = 0) {
  while (header.size() % 8 != 0) header += ' ';
  header.append(misalign, ' ');
  return le64(header.size()) + header + std::string(data);
}

// The same without padding: the data section starts wherever the header ends.
inline std::string unpadded_safetensors_bytes(const std::string& header, std::string_view data) {
  return le64(header.size()) + header + std::string(data);
}

inline std::string quote(const std::filesystem::path& p) {
  std::string q = "'";  // appended, not "'" + s: g++ 12 warns falsely (-Wrestrict) on that
  q += p.string();
  q += '\'';
  return q;
}

struct ProgramRun {
  int status = -1;
  std::string out, err;
};

// Runs `program args` through the shell with stdout and stderr captured, no standard input.
inline ProgramRun run_program(const std::string& program, const std::string& args) {
  const ScratchDir dir("run");
  const std::string command = "'" + program + "' " + args + " >" + quote(dir.path / "out") +
                              " 2>" + quote(dir.path / "err") + " </dev/null";
  const int raw = std::system(command.c_str());
  ProgramRun run;
  run.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  run.out = read_text(dir.path / "out");
  run.err = read_text(dir.path / "err");
  return run;
}

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
