// HfTokenizer: a Hugging Face tokenizer.json whose model is byte-level BPE (Llama 3.x, GPT-2),
// with its regex pre-tokenizer run by PCRE2 (link calm::tokenizer). What the format may hold,
// what calm implements and what it refuses by name: docs/design.md §12.
//
// Encoding, as the Hugging Face tokenizers library does it:
//   1. added tokens (<|begin_of_text|>, <|eot_id|>, ...) are cut out of the raw text, leftmost
//      first and longest at each position;
//   2. each stretch between them is split by the pre-tokenizers: `Split` (a regex, each match and
//      each gap a piece) and `ByteLevel` (optionally a space before each piece, optionally the
//      GPT-2 regex), in their order;
//   3. each piece's bytes are merged by BPE, lowest merge rank first (leftmost among equals); with
//      `ignore_merges`, a piece that is itself in the vocabulary is one token.
// Text is UTF-8; an ill-formed sequence is replaced by U+FFFD before step 1 (the replacement a
// WHATWG TextDecoder makes when it reads such bytes, so the ids are those the reference
// implementations give for that text). Decoding replaces ill-formed byte sequences by U+FFFD the
// same way (as Hugging Face's decoders do).
#pragma once

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "calm/core/error.hpp"
#include "calm/io/json.hpp"
#include "calm/io/mapped_file.hpp"

namespace calm::io {

namespace hf_detail {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

// The sequence a UTF-8 lead byte starts: how many continuation bytes follow and the range of the
// first of them. False for bytes that start no well-formed sequence.
inline bool utf8_lead(unsigned char b, std::size_t& need, unsigned char& lo, unsigned char& hi) {
  lo = 0x80;
  hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2;
    if (b == 0xE0) lo = 0xA0;  // no overlong forms
    if (b == 0xED) hi = 0x9F;  // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3;
    if (b == 0xF0) lo = 0x90;  // no overlong forms
    if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return false;  // a continuation byte, C0, C1 or F5..FF
  }
  return true;
}

// Appends `bytes` to `out` as UTF-8 text, each maximal ill-formed subsequence replaced by one
// U+FFFD: the WHATWG Encoding Standard's UTF-8 decoder (Unicode §3.9, "substitution of maximal
// subparts"), which TextDecoder, Rust's String::from_utf8_lossy and Python's errors="replace"
// follow. With `final` false, a trailing sequence that is incomplete but could still become
// well-formed is held back: nothing of it is written and its length is returned. Feeding a byte
// stream in chunks (the held-back tail first in the next chunk) writes exactly what one call on
// the whole stream writes.
inline std::size_t append_utf8_lossy(std::string_view bytes, std::string& out, bool final) {
  const std::size_t n = bytes.size();
  std::size_t i = 0;
  while (i < n) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    if (b < 0x80) {
      std::size_t j = i + 1;
      while (j < n && static_cast<unsigned char>(bytes[j]) < 0x80) ++j;
      out.append(bytes.substr(i, j - i));
      i = j;
      continue;
    }
    std::size_t need = 0;
    unsigned char lo = 0, hi = 0;  // bounds of the next byte
    if (!utf8_lead(b, need, lo, hi)) {
      out += kReplacement;
      ++i;
      continue;
    }
    std::size_t k = 1;
    bool bad = false;
    for (; k <= need && i + k < n; ++k) {
      const auto c = static_cast<unsigned char>(bytes[i + k]);
      if (c < lo || c > hi) {
        bad = true;
        break;
      }
      lo = 0x80;
      hi = 0xBF;
    }
    if (!bad && k > need) {
      out.append(bytes.substr(i, need + 1));
      i += need + 1;
    } else if (!bad) {  // the input ends inside the sequence
      if (!final) return n - i;
      out += kReplacement;
      return 0;
    } else {
      out += kReplacement;  // the bytes so far; the one that broke the sequence starts anew
      i += k;
    }
  }
  return 0;
}

// Offset of the first byte of `bytes` that is not part of well-formed UTF-8, or npos.
inline std::size_t find_ill_formed_utf8(std::string_view bytes) {
  const std::size_t n = bytes.size();
  std::size_t i = 0;
  while (i < n) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    std::size_t need = 0;
    unsigned char lo = 0, hi = 0;
    if (!utf8_lead(b, need, lo, hi) || i + need >= n) return i;
    for (std::size_t k = 1; k <= need; ++k) {
      const auto c = static_cast<unsigned char>(bytes[i + k]);
      if (c < lo || c > hi) return i;
      lo = 0x80;
      hi = 0xBF;
    }
    i += need + 1;
  }
  return std::string_view::npos;
}

// GPT-2's byte-level alphabet: byte b is written as the character byte_char()[b] (printable
// Latin-1 bytes as themselves, the others as U+0100 + k in byte order), so that every byte
// string is printable text. Its inverse maps U+0000..U+0143 back (-1: not in the alphabet).
inline const std::array<char32_t, 256>& byte_char() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      t[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}
inline constexpr std::size_t kByteAlphabetEnd = 256 + 68;  // 68 bytes are not printable
inline const std::array<int, kByteAlphabetEnd>& char_byte() {
  static const std::array<int, kByteAlphabetEnd> table = [] {
    std::array<int, kByteAlphabetEnd> t{};
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[byte_char()[static_cast<std::size_t>(b)]] = b;
    return t;
  }();
  return table;
}

