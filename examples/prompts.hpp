// Prompt files for calm-calibrate and calm-eval, and the progress line they draw while decoding.
//
// Two formats, chosen by the file name:
//   *.jsonl  one JSON object per line: {"prompt": "...", "reference": "..."} ("reference" is
//            optional, other keys are ignored: train.py also writes "block"); blank lines skipped;
//   other    plain text, one prompt per line (no newlines inside a prompt); blank lines skipped.
// A references file (--references) is plain text, one reference per line, blank lines kept: line
// k is the reference of prompt k.
#pragma once

#include <calm/calibrate/learn_then_test.hpp>
#include <calm/core/error.hpp>
#include <calm/decoder.hpp>
#include <calm/report.hpp>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace calm::cli {

struct PromptRecord {
  std::string prompt;
  std::optional<std::string> reference;
  std::filesystem::path source;  // the prompt file and 1-based line, for error messages
  std::size_t line = 0;
};

struct PromptFile {
  std::filesystem::path path;
  std::vector<PromptRecord> prompts;

  // "<file>:<line>" of prompt i (the file it was read from, also when files are pooled).
  std::string where(std::size_t i) const {
    const PromptRecord& r = prompts.at(i);
    return (r.source.empty() ? path : r.source).string() + ":" + std::to_string(r.line);
  }
};

namespace detail {

inline std::vector<std::string> read_lines(const std::filesystem::path& path, const char* what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(std::string(what) + " '" + path.string() + "' is a directory, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(std::string("cannot read ") + what + " '" + path.string() + "'");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();  // files written on Windows
    lines.push_back(std::move(line));
  }
  if (in.bad()) throw Error(std::string("error while reading ") + what + " '" + path.string() + "'");
  return lines;
}

inline bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return c == ' ' || c == '\t'; });
}

}  // namespace detail

inline PromptFile read_prompt_file(const std::filesystem::path& path) {
  const std::vector<std::string> lines = detail::read_lines(path, "prompt file");
  PromptFile file{path, {}};
  const bool jsonl = path.extension() == ".jsonl";
  for (std::size_t k = 0; k < lines.size(); ++k) {
    const std::string& line = lines[k];
    if (detail::blank(line)) continue;
    const std::string where = path.string() + ":" + std::to_string(k + 1);
    PromptRecord record;
    record.source = path;
    record.line = k + 1;
    if (!jsonl) {
      record.prompt = line;
      file.prompts.push_back(std::move(record));
      continue;
    }
    nlohmann::json object;
    try {
      object = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(where + ": not a JSON object (" + e.what() + ")");
    }
    if (!object.is_object())
      throw Error(where + ": expected a JSON object {\"prompt\": ..., \"reference\": ...}, got " +
                  std::string(object.type_name()));
    const auto prompt = object.find("prompt");
    if (prompt == object.end()) throw Error(where + ": no \"prompt\" key");
    if (!prompt->is_string())
      throw Error(where + ": \"prompt\" must be a string, got " + std::string(prompt->type_name()));
    record.prompt = prompt->get<std::string>();
    if (record.prompt.empty()) throw Error(where + ": \"prompt\" is empty");
    if (const auto reference = object.find("reference"); reference != object.end()) {
      if (!reference->is_string())
        throw Error(where + ": \"reference\" must be a string, got " +
                    std::string(reference->type_name()));
      record.reference = reference->get<std::string>();
    }
    file.prompts.push_back(std::move(record));
  }
  if (file.prompts.empty())
    throw Error("prompt file '" + path.string() + "' holds no prompts" +
                (jsonl ? " (expected JSON lines {\"prompt\": ..., \"reference\": ...})"
                       : " (expected one prompt per line)"));
  return file;
}

// Replaces the references of `file` by the lines of `references_path` (one per prompt).
inline void attach_references(PromptFile& file, const std::filesystem::path& references_path) {
  std::vector<std::string> lines = detail::read_lines(references_path, "references file");
  // A final newline does not start another reference.
  if (!lines.empty() && lines.back().empty() && lines.size() == file.prompts.size() + 1)
    lines.pop_back();
  if (lines.size() != file.prompts.size())
    throw Error("references file '" + references_path.string() + "' has " +
                std::to_string(lines.size()) + " lines but prompt file '" + file.path.string() +
                "' has " + std::to_string(file.prompts.size()) +
                " prompts (one reference per prompt, in order)");
  for (std::size_t i = 0; i < lines.size(); ++i) file.prompts[i].reference = std::move(lines[i]);
}

// Every prompt must carry a reference (risk consistency).
inline void require_references(const PromptFile& file) {
  for (std::size_t i = 0; i < file.prompts.size(); ++i)
    if (!file.prompts[i].reference)
      throw Error(file.where(i) + ": no reference for this prompt; --consistency risk needs one "
                  "per prompt (a \"reference\" key in the JSON line, or --references FILE)");
}

