#include "cli_parse.hpp"

#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <system_error>
#include <utility>

namespace calm::cli {

std::unique_ptr<CLI::App> make_app(std::string description) {
  return std::make_unique<CLI::App>(std::move(description));
}

int parse(CLI::App& app, int argc, char** argv) {
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return -1;
}

CLI::Validator non_empty_path() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        return text.empty() ? "is empty: give the path of a file to write" : "";
      },
      "");
}

}  // namespace calm::cli
