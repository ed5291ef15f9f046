// A generation's report in the formats calm's programs write: JSON (per token and per sequence)
// and an HTML page that colours each token by its exit layer.
#pragma once

#include <calm/core/error.hpp>
#include <calm/core/printf.hpp>
#include <calm/io/atomic_file.hpp>
#include <calm/report.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace calm::io {

// One generated token with the text it decoded to.
struct TokenText {
  std::string text;
  TokenStats stats;
};

// The offset of the first byte of s that is not part of well-formed UTF-8 (overlong forms,
// surrogates and code points past U+10FFFF included), or npos when s is valid UTF-8.
inline std::size_t invalid_utf8_offset(std::string_view s) noexcept {
  const auto* b = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned c = b[i];
    std::size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (c < 0x80) { ++i; continue; }
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else return i;
    if (i + len > n) return i;
    for (std::size_t k = 1; k < len; ++k) {
      const unsigned d = b[i + k];
      if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

// Refuses text that a JSON report cannot hold: `what` (e.g. "--prompt") names it in the error.
inline void check_utf8(std::string_view s, const std::string& what) {
  const std::size_t at = invalid_utf8_offset(s);
  if (at == std::string_view::npos) return;
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(s[at]));
  throw Error(what + " is not valid UTF-8: byte " + hex + " at offset " + std::to_string(at) +
              " (JSON output needs UTF-8 text)");
}

// Green for exits in the lower half of the layers, red in the upper half.
inline bool exits_low(std::size_t exit_layer, std::size_t num_layers) noexcept {
  return 2 * exit_layer <= num_layers;
}

inline nlohmann::json report_json(const std::vector<TokenText>& pieces, const SequenceReport& r) {
  nlohmann::json tokens = nlohmann::json::array();
  const auto num = [](float v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
  for (const TokenText& p : pieces)
    tokens.push_back({{"step", p.stats.step}, {"token", p.stats.token}, {"text", p.text},
                      {"exit_layer", p.stats.exit_layer}, {"confidence", num(p.stats.confidence)},
                      {"threshold", num(p.stats.threshold)}, {"checks", p.stats.checks}});
  return {{"num_layers", r.num_layers},
          {"prompt_tokens", r.prompt_tokens},
          {"generated_tokens", r.tokens.size()},
          {"average_layers", r.average_layers()},
          {"layer_speedup", r.layer_speedup()},
          {"tokens_per_second", r.tokens_per_second()},
          {"prefill_seconds", r.prefill_seconds},
          {"generation_seconds", r.generation_seconds},
          {"layer_seconds", r.layer_seconds},
          {"check_seconds", r.check_seconds},
          {"propagation_seconds", r.propagation_seconds},
          {"head_seconds", r.head_seconds},
          {"tokens", tokens}};
}

using calm::printf_string;  // the summaries below (core/printf.hpp)

// A sequence's speed and where its time went, in two lines: "prefill: 3 tokens, 512.0 tokens/s |
// generation: ...\naverage layers 6.63 of 8 | layer speedup 1.21x | time: layers 80%, ...".
inline std::string report_summary(const SequenceReport& r) {
  const double g = std::max(r.generation_seconds, 1e-12);
  return printf_string(
      "prefill: %zu tokens, %.1f tokens/s | generation: %zu tokens, %.1f tokens/s\n"
      "average layers %.2f of %zu | layer speedup %.2fx | time: layers %.0f%%, checks %.0f%%, "
      "propagation %.0f%%, head %.0f%%",
      r.prompt_tokens, r.prefill_seconds > 0 ? double(r.prompt_tokens) / r.prefill_seconds : 0.0,
      r.tokens.size(), r.tokens_per_second(), r.average_layers(), r.num_layers,
      r.layer_speedup(), 100 * r.layer_seconds / g, 100 * r.check_seconds / g,
      100 * r.propagation_seconds / g, 100 * r.head_seconds / g);
}

// What speculation did, as one line and as JSON ("speculative" in calm-generate --json).
inline std::string speculation_summary(const SpeculationStats& st) {
  const double total = std::max(st.draft_seconds + st.verify_seconds, 1e-12);
  return printf_string(
      "speculative: %zu verifications | acceptance %.2f | %.2f tokens per verification | "
      "draft exit layer %.2f | time: draft %.0f%%, verify %.0f%%",
      st.rounds, st.acceptance_rate(), st.tokens_per_round(), st.mean_draft_exit(),
      100 * st.draft_seconds / total, 100 * st.verify_seconds / total) +
         (st.lookup_drafted ? printf_string(" | n-gram drafts %zu, accepted %zu",
                                            st.lookup_drafted, st.lookup_accepted)
                            : std::string()) +
         (st.adaptive_gamma ? printf_string(" | gamma auto: mean %.2f, %zu to %zu",
                                            st.mean_gamma(), st.min_gamma(), st.max_gamma())
                            : std::string());
}
inline nlohmann::json speculation_json(const SpeculationStats& st) {
  return {{"verifications", st.rounds},
          {"drafted", st.drafted},
          {"accepted", st.accepted},
          {"acceptance_rate", st.acceptance_rate()},
          {"tokens_per_verification", st.tokens_per_round()},
          {"mean_draft_exit_layer", st.mean_draft_exit()},
          {"lookup_drafted", st.lookup_drafted},
          {"lookup_accepted", st.lookup_accepted},
          {"draft_seconds", st.draft_seconds},
          {"verify_seconds", st.verify_seconds},
          {"gamma", {{"adaptive", st.adaptive_gamma},
                     {"mean", st.mean_gamma()},
                     {"min", st.min_gamma()},
                     {"max", st.max_gamma()},
                     {"rounds_per_gamma", st.gamma_rounds}}}};
}

inline std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

inline std::string exits_html(const std::string& prompt, const std::vector<TokenText>& pieces,
                              const SequenceReport& r) {
  const auto fixed = [](double v, int digits) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
    return std::string(buf);
  };
  std::string body;
  for (const TokenText& p : pieces)
    body += std::string("<span class=\"") + (exits_low(p.stats.exit_layer, r.num_layers) ? "low" : "high") +
            "\" title=\"exit layer " + std::to_string(p.stats.exit_layer) + " of " +
            std::to_string(r.num_layers) + ", confidence " + fixed(p.stats.confidence, 3) +
            ", threshold " + fixed(p.stats.threshold, 3) + "\">" + html_escape(p.text) + "</span>";
  const std::size_t half = r.num_layers / 2;
  return "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>calm: exits per token</title>\n"
         "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
         "pre{white-space:pre-wrap;font-size:1.1em;line-height:1.6}"
         ".low{background:#b9f6ca}.high{background:#ffcdd2}.prompt{color:#555}</style></head>\n"
         "<body><h1>calm: where each token left the network</h1>\n"
         "<p>Legend: <span class=\"low\">exited in layers 1.." + std::to_string(half) +
         "</span> <span class=\"high\">exited in layers " + std::to_string(half + 1) + ".." +
         std::to_string(r.num_layers) + "</span>. Hover a token for its exit layer.</p>\n"
         "<pre><span class=\"prompt\">" + html_escape(prompt) + "</span>" + body + "</pre>\n"
         "<p>" + std::to_string(r.tokens.size()) + " tokens, average layers " +
         fixed(r.average_layers(), 2) + " of " + std::to_string(r.num_layers) +
         ", layer speedup " + fixed(r.layer_speedup(), 2) + "x, " +
         fixed(r.tokens_per_second(), 1) + " tokens/s.</p>\n</body></html>\n";
}

// Written atomically: a failed write leaves no half-written page.
inline void write_exits_html(const std::filesystem::path& path, const std::string& prompt,
                             const std::vector<TokenText>& pieces, const SequenceReport& r) {
  const std::string page = exits_html(prompt, pieces, r);
  write_atomically(path, [&](std::FILE* f) { write_all(f, page.data(), page.size(), path); });
}

}  // namespace calm::io
