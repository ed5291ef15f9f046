// Prompt files for calibration and evaluation (docs/calibration.md), their references, their
// token ids, and the greedy decode that calibration runs on each prompt (docs/design.md §6).
//
// Two formats, chosen by the file name:
//   *.jsonl  one JSON object per line: {"prompt": "...", "reference": "..."} ("reference" is
//            optional, other keys are ignored: train.py also writes "block"); blank lines skipped;
//   other    plain text, one prompt per line (no newlines inside a prompt); blank lines skipped.
// A references file is plain text, one reference per line, blank lines kept: line k is the
// reference of prompt k. Every error names the file, and the 1-based line where there is one.
#pragma once

#include <calm/core/error.hpp>
#include <calm/decoding/common.hpp>
#include <calm/io/json.hpp>
#include <calm/io/mapped_file.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace calm::io {

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

// The lines of a text file without their '\n' (and a Windows '\r'); what = "prompt file", ...
inline std::vector<std::string> read_lines(const std::filesystem::path& path, const char* what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(std::string(what) + " '" + path.string() + "' is a directory, not a file");
  require_regular_file(path, what);  // a FIFO would block the open below
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(std::string("cannot read ") + what + " '" + path.string() + "'");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
  }
  if (in.bad())
    throw Error(std::string("error while reading ") + what + " '" + path.string() + "'");
  return lines;
}

inline bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return c == ' ' || c == '\t'; });
}

// One JSON line: {"prompt": ..., "reference": ...}; where = "<file>:<line>".
inline void parse_prompt_object(const std::string& line, const std::string& where,
                                PromptRecord& record) {
  // parse_json refuses NUL bytes, deep nesting and duplicate keys; a number out of double's
  // range (1e999) is refused as invalid JSON too (once it escaped as a bare nlohmann error).
  nlohmann::json object;
  try {
    object = parse_json(line, "JSON line", where);
  } catch (const Error& e) {
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
}

}  // namespace detail

inline PromptFile read_prompt_file(const std::filesystem::path& path) {
  const std::vector<std::string> lines = detail::read_lines(path, "prompt file");
  PromptFile file{path, {}};
  const bool jsonl = path.extension() == ".jsonl";
  for (std::size_t k = 0; k < lines.size(); ++k) {
    if (detail::blank(lines[k])) continue;
    PromptRecord record;
    record.source = path;
    record.line = k + 1;
    if (jsonl)
      detail::parse_prompt_object(lines[k], path.string() + ":" + std::to_string(k + 1), record);
    else
      record.prompt = lines[k];
    file.prompts.push_back(std::move(record));
  }
  if (file.prompts.empty())
    throw Error("prompt file '" + path.string() + "' holds no prompts" +
                (jsonl ? " (expected JSON lines {\"prompt\": ..., \"reference\": ...})"
                       : " (expected one prompt per line)"));
  return file;
}

// Prompt `index` (0-based) of a prompt file (read_prompt_file's formats), e.g. one prompt of a
// model's test split; an index past the end is refused naming the file and its count.
inline std::string prompt_at(const std::filesystem::path& path, std::size_t index) {
  PromptFile file = read_prompt_file(path);
  if (index >= file.prompts.size())
    throw Error("'" + path.string() + "' holds " + std::to_string(file.prompts.size()) +
                " prompts: there is no prompt " + std::to_string(index) + " (counted from 0)");
  return std::move(file.prompts[index].prompt);
}

