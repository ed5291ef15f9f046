// Flag checks every program applies to its CLI11 options: output paths that say where to write.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace calm::cli {

// For an output path: "" is refused (it would mean no output, or the default file, in silence).
inline CLI::Validator non_empty_path() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        return text.empty() ? "is empty: give the path of a file to write" : "";
      },
      "");
}

}  // namespace calm::cli