// Prompts and references as token ids for a model: prompts with BOS, references without.
struct EncodedPrompts {
  std::vector<std::vector<int>> prompts;
  std::vector<std::vector<int>> references;  // empty vectors where a prompt has no reference
};

template <class TokenizerT>
EncodedPrompts encode_prompts(const PromptFile& file, const TokenizerT& tokenizer,
                              std::size_t max_new_tokens, std::size_t max_context) {
  EncodedPrompts out;
  for (std::size_t i = 0; i < file.prompts.size(); ++i) {
    const PromptRecord& r = file.prompts[i];
    std::vector<int> tokens = tokenizer.encode(r.prompt, /*add_bos=*/true);
    if (tokens.size() + max_new_tokens > max_context)
      throw Error(fmt::format("{}: the prompt is {} tokens; with --max-new-tokens {} that exceeds "
                              "the context length {}",
                              file.where(i), tokens.size(), max_new_tokens, max_context));
    out.prompts.push_back(std::move(tokens));
    out.references.push_back(r.reference ? tokenizer.encode(*r.reference, /*add_bos=*/false)
                                         : std::vector<int>{});
  }
  return out;
}

// Greedy decode of up to max_new tokens that stops after `eos` (which is not kept in the tokens;
// the report still counts it). Returns the decoder's GenerationResult.
template <class DecoderT>
auto greedy_decode(DecoderT& decoder, const std::vector<int>& prompt, std::size_t max_new, int eos) {
  ArgmaxSampler greedy;
  auto result = decoder.generate(prompt, max_new, greedy,
                                 [eos](const TokenStats& ts) { return ts.token != eos; });
  if (!result.tokens.empty() && result.tokens.back() == eos) result.tokens.pop_back();
  return result;
}

// --grid HIGH,LOW,STEP: the descending lambda grid HIGH, HIGH - STEP, ..., LOW (default
// 1,0.05,0.05, docs/design.md §6). Measures whose scores crowd near 1 (hidden-state saturation)
// need a fine grid there, e.g. 1,0.9,0.005.
inline std::vector<double> parse_lambda_grid(const std::string& text) {
  std::vector<double> v;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    const std::size_t end = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, end - begin);
    std::size_t used = 0;
    double value = 0.0;
    try {
      value = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size())
      throw Error("--grid '" + text + "': '" + item + "' is not a number (expected HIGH,LOW,STEP)");
    v.push_back(value);
    begin = end + 1;
  }
  if (v.size() != 3) throw Error("--grid '" + text + "': expected three numbers HIGH,LOW,STEP");
  try {
    return calibrate::lambda_grid(v[0], v[1], v[2]);
  } catch (const Error& e) {
    throw Error("--grid '" + text + "': " + e.what());
  }
}

// A one-line progress bar with rate and ETA on stderr, redrawn at most 10 times a second. When
// stderr is not a terminal it prints nothing until finish(), which prints one summary line.
class Progress {
 public:
  using Clock = std::chrono::steady_clock;

  Progress(std::string label, std::size_t total, std::string unit = "decodes")
      : label_(std::move(label)), unit_(std::move(unit)), total_(total),
        terminal_(::isatty(STDERR_FILENO) == 1), start_(Clock::now()), last_draw_(start_) {}

  void tick(std::size_t n = 1) {
    done_ += n;
    const auto now = Clock::now();
    if (terminal_ && (now - last_draw_ > std::chrono::milliseconds(100) || done_ == total_)) {
      draw(now);
      last_draw_ = now;
    }
  }

  void finish() {
    const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    if (terminal_) fmt::print(stderr, "\r\x1b[2K");
    fmt::print(stderr, "{}: {} {} in {:.1f} s\n", label_, done_, unit_, seconds);
  }

 private:
  void draw(Clock::time_point now) const {
    constexpr std::size_t kWidth = 30;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double share = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
    const auto filled = static_cast<std::size_t>(share * kWidth);
    const double rate = seconds > 0 ? static_cast<double>(done_) / seconds : 0.0;
    const double eta = rate > 0 ? static_cast<double>(total_ - std::min(done_, total_)) / rate : 0.0;
    fmt::print(stderr, "\r\x1b[2K{} [{}{}] {}/{} {}, {:.0f}/s, ETA {:.0f} s", label_,
               std::string(filled, '#'), std::string(kWidth - filled, '.'), done_, total_, unit_,
               rate, eta);
    std::fflush(stderr);
  }

  std::string label_, unit_;
  std::size_t total_ = 0, done_ = 0;
  bool terminal_ = false;
  Clock::time_point start_, last_draw_;
};

}  // namespace calm::cli