// Appends the first `limit` prompts of `file` (0: all) to `pool`, each keeping its own file and
// line for error messages. Returns how many it appended.
inline std::size_t append_prompts(PromptFile& pool, const PromptFile& file, std::size_t limit = 0) {
  const std::size_t count = limit ? std::min(limit, file.prompts.size()) : file.prompts.size();
  pool.prompts.insert(pool.prompts.end(), file.prompts.begin(),
                      file.prompts.begin() + static_cast<std::ptrdiff_t>(count));
  return count;
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

// Every prompt must carry a reference (risk consistency, docs/design.md §6).
inline void require_references(const PromptFile& file) {
  for (std::size_t i = 0; i < file.prompts.size(); ++i)
    if (!file.prompts[i].reference)
      throw Error(file.where(i) +
                  ": no reference for this prompt; --consistency risk needs one "
                  "per prompt (a \"reference\" key in the JSON line, or --references FILE)");
}

// Prompts and references as token ids for a model: prompts with BOS, references without.
struct EncodedPrompts {
  std::vector<std::vector<int>> prompts;
  std::vector<std::vector<int>> references;  // empty vectors where a prompt has no reference
};

// The longest prompt or reference, in bytes per token of the context, that is tokenized: longer
// text is refused before the tokenizer spends seconds and gigabytes on it (a 5 MB line took 7 s
// and 480 MB, a 100 MB one ran out of memory). English text averages about 4 bytes per token, so
// text over 32 bytes per token of context cannot fit in practice; the exception is a long run of
// what a tokenizer folds away (sentencepiece collapses runs of spaces), which the message names.
inline constexpr std::size_t kMaxTextBytesPerToken = 32;

// TokenizerT: encode(text, add_bos) -> std::vector<int> (calm::Tokenizer). Every prompt must leave
// room for max_new_tokens within max_context; prompts and references longer than
// kMaxTextBytesPerToken bytes per token of max_context are refused before they are tokenized.
template <class TokenizerT>
EncodedPrompts encode_prompts(const PromptFile& file, const TokenizerT& tokenizer,
                              std::size_t max_new_tokens, std::size_t max_context) {
  const std::size_t max_bytes = kMaxTextBytesPerToken * max_context;
  const auto encode = [&](std::size_t i, const std::string& text, const char* what, bool bos) {
    if (text.size() > max_bytes)
      throw Error(file.where(i) + ": the " + what + " is " + std::to_string(text.size()) +
                  " bytes, more than the " + std::to_string(max_bytes) + " read (" +
                  std::to_string(kMaxTextBytesPerToken) + " bytes per token of the context length " +
                  std::to_string(max_context) + "; it cannot fit unless the tokenizer folds runs "
                  "of spaces away)");
    try {
      return tokenizer.encode(text, bos);
    } catch (const std::bad_alloc&) {
      throw Error(file.where(i) + ": out of memory tokenizing the " + what + " (" +
                  std::to_string(text.size()) + " bytes)");
    }
  };
  EncodedPrompts out;
  for (std::size_t i = 0; i < file.prompts.size(); ++i) {
    const PromptRecord& r = file.prompts[i];
    std::vector<int> tokens = encode(i, r.prompt, "prompt", /*bos=*/true);
    if (tokens.size() + max_new_tokens > max_context)
      throw Error(file.where(i) + ": the prompt is " + std::to_string(tokens.size()) +
                  " tokens; with --max-new-tokens " + std::to_string(max_new_tokens) +
                  " that exceeds the context length " + std::to_string(max_context));
    out.prompts.push_back(std::move(tokens));
    out.references.push_back(r.reference ? encode(i, *r.reference, "reference", /*bos=*/false)
                                         : std::vector<int>{});
  }
  return out;
}

// Whether `token` is one of `ends` (Tokenizer::end_tokens: every token that ends generation).
inline bool is_end_token(const std::vector<int>& ends, int token) {
  return std::find(ends.begin(), ends.end(), token) != ends.end();
}

// Decodes up to max_new tokens with any calm::Decoder and sampler, stopping after any of `ends`,
// which is dropped from the tokens (the report still counts it: it was computed). Returns the
// decoder's GenerationResult.
template <class DecoderT, class SamplerT>
auto decode_until_end(DecoderT& decoder, const std::vector<int>& prompt, std::size_t max_new,
                      SamplerT& sampler, const std::vector<int>& ends) {
  auto result = decoder.generate(prompt, max_new, sampler, [&ends](const auto& token) {
    return !is_end_token(ends, token.token);
  });
  if (!result.tokens.empty() && is_end_token(ends, result.tokens.back())) result.tokens.pop_back();
  return result;
}

// The same, greedy.
template <class DecoderT>
auto greedy_decode(DecoderT& decoder, const std::vector<int>& prompt, std::size_t max_new,
                   const std::vector<int>& ends) {
  ArgmaxSampler greedy;
  return decode_until_end(decoder, prompt, max_new, greedy, ends);
}

}  // namespace calm::io
