// How often each token of a model's vocabulary occurs in a reference text, tokenized with the
// model's own tokenizer: the ranking a draft head over a sub-vocabulary takes its tokens from
// (calm/drafts/sub_vocabulary.hpp; FR-Spec, Zhao et al. 2025). Stored beside the model as
// token_frequencies.json (calm-count-tokens writes it):
//   {"format": "calm-token-frequencies", "version": 1, "vocab_size": V,
//    "source": "<what was counted>", "tokens_counted": N, "counts": [c_0, ..., c_{V-1}]}
// counts[t] is how often token id t occurred; they sum to tokens_counted. Every error names the
// file and the field; writing is atomic and reads the document back first.
#pragma once

#include <calm/core/error.hpp>
#include <calm/io/atomic_file.hpp>
#include <calm/io/json.hpp>
#include <calm/io/mapped_file.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <span>
#include <string>
#include <vector>

namespace calm {

inline constexpr const char* kTokenFrequenciesFormat = "calm-token-frequencies";
inline constexpr int kTokenFrequenciesVersion = 1;
inline constexpr const char* kTokenFrequenciesFile = "token_frequencies.json";

struct TokenFrequencies {
  std::vector<std::uint64_t> counts;  // (vocab) occurrences of each token id
  std::string source;                 // what was counted, in words (a file name)

  std::size_t vocab_size() const noexcept { return counts.size(); }
  std::uint64_t total() const noexcept {
    return std::accumulate(counts.begin(), counts.end(), std::uint64_t{0});
  }

  // Counts `tokens` (ids in [0, vocab)); an id outside the vocabulary is an error naming it.
  static TokenFrequencies count(std::span<const int> tokens, std::size_t vocab,
                                std::string source) {
    if (vocab == 0) throw Error("TokenFrequencies::count: the vocabulary is empty");
    TokenFrequencies f{std::vector<std::uint64_t>(vocab, 0), std::move(source)};
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      const int t = tokens[i];
      if (t < 0 || static_cast<std::size_t>(t) >= vocab)
        throw Error("TokenFrequencies::count: token " + std::to_string(t) + " at position " +
                    std::to_string(i) + " is outside the vocabulary (size " +
                    std::to_string(vocab) + ")");
      ++f.counts[static_cast<std::size_t>(t)];
    }
    return f;
  }

  // The n most frequent token ids (more occurrences first, then the lower id), with every id of
  // `always` among them (a stop token the model must be able to draft even if the text never
  // shows it): those take the places of the least frequent. Ascending by id, the order a head's
  // rows are read in. n is clamped to the vocabulary.
  std::vector<std::uint32_t> top(std::size_t n, std::span<const int> always = {}) const {
    const std::size_t v = counts.size();
    n = std::min(n, v);
    std::vector<std::uint32_t> ranked(v);
    std::iota(ranked.begin(), ranked.end(), 0u);
    std::vector<char> forced(v, 0);
    for (int t : always) {
      if (t < 0 || static_cast<std::size_t>(t) >= v)
        throw Error("TokenFrequencies::top: token " + std::to_string(t) +
                    " is outside the vocabulary (size " + std::to_string(v) + ")");
      forced[static_cast<std::size_t>(t)] = 1;
    }
    // Forced ids first, then by count (descending), then by id: a total order, so the ranking
    // is the same on every standard library.
    std::sort(ranked.begin(), ranked.end(), [&](std::uint32_t a, std::uint32_t b) {
      if (forced[a] != forced[b]) return forced[a] > forced[b];
      if (counts[a] != counts[b]) return counts[a] > counts[b];
      return a < b;
    });
    ranked.resize(n);
    std::sort(ranked.begin(), ranked.end());
    return ranked;
  }
};

