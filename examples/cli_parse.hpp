// calm::cli::parse: CLI11's parse, help and error printing, compiled once for every program.
// CLI11 2.1 (Debian 12) is header-only with no precompiled mode, and App::parse and App's
// constructor reach most of it (the help formatter and config writer, whose virtual functions
// come with their vtables, the option matcher): in each program's main they were a quarter of
// its object code. Declared here, defined once in cli_parse.cpp.
#pragma once

#include <CLI/App.hpp>
#include <CLI/Validators.hpp>

#include <cstdint>
#include <memory>
#include <string>

namespace calm {
enum class WeightFormat : std::uint8_t;  // backends/llama/weights.hpp
}

namespace calm::cli {

// A CLI11 application, constructed where its formatter's code is compiled.
std::unique_ptr<CLI::App> make_app(std::string description);

// Parses argv into `app`'s options. Returns -1 when the program should go on, else the exit
// code to return after CLI11 has printed the help, the version or the error.
// Numbers are read as written: CLI11 reads "-1" into an unsigned option as 2^64 - 1 and a
// number past 2^64 - 1 as 2^64 - 1, so `--seed -1` and `--seed 99999999999999999999999` would
// be one seed and `--epochs -1` run forever. Every unsigned option (CLI11 type "UINT") takes
// decimal digits only, at most 2^64 - 1; anything else is refused naming the flag.
int parse(CLI::App& app, int argc, char** argv);

// For an output path: "" is refused (it would mean no output, or the default file, in silence).
CLI::Validator non_empty_path();

// --weights NAME into `out`, the names from the library's table (calm::kWeightFormatNames): a
// refusal lists them. Every program that loads a model for decoding offers the same formats.
CLI::Option* add_weights_flag(CLI::App& app, calm::WeightFormat& out);

}  // namespace calm::cli

// CLI11_PARSE's contract, through the one compiled parse.
#define CALM_CLI_PARSE(app, argc, argv)                                  \
  if (const int calm_cli_exit = ::calm::cli::parse(app, argc, argv);     \
      calm_cli_exit >= 0)                                                \
  return calm_cli_exit
