// calm::printf_string: printf into a std::string, for the library's text reports (calm::calm does
// not depend on fmt).
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>

namespace calm {

template <class... Args>
std::string printf_string(const char* format, Args... args) {
  const int n = std::snprintf(nullptr, 0, format, args...);
  std::string out(n > 0 ? static_cast<std::size_t>(n) : 0, '\0');
  if (n > 0) std::snprintf(out.data(), out.size() + 1, format, args...);
  return out;
}

}  // namespace calm