// Decodes well-formed UTF-8 (as nlohmann::json strings are) one code point at a time.
inline char32_t next_code_point(std::string_view s, std::size_t& i) {
  const auto b = static_cast<unsigned char>(s[i]);
  const std::size_t len = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
  char32_t cp = len == 1 ? b : len == 2 ? (b & 0x1Fu) : len == 3 ? (b & 0x0Fu) : (b & 0x07u);
  for (std::size_t k = 1; k < len && i + k < s.size(); ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3Fu);
  i += len;
  return cp;
}

// BPE merges: (left id, right id) -> (rank, merged id), open addressing with linear probing.
// Looked up once or twice per byte encoded; a flat table keeps each lookup to about one cache line.
class MergeTable {
 public:
  struct Value {
    int rank = -1;
    int id = -1;  // the merged token
  };
  static std::uint64_t key(int a, int b) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
           static_cast<std::uint32_t>(b);
  }
  void reserve(std::size_t n) {
    std::size_t capacity = 16;
    while (capacity < 2 * n) capacity *= 2;
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
  }
  // Inserts or replaces.
  void set(int a, int b, Value v) {
    if (2 * (size_ + 1) > slots_.size()) grow();
    Slot& s = find_slot(key(a, b));
    if (s.key == kEmpty) ++size_;
    s = {key(a, b), v};
  }
  const Value* find(int a, int b) const noexcept {
    if (slots_.empty()) return nullptr;
    const Slot& s = const_cast<MergeTable*>(this)->find_slot(key(a, b));
    return s.key == kEmpty ? nullptr : &s.value;
  }

 private:
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};  // ids are below 2^31
  struct Slot {
    std::uint64_t key = kEmpty;
    Value value;
  };
  Slot& find_slot(std::uint64_t k) noexcept {
    std::size_t i = static_cast<std::size_t>((k * 0x9E3779B97F4A7C15ull) >> 20) & mask_;
    while (slots_[i].key != kEmpty && slots_[i].key != k) i = (i + 1) & mask_;
    return slots_[i];
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    reserve(std::max<std::size_t>(size_ + 1, old.size()));
    size_ = 0;
    for (const Slot& s : old) {
      if (s.key == kEmpty) continue;
      Slot& t = find_slot(s.key);
      t = s;
      ++size_;
    }
  }
  std::vector<Slot> slots_;
  std::size_t mask_ = 0, size_ = 0;
};

// string -> id over a table of strings indexed by id (the strings stay in that table; the index
// holds ids and hash tags), open addressing with linear probing.
class StringIndex {
 public:
  void build(const std::vector<std::string>& strings, std::size_t count) {
    std::size_t capacity = 16;
    while (capacity < 2 * count) capacity *= 2;
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    for (std::size_t id = 0; id < count; ++id) {
      const std::size_t h = std::hash<std::string_view>{}(strings[id]);
      std::size_t i = h & mask_;
      while (slots_[i].id >= 0) i = (i + 1) & mask_;
      slots_[i] = {static_cast<int>(id), static_cast<std::uint32_t>(h >> 32)};
    }
  }
  // The id of `key` among `strings` (the table given to build()), or -1.
  int find(std::string_view key, const std::vector<std::string>& strings) const noexcept {
    if (slots_.empty()) return -1;
    const std::size_t h = std::hash<std::string_view>{}(key);
    const auto tag = static_cast<std::uint32_t>(h >> 32);
    for (std::size_t i = h & mask_; slots_[i].id >= 0; i = (i + 1) & mask_) {
      if (slots_[i].tag == tag && strings[static_cast<std::size_t>(slots_[i].id)] == key)
        return slots_[i].id;
    }
    return -1;
  }

 private:
  struct Slot {
    int id = -1;
    std::uint32_t tag = 0;  // high bits of the hash: most mismatches never touch the string
  };
  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
};

inline std::string pcre2_message(int code) {
  PCRE2_UCHAR8 buffer[256];
  if (pcre2_get_error_message_8(code, buffer, sizeof buffer) < 0) return "PCRE2 error " + std::to_string(code);
  return reinterpret_cast<const char*>(buffer);
}

// A compiled pre-tokenizer regex. Patterns in tokenizer.json are written for Oniguruma (what
// the Rust library compiles them with); PCRE2 reads them alike with UTF, UCP and MULTILINE
// (`^`/`$` at lines, as in Oniguruma's Ruby syntax), Unicode case folding in (?i:...) included,
// except for the shorthands whose classes differ: `\s`/`\S` become \p{White_Space}/
// \P{White_Space} (Oniguruma's \s; PCRE2's adds U+180E), and `\w \W \b \B \h \H`, POSIX
// brackets and class intersections (`&&`) are refused rather than translated.
class Regex {
 public:
  Regex(std::string_view pattern, bool literal, const std::string& where) {
    std::string translated = literal ? std::string(pattern) : translate(pattern, where);
    pcre2_compile_context_8* ctx = pcre2_compile_context_create_8(nullptr);
    if (ctx == nullptr) throw Error(where + ": out of memory compiling the regex");
    pcre2_set_newline_8(ctx, PCRE2_NEWLINE_LF);
    int code = 0;
    PCRE2_SIZE offset = 0;
    const std::uint32_t options =
        literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
    pcre2_code_8* re =
        pcre2_compile_8(reinterpret_cast<PCRE2_SPTR8>(translated.data()), translated.size(),
                        options, &code, &offset, ctx);
    pcre2_compile_context_free_8(ctx);
    if (re == nullptr) {
      throw Error(where + ": the regex does not compile (PCRE2, at offset " +
                  std::to_string(offset) + "): " + pcre2_message(code));
    }
    code_.reset(re);
    // JIT where PCRE2 has it for this machine; the interpreter otherwise (same results).
    jit_ = pcre2_jit_compile_8(re, PCRE2_JIT_COMPLETE) == 0;
  }

