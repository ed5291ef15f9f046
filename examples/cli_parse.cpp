#include "cli_parse.hpp"

#include <calm/backends/llama/weights.hpp>

#include <CLI/CLI.hpp>

#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

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

CLI::Option* add_weights_flag(CLI::App& app, calm::WeightFormat& out) {
  // Taken by name and checked against the library's table (CLI11's CheckedTransformer over the
  // enum printed its uint8_t values as raw bytes in a refusal).
  std::vector<std::string> names;
  for (const auto& [name, format] : calm::kWeightFormatNames) names.emplace_back(name);
  return app
      .add_option_function<std::string>(
          "--weights", [&out](const std::string& name) { out = *calm::weight_format_named(name); },
          "file: the checkpoint's dtype; q8_0, q4_0: quantized at load; bf16_dot: bf16 dots; "
          "q8_0_dot, q4_0_dot: q8_0, q4_0 on int8 dots (default: file)")
      ->check(CLI::IsMember(names));
}

}  // namespace calm::cli
