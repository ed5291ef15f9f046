// Flag checks every program applies to its CLI11 options: numbers read as written, and output
// paths that say where to write.
#pragma once

#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <system_error>

namespace calm::cli {

// CLI11 reads "-1" into an unsigned option as 2^64 - 1 and a number past 2^64 - 1 as 2^64 - 1,
// so `--seed -1` and `--seed 99999999999999999999999` would be one seed and `--epochs -1` run
// forever. Every unsigned option of `app` (CLI11 type "UINT") is first checked as written:
// decimal digits only, at most 2^64 - 1. Call once all options are added, before parsing.
inline void parse_unsigned_strictly(CLI::App& app) {
  const CLI::Validator strict(
      [](std::string& text) -> std::string {
        std::uint64_t value = 0;
        const char* end = text.data() + text.size();
        const auto [stop, ec] = std::from_chars(text.data(), end, value);
        if (text.empty() || stop != end || ec != std::errc())
          return "expected a whole number from 0 to " +
                 std::to_string(std::numeric_limits<std::uint64_t>::max()) + ", got '" + text +
                 "'";
        return {};
      },
      "");
  for (CLI::Option* option : app.get_options())
    if (option->get_type_name().rfind("UINT", 0) == 0) option->check(strict);
}

// For an output path: "" is refused (it would mean no output, or the default file, in silence).
inline CLI::Validator non_empty_path() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        return text.empty() ? "is empty: give the path of a file to write" : "";
      },
      "");
}

}  // namespace calm::cli
