#include "cli_parse.hpp"

#include <CLI/CLI.hpp>

#include <utility>

namespace calm::cli {

std::unique_ptr<CLI::App> make_app(std::string description) {
  return std::make_unique<CLI::App>(std::move(description));
}

int parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return -1;
}

}  // namespace calm::cli