// The document as written (and as read back before writing).
inline nlohmann::json to_json(const TokenFrequencies& f) {
  return nlohmann::json{{"format", kTokenFrequenciesFormat},
                        {"version", kTokenFrequenciesVersion},
                        {"vocab_size", f.counts.size()},
                        {"source", f.source},
                        {"tokens_counted", f.total()},
                        {"counts", f.counts}};
}

// Reads a document; `where` names it in errors. vocab_size, when not 0, must match the file's
// (the model's vocabulary: a table of another model's tokens would rank the wrong rows).
inline TokenFrequencies token_frequencies_from_json(const nlohmann::json& doc,
                                                    const std::string& where,
                                                    std::size_t vocab_size = 0) {
  const auto fail = [&](const std::string& field, const std::string& what) -> void {
    throw Error(where + ": \"" + field + "\" " + what);
  };
  if (!doc.is_object()) throw Error(where + ": not a JSON object");
  for (const auto& [key, value] : doc.items()) {
    if (key != "format" && key != "version" && key != "vocab_size" && key != "source" &&
        key != "tokens_counted" && key != "counts")
      throw Error(where + ": unknown key \"" + key + "\" (a newer format version?)");
  }
  const auto field = [&](const char* key) -> const nlohmann::json& {
    const auto it = doc.find(key);
    if (it == doc.end()) throw Error(where + ": no \"" + key + "\"");
    return *it;
  };
  const auto count_value = [&](const nlohmann::json& v, const std::string& name) {
    if (!v.is_number_unsigned()) fail(name, "must be a non-negative integer, got " + io::describe_json(v));
    return v.get<std::uint64_t>();
  };
  if (field("format") != kTokenFrequenciesFormat)
    fail("format", "must be \"" + std::string(kTokenFrequenciesFormat) + "\", got " +
                       io::describe_json(field("format")));
  if (field("version") != kTokenFrequenciesVersion)
    fail("version", "must be " + std::to_string(kTokenFrequenciesVersion) + ", got " +
                        io::describe_json(field("version")));
  if (!field("source").is_string()) fail("source", "must be a string, got " + io::describe_json(field("source")));
  const std::uint64_t vocab = count_value(field("vocab_size"), "vocab_size");
  if (vocab == 0) fail("vocab_size", "must be at least 1");
  if (vocab_size != 0 && vocab != vocab_size)
    fail("vocab_size", "is " + std::to_string(vocab) + " but the model's vocabulary has " +
                           std::to_string(vocab_size) + " tokens (counted with another tokenizer?)");
  const nlohmann::json& counts = field("counts");
  if (!counts.is_array() || counts.size() != vocab)
    fail("counts", "must be an array of vocab_size = " + std::to_string(vocab) +
                       " counts, got " + io::describe_json(counts));
  TokenFrequencies f{std::vector<std::uint64_t>(counts.size()), field("source").get<std::string>()};
  for (std::size_t i = 0; i < counts.size(); ++i)
    f.counts[i] = count_value(counts[i], "counts[" + std::to_string(i) + "]");
  const std::uint64_t total = count_value(field("tokens_counted"), "tokens_counted");
  if (total != f.total())
    fail("tokens_counted", "is " + std::to_string(total) + " but the counts sum to " +
                               std::to_string(f.total()));
  return f;
}

inline TokenFrequencies read_token_frequencies(const std::filesystem::path& path,
                                               std::size_t vocab_size = 0) {
  const io::MappedFile file(path);
  return token_frequencies_from_json(
      io::parse_json(io::as_text(file.bytes()), "token frequencies", path.string()),
      "token frequencies '" + path.string() + "'", vocab_size);
}

inline void write_token_frequencies(const std::filesystem::path& path, const TokenFrequencies& f) {
  const nlohmann::json doc = to_json(f);
  token_frequencies_from_json(doc, path.string() + " (before writing)");
  const std::string text = doc.dump() + "\n";
  io::write_atomically(path, [&](std::FILE* file) { io::write_all(file, text.data(), text.size(), path); });
}

}  // namespace calm