  // Appends the pieces of `text` (well-formed UTF-8) to `out`: each match, and each stretch
  // between matches ("Isolated" splitting). Empty matches make no piece.
  void split(std::string_view text, std::vector<std::string_view>& out) const {
    std::unique_ptr<pcre2_match_data_8, MatchDataFree> md(
        pcre2_match_data_create_from_pattern_8(code_.get(), nullptr));
    if (!md) throw Error("out of memory matching a pre-tokenizer regex");
    const auto* subject = reinterpret_cast<PCRE2_SPTR8>(text.data());
    const std::size_t n = text.size();
    std::size_t gap = 0, pos = 0;
    while (pos <= n) {
      // The text was checked (or made) well-formed once; PCRE2 would check it at every call.
      int rc = pcre2_match_8(code_.get(), subject, n, pos, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {  // a deep backtrack: the interpreter's heap frames
        rc = pcre2_match_8(code_.get(), subject, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                           md.get(), nullptr);
      }
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) throw Error("pre-tokenizer regex failed: " + pcre2_message(rc));
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer_8(md.get());
      const std::size_t start = ov[0], end = ov[1];
      if (end == start) {  // skip one character; it stays in the gap
        if (start >= n) break;
        const auto b = static_cast<unsigned char>(text[start]);
        pos = start + (b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2);
        continue;
      }
      if (start > gap) out.push_back(text.substr(gap, start - gap));
      out.push_back(text.substr(start, end - start));
      gap = pos = end;
    }
    if (gap < n) out.push_back(text.substr(gap));
  }

  bool jit() const noexcept { return jit_; }

 private:
  struct CodeFree {
    void operator()(pcre2_code_8* c) const noexcept { pcre2_code_free_8(c); }
  };
  struct MatchDataFree {
    void operator()(pcre2_match_data_8* m) const noexcept { pcre2_match_data_free_8(m); }
  };

  static std::string translate(std::string_view p, const std::string& where) {
    std::string out;
    out.reserve(p.size() + 32);
    for (std::size_t i = 0; i < p.size(); ++i) {
      const char c = p[i];
      if (c == '\\' && i + 1 < p.size()) {
        const char e = p[++i];
        switch (e) {
          case 's': out += "\\p{White_Space}"; break;
          case 'S': out += "\\P{White_Space}"; break;
          case 'w': case 'W': case 'b': case 'B': case 'h': case 'H':
            throw Error(where + ": the regex uses \\" + std::string(1, e) +
                        ", whose meaning differs between Oniguruma and PCRE2; calm does not "
                        "translate it");
          default: out += c; out += e;
        }
      } else if (c == '[' && i + 1 < p.size() && p[i + 1] == ':' &&
                 p.find(":]", i + 2) != std::string_view::npos) {
        throw Error(where + ": the regex uses a POSIX bracket ([:name:]), which calm does not "
                            "translate from Oniguruma");
      } else if (c == '&' && i + 1 < p.size() && p[i + 1] == '&') {
        throw Error(where + ": the regex uses '&&' (a class intersection in Oniguruma), which "
                            "calm does not translate");
      } else {
        out += c;
      }
    }
    return out;
  }

  std::unique_ptr<pcre2_code_8, CodeFree> code_;
  bool jit_ = false;
};

}  // namespace hf_detail

class HfTokenizer {
 public:
  // Reads `file` (a tokenizer.json) and, if the same folder has one, tokenizer_config.json for
  // its bos_token/eos_token. Anything malformed or not implemented is a calm::Error naming the
  // file and the key.
  static HfTokenizer load(const std::filesystem::path& file) {
    HfTokenizer t;
    t.path_ = file;
    const MappedFile mapped(file);
    const nlohmann::json doc = parse_json_object(as_text(mapped.bytes()), "tokenizer", file.string());
    t.read(doc);
    const std::filesystem::path config = file.parent_path() / "tokenizer_config.json";
    std::error_code ec;
    if (std::filesystem::exists(config, ec)) t.read_config(config);
    t.find_bos_eos_by_name();
    return t;
  }

