// Helpers shared by calm's doctest suites.
#pragma once

#include <calm/core/error.hpp>

#include <doctest/doctest.h>

#include <initializer_list>
#include <string>

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