  // Token ids of `text` (no BOS: the caller adds it, see bos_id()).
  std::vector<int> encode(std::string_view text) const {
    std::string replaced;
    if (hf_detail::find_ill_formed_utf8(text) != std::string_view::npos) {
      hf_detail::append_utf8_lossy(text, replaced, true);
      text = replaced;
    }
    std::vector<int> ids;
    ids.reserve(text.size() / 3 + 1);
    std::vector<std::string_view> pieces, next;
    std::deque<std::string> prefixed;  // pieces that got a prefix space (stable addresses)
    Scratch scratch;
    const auto encode_stretch = [&](std::string_view stretch) {
      if (stretch.empty()) return;
      pieces.assign(1, stretch);
      for (const auto& re : splits_) {
        next.clear();
        for (std::string_view p : pieces) re->split(p, next);
        pieces.swap(next);
      }
      if (add_prefix_space_) {
        for (std::string_view& p : pieces) {
          if (p.starts_with(' ')) continue;
          std::string& with_space = prefixed.emplace_back(1, ' ');  // not " " + s: g++ 12 warns
          with_space += p;                                           // falsely (-Wrestrict)
          p = with_space;
        }
      }
      if (byte_level_regex_) {
        next.clear();
        for (std::string_view p : pieces) byte_level_regex_->split(p, next);
        pieces.swap(next);
      }
      for (std::string_view p : pieces) bpe(p, ids, scratch);
      prefixed.clear();
    };
    std::size_t stretch = 0, pos = 0;
    while (pos < text.size()) {
      const auto c = static_cast<unsigned char>(text[pos]);
      const Added* match = nullptr;
      for (const std::size_t k : added_by_first_byte_[c]) {  // longest first
        const Added& a = added_[k];
        if (text.compare(pos, a.content.size(), a.content) == 0) {
          match = &a;
          break;
        }
      }
      if (match == nullptr) {
        ++pos;
        continue;
      }
      encode_stretch(text.substr(stretch, pos - stretch));
      ids.push_back(match->id);
      pos += match->content.size();
      stretch = pos;
    }
    encode_stretch(text.substr(stretch));
    return ids;
  }

  // Text of `ids`: their bytes, special tokens left out, ill-formed UTF-8 replaced by U+FFFD.
  std::string decode(std::span<const int> ids) const {
    std::string bytes;
    for (int id : ids) bytes += token_bytes(id);
    std::string text;
    hf_detail::append_utf8_lossy(bytes, text, true);
    return text;
  }

  // The bytes token `id` stands for in decoded text: nothing for a special token, an added
  // token's content, a BPE piece's bytes (which may end inside a UTF-8 sequence).
  std::string_view token_bytes(int id) const {
    check_id(id);
    const auto i = static_cast<std::size_t>(id);
    return special_[i] ? std::string_view() : std::string_view(bytes_[i]);
  }

  int bos_id() const noexcept { return bos_; }  // -1 if none is known
  int eos_id() const noexcept { return eos_; }
  std::size_t vocab_size() const noexcept { return pieces_.size(); }  // BPE vocab + added tokens
  // The token as tokenizer.json writes it ("Ġworld" for " world"; an added token's content).
  const std::string& piece(int id) const {
    check_id(id);
    return pieces_[static_cast<std::size_t>(id)];
  }
  bool is_special(int id) const {
    check_id(id);
    return special_[static_cast<std::size_t>(id)] != 0;
  }
  const std::filesystem::path& path() const noexcept { return path_; }
  bool ignore_merges() const noexcept { return ignore_merges_; }
  // Whether every pre-tokenizer regex runs JIT-compiled (PCRE2 without JIT gives the same ids).
  bool jit() const noexcept {
    return std::all_of(splits_.begin(), splits_.end(), [](const auto& r) { return r->jit(); });
  }

  void check_id(int id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= pieces_.size()) {
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary of '" +
                  path_.string() + "' (" + std::to_string(pieces_.size()) + " pieces)");
    }
  }

 private:
  using json = nlohmann::json;
  struct Added {
    std::string content;
    int id;
  };
  struct Symbol {
    int id, prev, next;  // prev/next: neighbours' indices, -1 at the ends
    bool alive;
  };
  struct Candidate {
    int rank, pos, id;  // merge `pos` with its next symbol into `id`
  };
  struct Scratch {
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
  };

  HfTokenizer() = default;

  // BPE of one piece's bytes, as the Rust library merges (a heap of candidate pairs ordered by
  // rank, then position; a candidate whose pair has changed since is dropped).
  void bpe(std::string_view piece, std::vector<int>& ids, Scratch& s) const {
    if (piece.empty()) return;
    if (ignore_merges_) {
      if (const int id = vocab_.find(piece, bytes_); id >= 0) {
        ids.push_back(id);
        return;
      }
    }
    const int n = static_cast<int>(piece.size());
    if (n == 1) {
      ids.push_back(byte_id_[static_cast<unsigned char>(piece[0])]);
      return;
    }
    auto& sym = s.symbols;
    auto& heap = s.heap;
    sym.clear();
    heap.clear();
    for (int i = 0; i < n; ++i) {
      sym.push_back({byte_id_[static_cast<unsigned char>(piece[static_cast<std::size_t>(i)])],
                     i - 1, i + 1 < n ? i + 1 : -1, true});
    }
    const auto later = [](const Candidate& a, const Candidate& b) {
      return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    };
    const auto consider = [&](int left) {
      const int right = sym[static_cast<std::size_t>(left)].next;
      if (right < 0) return;
      const auto* m = merges_.find(sym[static_cast<std::size_t>(left)].id,
                                   sym[static_cast<std::size_t>(right)].id);
      if (m == nullptr) return;
      heap.push_back({m->rank, left, m->id});
      std::push_heap(heap.begin(), heap.end(), later);
    };
    for (int i = 0; i + 1 < n; ++i) consider(i);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), later);
      const Candidate top = heap.back();
      heap.pop_back();
      Symbol& left = sym[static_cast<std::size_t>(top.pos)];
      if (!left.alive || left.next < 0) continue;
      Symbol& right = sym[static_cast<std::size_t>(left.next)];
      const auto* m = merges_.find(left.id, right.id);
      if (m == nullptr || m->id != top.id) continue;  // stale
      left.id = top.id;
      right.alive = false;
      left.next = right.next;
      if (right.next >= 0) sym[static_cast<std::size_t>(right.next)].prev = top.pos;
      if (left.prev >= 0) consider(left.prev);
      consider(top.pos);
    }
    for (int i = 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next)
      ids.push_back(sym[static_cast<std::size_t>(i)].id);
  }

  // ---- loading ----

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error("'" + path_.string() + "': key '" + key + "': " + what);
  }
  [[noreturn]] void not_implemented(const std::string& key, const json& value,
                                    const std::string& why) const {
    std::string what = describe_json(value);  // a type's name as itself, an object by its type
    if (value.is_string()) what = value.dump();
    if (value.is_object() && value.contains("type") && value["type"].is_string())
      what = "type " + value["type"].dump();
    fail(key, what + " is not implemented: " + why + " (docs/design.md §12)");
  }
  const json& member(const json& obj, const char* name, const std::string& key) const {
    const auto it = obj.find(name);
    if (it == obj.end()) fail(key.empty() ? name : key + "." + name, "missing");
    return *it;
  }
  const json* optional(const json& obj, const char* name) const {
    const auto it = obj.find(name);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  bool flag(const json& obj, const char* name, const std::string& key, bool fallback) const {
    const json* v = optional(obj, name);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) fail(key + "." + name, "expected true or false, got " + describe_json(*v));
    return v->get<bool>();
  }
  std::string type_of(const json& obj, const std::string& key) const {
    if (!obj.is_object()) fail(key, "expected an object, got " + describe_json(obj));
    const json& t = member(obj, "type", key);
    if (!t.is_string()) fail(key + ".type", "expected a string, got " + describe_json(t));
    return t.get<std::string>();
  }

  void read(const json& doc) {
    for (const char* key : {"truncation", "padding"}) {
      if (const json* v = optional(doc, key)) {
        not_implemented(key, *v, "calm encodes whole texts, without truncation or padding");
      }
    }
    if (const json* v = optional(doc, "normalizer")) {
      not_implemented("normalizer", *v, "calm implements no normalizers");
    }
    read_model(member(doc, "model", ""));
    if (const auto it = doc.find("added_tokens"); it != doc.end() && !it->is_null())
      read_added(*it);
    // Every id 0..N-1 names exactly one token.
    for (std::size_t id = 0; id < pieces_.size(); ++id) {
      if (!known_[id]) {
        fail("model.vocab", "no token has id " + std::to_string(id) + " (ids run to " +
                                std::to_string(pieces_.size() - 1) + "; calm needs them without gaps)");
      }
    }
    known_.clear();
    known_.shrink_to_fit();
    const json* pre = optional(doc, "pre_tokenizer");
    if (pre == nullptr) {
      fail("pre_tokenizer", "missing or null: calm implements byte-level BPE, which needs a "
                            "ByteLevel pre-tokenizer");
    }
    read_pre_tokenizer(*pre, "pre_tokenizer");
    if (!byte_level_) {
      fail("pre_tokenizer", "has no ByteLevel pre-tokenizer: calm implements byte-level BPE only");
    }
    const json* dec = optional(doc, "decoder");
    if (dec == nullptr) fail("decoder", "missing or null: calm needs a ByteLevel decoder");
    if (const std::string type = type_of(*dec, "decoder"); type != "ByteLevel") {
      not_implemented("decoder.type", (*dec)["type"], "calm implements the ByteLevel decoder only");
    }
    if (const json* post = optional(doc, "post_processor")) read_post_processor(*post, "post_processor");
  }

  void read_model(const json& model) {
    const std::string type = type_of(model, "model");
    if (type != "BPE") {
      not_implemented("model.type", model["type"], "calm implements the BPE model only");
    }
    if (const json* v = optional(model, "dropout"); v != nullptr && !(v->is_number() && v->get<double>() == 0.0)) {
      not_implemented("model.dropout", *v, "BPE dropout makes encoding random");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (const json* v = optional(model, key); v != nullptr && !(v->is_string() && v->get<std::string>().empty())) {
        not_implemented(std::string("model.") + key, *v, "byte-level BPE models use none");
      }
    }
    // unk_token, fuse_unk and byte_fallback act only on characters without a token; a
    // byte-level vocabulary has one for every byte (checked below), so they never act.
    ignore_merges_ = flag(model, "ignore_merges", "model", false);

    const json& vocab = member(model, "vocab", "model");
    if (!vocab.is_object()) fail("model.vocab", "expected an object, got " + describe_json(vocab));
    const std::size_t n = vocab.size();
    model_size_ = n;
    pieces_.resize(n);
    bytes_.resize(n);
    known_.assign(n, 0);
    special_.assign(n, 0);
    for (const auto& [piece, value] : vocab.items()) {
      if (!value.is_number_integer() || value.get<std::int64_t>() < 0 ||
          value.get<std::int64_t>() >= static_cast<std::int64_t>(n)) {
        fail("model.vocab", "the id of \"" + piece + "\" is " + describe_json(value) +
                                "; expected an integer in 0.." + std::to_string(n - 1));
      }
      const auto id = static_cast<std::size_t>(value.get<std::int64_t>());
      if (known_[id]) {
        fail("model.vocab", "\"" + pieces_[id] + "\" and \"" + piece + "\" both have id " +
                                std::to_string(id));
      }
      known_[id] = 1;
      std::string raw;
      for (std::size_t i = 0; i < piece.size();) {
        const char32_t cp = hf_detail::next_code_point(piece, i);
        const int b = cp < hf_detail::kByteAlphabetEnd ? hf_detail::char_byte()[cp] : -1;
        if (b < 0) {
          fail("model.vocab", "\"" + piece + "\" (id " + std::to_string(id) +
                                  ") is not byte-level text: it has a character outside the "
                                  "256 that stand for bytes");
        }
        raw += static_cast<char>(b);
      }
      if (raw.empty()) fail("model.vocab", "the empty string has an id");
      pieces_[id] = piece;
      bytes_[id] = std::move(raw);
    }
    vocab_.build(bytes_, n);
    for (int b = 0; b < 256; ++b) {
      const int id = vocab_.find(std::string(1, static_cast<char>(b)), bytes_);
      if (id < 0) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02X", b);
        fail("model.vocab", std::string("has no token for byte ") + hex +
                                ": a byte-level vocabulary needs all 256");
      }
      byte_id_[static_cast<std::size_t>(b)] = id;
    }

    // Merges name pieces as tokenizer.json writes them; look them up as written.
    hf_detail::StringIndex by_piece;
    by_piece.build(pieces_, n);
    const json& merges = member(model, "merges", "model");
    if (!merges.is_array()) fail("model.merges", "expected an array, got " + describe_json(merges));
    merges_.reserve(merges.size());
    int rank = 0;
    std::string joined;
    for (const json& m : merges) {
      std::string_view a, b;
      if (m.is_string()) {  // "a b" (tokenizers < 0.20)
        const std::string_view s = m.get_ref<const std::string&>();
        const std::size_t space = s.find(' ');
        if (space == std::string_view::npos || s.find(' ', space + 1) != std::string_view::npos) {
          fail(merge_key(rank), describe_json(m) + " is not two pieces separated by one space");
        }
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get_ref<const std::string&>();  // ["a", "b"] (tokenizers >= 0.20)
        b = m[1].get_ref<const std::string&>();
      } else {
        fail(merge_key(rank), "expected \"a b\" or [\"a\", \"b\"], got " + describe_json(m));
      }
      joined.assign(a);
      joined += b;
      const int ia = by_piece.find(a, pieces_), ib = by_piece.find(b, pieces_);
      const int ic = by_piece.find(joined, pieces_);
      if (ia < 0) fail(merge_key(rank), "\"" + std::string(a) + "\" is not in the vocabulary");
      if (ib < 0) fail(merge_key(rank), "\"" + std::string(b) + "\" is not in the vocabulary");
      if (ic < 0) fail(merge_key(rank), "the merged piece \"" + joined + "\" is not in the vocabulary");
      // A repeated pair keeps its last rank, as in the Rust and JavaScript libraries.
      merges_.set(ia, ib, {rank, ic});
      ++rank;
    }
  }
  static std::string merge_key(int rank) { return "model.merges[" + std::to_string(rank) + "]"; }

  // The id of a BPE piece written in the byte-level alphabet, or -1.
  int piece_id(std::string_view piece) const {
    std::string raw;
    for (std::size_t i = 0; i < piece.size();) {
      const char32_t cp = hf_detail::next_code_point(piece, i);
      const int b = cp < hf_detail::kByteAlphabetEnd ? hf_detail::char_byte()[cp] : -1;
      if (b < 0) return -1;
      raw += static_cast<char>(b);
    }
    const int id = vocab_.find(raw, bytes_);
    return id < static_cast<int>(model_size_) ? id : -1;
  }

  // The tables are sized by the largest added id, so the ids past the vocabulary are checked
  // before any is used: they must follow it without a gap (one id in tokenizer.json could
  // otherwise allocate gigabytes). Malformed entries are left to read_added, which names them.
  void check_added_ids(const json& list, std::size_t model_size) const {
    std::vector<std::pair<std::uint64_t, std::size_t>> past;  // (id, entry) for ids >= model_size
    for (std::size_t k = 0; k < list.size(); ++k) {
      const json& t = list[k];
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
          t["id"].get<std::int64_t>() < 0)
        continue;
      const auto id = t["id"].get<std::uint64_t>();
      if (id >= model_size) past.emplace_back(id, k);
    }
    std::sort(past.begin(), past.end());
    std::uint64_t next = model_size;  // the id the next added token must have
    for (const auto& [id, k] : past) {
      if (id > next) {
        const auto& [largest, at] = past.back();
        fail("added_tokens[" + std::to_string(at) + "].id",
             "id " + std::to_string(largest) + " leaves a gap: no token has id " +
                 std::to_string(next) + " (the vocabulary has " + std::to_string(model_size) +
                 " tokens; calm needs the ids without gaps)");
      }
      next = id + 1;  // an id given twice is named by read_added
    }
  }

  void read_added(const json& list) {
    if (!list.is_array()) fail("added_tokens", "expected an array, got " + describe_json(list));
    const std::size_t model_size = pieces_.size();
    check_added_ids(list, model_size);
    std::unordered_map<std::string, std::size_t> by_content;
    std::unordered_map<std::size_t, std::string> by_id;
    for (std::size_t k = 0; k < list.size(); ++k) {
      const json& t = list[k];
      const std::string key = "added_tokens[" + std::to_string(k) + "]";
      if (!t.is_object()) fail(key, "expected an object, got " + describe_json(t));
      const json& id_v = member(t, "id", key);
      const json& content_v = member(t, "content", key);
      if (!id_v.is_number_integer() || id_v.get<std::int64_t>() < 0) {
        fail(key + ".id", "expected a non-negative integer, got " + describe_json(id_v));
      }
      if (!content_v.is_string() || content_v.get_ref<const std::string&>().empty()) {
        fail(key + ".content", "expected a non-empty string, got " + describe_json(content_v));
      }
      const auto id = static_cast<std::size_t>(id_v.get<std::int64_t>());
      const std::string& content = content_v.get_ref<const std::string&>();
      for (const char* f : {"lstrip", "rstrip", "single_word"}) {
        if (flag(t, f, key, false)) {
          not_implemented(key + "." + f, t[f], "calm matches added tokens exactly, without "
                                                "stripping spaces or word boundaries");
        }
      }
      // `normalized` only matters with a normalizer, which calm refuses.
      const bool special = flag(t, "special", key, false);
      if (!by_content.emplace(content, id).second) {
        fail(key, "\"" + content + "\" is an added token twice");
      }
      if (const auto [it, fresh] = by_id.emplace(id, content); !fresh) {
        fail(key, "id " + std::to_string(id) + " is given to \"" + it->second + "\" and \"" +
                      content + "\"");
      }
      if (id < model_size) {  // a vocabulary token, also matched as a whole in the text
        if (pieces_[id] != content) {
          fail(key, "\"" + content + "\" has id " + std::to_string(id) +
                        ", which the vocabulary gives to \"" + pieces_[id] + "\"");
        }
      } else {
        if (id >= pieces_.size()) {
          pieces_.resize(id + 1);
          bytes_.resize(id + 1);
          special_.resize(id + 1, 0);
          known_.resize(id + 1, 0);
        }
        pieces_[id] = content;
        known_[id] = 1;
      }
      if (id >= model_size) bytes_[id] = content;  // a vocabulary token keeps its bytes
      special_[id] = special ? 1 : 0;
      added_.push_back({content, static_cast<int>(id)});
    }
    special_.resize(pieces_.size(), 0);
    for (std::size_t k = 0; k < added_.size(); ++k)
      added_by_first_byte_[static_cast<unsigned char>(added_[k].content[0])].push_back(k);
    for (auto& list_for_byte : added_by_first_byte_) {
      std::stable_sort(list_for_byte.begin(), list_for_byte.end(), [&](std::size_t x, std::size_t y) {
        return added_[x].content.size() > added_[y].content.size();
      });
    }
  }

  void read_pre_tokenizer(const json& p, const std::string& key) {
    const std::string type = type_of(p, key);
    if (byte_level_) {
      fail(key, "follows the ByteLevel pre-tokenizer; calm implements ByteLevel only as the last "
                "pre-tokenizer");
    }
    if (type == "Sequence") {
      const json& list = member(p, "pretokenizers", key);
      if (!list.is_array()) fail(key + ".pretokenizers", "expected an array, got " + describe_json(list));
      for (std::size_t i = 0; i < list.size(); ++i)
        read_pre_tokenizer(list[i], key + ".pretokenizers[" + std::to_string(i) + "]");
    } else if (type == "Split") {
      const json& pattern = member(p, "pattern", key);
      if (!pattern.is_object() || pattern.size() != 1) {
        fail(key + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}, got " + describe_json(pattern));
      }
      const std::string kind = pattern.begin().key();
      const json& text = pattern.begin().value();
      if ((kind != "Regex" && kind != "String") || !text.is_string()) {
        fail(key + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}, got " + describe_json(pattern));
      }
      const json& behavior = member(p, "behavior", key);
      if (behavior != "Isolated") {
        not_implemented(key + ".behavior", behavior, "calm implements Isolated splits only");
      }
      if (flag(p, "invert", key, false)) {
        not_implemented(key + ".invert", p["invert"], "calm implements invert false only");
      }
      splits_.push_back(std::make_unique<hf_detail::Regex>(
          text.get<std::string>(), kind == "String",
          "'" + path_.string() + "': key '" + key + ".pattern'"));
    } else if (type == "ByteLevel") {
      byte_level_ = true;
      add_prefix_space_ = flag(p, "add_prefix_space", key, true);
      if (flag(p, "use_regex", key, true)) {
        // GPT-2's pattern, which the Rust library's ByteLevel uses.
        byte_level_regex_ = std::make_unique<hf_detail::Regex>(
            R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", false,
            "ByteLevel pre-tokenizer");
      }
    } else {
      not_implemented(key + ".type", p["type"],
                      "calm implements the Split, ByteLevel and Sequence pre-tokenizers");
    }
  }

  void read_post_processor(const json& p, const std::string& key) {
    const std::string type = type_of(p, key);
    if (type == "ByteLevel") return;  // adjusts offsets only
    if (type == "Sequence") {
      const json& list = member(p, "processors", key);
      if (!list.is_array()) fail(key + ".processors", "expected an array, got " + describe_json(list));
      for (std::size_t i = 0; i < list.size(); ++i)
        read_post_processor(list[i], key + ".processors[" + std::to_string(i) + "]");
      return;
    }
    if (type != "TemplateProcessing") {
      not_implemented(key + ".type", p["type"],
                      "calm implements the TemplateProcessing, ByteLevel and Sequence post-processors");
    }
    const json& single = member(p, "single", key);
    const auto refuse = [&] {
      not_implemented(key + ".single", single,
                      "calm implements the templates \"$A\" and \"<special> $A\" (the BOS token)");
    };
    if (!single.is_array() || single.empty() || single.size() > 2) refuse();
    // {"<kind>": {"id": "<string>", ...}}: the string, or "" for anything else.
    const auto item_id = [](const json& item, const char* kind) -> std::string {
      if (!item.is_object() || item.size() != 1 || !item.contains(kind)) return "";
      const json& body = item[kind];
      if (!body.is_object() || !body.contains("id") || !body["id"].is_string()) return "";
      return body["id"].get<std::string>();
    };
    if (item_id(single.back(), "Sequence") != "A") refuse();
    if (single.size() == 1) return;
    const std::string name = item_id(single.front(), "SpecialToken");
    if (name.empty()) refuse();
    const json& specials = member(p, "special_tokens", key);
    const auto it = specials.is_object() ? specials.find(name) : specials.end();
    if (it == specials.end() || !it->is_object() || !it->contains("ids") || !(*it)["ids"].is_array() ||
        (*it)["ids"].size() != 1 || !(*it)["ids"][0].is_number_integer()) {
      fail(key + ".special_tokens", "expected \"" + name + "\" with one id in \"ids\"");
    }
    const auto id = (*it)["ids"][0].get<std::int64_t>();
    if (id < 0 || id >= static_cast<std::int64_t>(pieces_.size())) {
      fail(key + ".special_tokens", "\"" + name + "\" has id " + std::to_string(id) +
                                        ", outside the vocabulary");
    }
    bos_ = static_cast<int>(id);
  }

  // tokenizer_config.json (transformers' file): bos_token and eos_token, each a string or
  // {"content": ...}. The template's BOS, when there is one, is what encoding adds and wins.
  void read_config(const std::filesystem::path& file) {
    const MappedFile mapped(file);
    const json doc = parse_json_object(as_text(mapped.bytes()), "tokenizer config", file.string());
    for (const auto& [name, target] : {std::pair{"bos_token", &bos_}, std::pair{"eos_token", &eos_}}) {
      const auto it = doc.find(name);
      if (it == doc.end() || it->is_null()) continue;
      const json* content = &*it;
      if (it->is_object() && it->contains("content")) content = &(*it)["content"];
      if (!content->is_string()) {
        throw Error("'" + file.string() + "': key '" + name + "': expected a string, got " +
                    describe_json(*it));
      }
      const int id = id_of(content->get<std::string>());
      if (id < 0) {
        throw Error("'" + file.string() + "': key '" + name + "': \"" + content->get<std::string>() +
                    "\" is not a token of '" + path_.string() + "'");
      }
      if (*target < 0) *target = id;
    }
  }

  // Without a template or tokenizer_config.json, the usual names of BOS and EOS.
  void find_bos_eos_by_name() {
    for (const char* name : {"<|begin_of_text|>", "<s>", "<bos>"}) {
      if (bos_ < 0) bos_ = id_of(name);
    }
    for (const char* name : {"<|end_of_text|>", "</s>", "<|endoftext|>", "<eos>"}) {
      if (eos_ < 0) eos_ = id_of(name);
    }
  }

  int id_of(const std::string& token) const {
    for (const Added& a : added_)
      if (a.content == token) return a.id;
    return piece_id(token);
  }

  std::filesystem::path path_;
  std::vector<std::string> pieces_;  // (id) the token as tokenizer.json writes it
  std::vector<std::string> bytes_;   // (id) the bytes it stands for
  std::vector<char> special_;        // (id) 1 for added tokens marked special
  std::vector<char> known_;          // (id) while loading: some token has this id
  hf_detail::StringIndex vocab_;     // a BPE piece's bytes -> its id (over bytes_)
  std::size_t model_size_ = 0;       // ids below are BPE pieces
  std::array<int, 256> byte_id_{};                  // (byte) the token of one byte
  hf_detail::MergeTable merges_;
  std::vector<Added> added_;
  std::array<std::vector<std::size_t>, 256> added_by_first_byte_;  // indices into added_
  std::vector<std::unique_ptr<hf_detail::Regex>> splits_;  // the Split pre-tokenizers, in order
  bool byte_level_ = false, add_prefix_space_ = false;
  std::unique_ptr<hf_detail::Regex> byte_level_regex_;  // ByteLevel with use_regex
  bool ignore_merges_ = false;
  int bos_ = -1, eos_ = -1;
};

}  // namespace calm::io
