// Tokenizer and StreamDecoder on a tiny sentencepiece model trained for these tests
// (tests/fixtures/io/tokenizer.model; how it was made: tests/fixtures/io/README.md). Its corpus
// lacks characters such as '日' and '€', so they go through byte-fallback pieces.
#include "test_support.hpp"
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "calm/io/tokenizer.hpp"

namespace fs = std::filesystem;

namespace {

using calm::test::error_of;
using calm::test::contains;

const fs::path kModel = fs::path(CALM_FIXTURES) / "io" / "tokenizer.model";

// Strict UTF-8 check (no overlongs, surrogates or truncated sequences), written independently
// of sentencepiece.
bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n;
    std::uint32_t cp;
    if (c < 0x80) {
      n = 1;
      cp = c;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4;
      cp = c & 0x07;
    } else
      return false;
    if (i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr std::uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

// Feeds ids one by one; returns the concatenated output and every piece of it.
std::string stream(const calm::Tokenizer& tok, const std::vector<int>& ids,
                   std::vector<std::string>* chunks = nullptr) {
  calm::StreamDecoder dec(tok);
  std::string all;
  for (int id : ids) {
    const std::string s = dec.push(id);
    if (chunks) chunks->push_back(s);
    all += s;
  }
  const std::string rest = dec.flush();
  if (chunks) chunks->push_back(rest);
  return all + rest;
}

}  // namespace

TEST_CASE("Tokenizer: the fixture model") {
  const calm::Tokenizer tok = calm::Tokenizer::load(kModel);
  CHECK(tok.vocab_size() == 400);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  CHECK(tok.piece(1) == "<s>");
  CHECK(tok.piece(3) == "<0x00>");
  CHECK(tok.is_byte(3));
  CHECK(tok.is_control(1));
  CHECK_FALSE(tok.is_byte(300));
  CHECK(tok.path() == kModel);
}

TEST_CASE("Tokenizer: encode/decode round trip, BOS, byte fallback") {
  const calm::Tokenizer tok = calm::Tokenizer::load(kModel);
  const std::string text = "First Citizen: hello the world";
  const std::vector<int> with_bos = tok.encode(text);
  const std::vector<int> without = tok.encode(text, /*add_bos=*/false);
  REQUIRE(with_bos.size() == without.size() + 1);
  CHECK(with_bos[0] == 1);
  CHECK(std::vector<int>(with_bos.begin() + 1, with_bos.end()) == without);
  CHECK(tok.piece(without[0]).starts_with("\xE2\x96\x81"));  // "▁": the dummy prefix space
  CHECK(tok.decode(with_bos) == text);                       // BOS decodes to nothing

  // '日' is not in the vocabulary: three byte pieces E6 97 A5.
  const std::vector<int> ids = tok.encode("日", false);
  std::vector<std::string> pieces;
  for (int id : ids) pieces.push_back(tok.piece(id));
  CHECK(std::count(pieces.begin(), pieces.end(), "<0xE6>") == 1);
  CHECK(std::count(pieces.begin(), pieces.end(), "<0x97>") == 1);
  CHECK(std::count(pieces.begin(), pieces.end(), "<0xA5>") == 1);
  CHECK(tok.decode(ids) == "日");

  const std::string mixed = "héllo wörld \xE2\x80\x94 日本語, 20€ 🙂\n  two spaces";
  CHECK(tok.decode(tok.encode(mixed)) == mixed);

  const int bad[] = {5, 400};
  CHECK_ERROR_NAMES(tok.decode(bad), "400", kModel.string());
  const int negative[] = {-1};
  CHECK_ERROR_NAMES(tok.decode(negative), "-1", kModel.string());
  CHECK_ERROR_NAMES(tok.piece(1000), "1000", kModel.string());
}

TEST_CASE("Tokenizer: missing or corrupt model files name the file") {
  const fs::path dir =
      fs::temp_directory_path() / ("calm_test_tokenizer_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream out(dir / name, std::ios::binary);
    out << bytes;
    return dir / name;
  };
  CHECK_ERROR_NAMES(calm::Tokenizer::load(dir / "absent.model"), "absent.model");
  CHECK_ERROR_NAMES(calm::Tokenizer::load(write("empty.model", "")), "empty.model");
  CHECK_ERROR_NAMES(calm::Tokenizer::load(dir), dir.string());
  CHECK_ERROR_NAMES(calm::Tokenizer::load(write("text.model", "this is not a protobuf")),
                    "text.model");

  std::ifstream in(kModel, std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(good.size() > 100);
  CHECK_ERROR_NAMES(calm::Tokenizer::load(write("half.model", good.substr(0, good.size() / 2))),
                    "half.model");
  std::mt19937 rng(7);
  std::string noise(2000, '\0');
  for (char& c : noise) c = static_cast<char>(rng());
  CHECK_ERROR_NAMES(calm::Tokenizer::load(write("noise.model", noise)), "noise.model");
  fs::remove_all(dir);
}

TEST_CASE("StreamDecoder: concatenated output equals decode(all ids)") {
  const calm::Tokenizer tok = calm::Tokenizer::load(kModel);
  for (const std::string text :
       {"First Citizen:\nBefore we proceed any further, hear me speak.", " leading space",
        "  two leading spaces and trailing  ", "héllo wörld \xE2\x80\x94 日本語", "日本語",
        "🙂🙂 x 🙂", "€20 — naïve", "\n\nnewlines\n", "a"}) {
    CAPTURE(text);
    std::vector<int> ids = tok.encode(text);
    ids.push_back(tok.eos_id());
    std::vector<std::string> chunks;
    const std::string streamed = stream(tok, ids, &chunks);
    CHECK(streamed == tok.decode(ids));
    CHECK(streamed == text);
    // Valid text never shows a broken character on the way.
    for (const std::string& c : chunks) CHECK(valid_utf8(c));
  }
}

TEST_CASE("StreamDecoder: the cases are hard ones (naive per-token decoding gets them wrong)") {
  const calm::Tokenizer tok = calm::Tokenizer::load(kModel);
  const std::string text = "hello 日本語 the world";
  const std::vector<int> ids = tok.encode(text);
  std::string naive;
  for (int id : ids) naive += tok.decode(std::span<const int>(&id, 1));
  CHECK(naive != text);  // lost spaces and U+FFFD per byte
  CHECK(stream(tok, ids) == text);
}

TEST_CASE("StreamDecoder: random id sequences, including stray bytes and control tokens") {
  const calm::Tokenizer tok = calm::Tokenizer::load(kModel);
  std::vector<int> space_like;  // pieces that are only "▁" or start with it
  for (int id = 0; id < static_cast<int>(tok.vocab_size()); ++id) {
    if (tok.piece(id).starts_with("\xE2\x96\x81")) space_like.push_back(id);
  }
  REQUIRE(!space_like.empty());
  std::mt19937 rng(12345);
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<int> ids(rng() % 24);
    for (int& id : ids) {
      switch (rng() % 5) {
        case 0:
          id = 3 + static_cast<int>(rng() % 256);
          break;  // any byte piece
        case 1:
          id = 3 + 0xE0 + static_cast<int>(rng() % 32);
          break;  // lead bytes
        case 2:
          id = static_cast<int>(rng() % 3);
          break;  // unk, bos, eos
        case 3:
          id = space_like[rng() % space_like.size()];
          break;
        default:
          id = static_cast<int>(rng() % tok.vocab_size());
          break;
      }
    }
    CAPTURE(trial);
    CHECK(stream(tok, ids) == tok.decode(ids));
  }
}

TEST_CASE("StreamDecoder: bad ids are refused") {
  const calm::Tokenizer tok = calm::Tokenizer::load(kModel);
  calm::StreamDecoder dec(tok);
  CHECK_ERROR_NAMES(dec.push(100000), "100000", kModel.string());
}

TEST_CASE("Tokenizer: check_fits refuses a tokenizer that is not the model's, naming both") {
  // Every committed checkpoint and the bundled model pass.
  for (const fs::path& dir : {fs::path(CALM_FIXTURES) / "tiny-gqa-bf16-tied",
                             fs::path(CALM_FIXTURES) / "tiny-gqa-f32-untied",
                             fs::path(CALM_FIXTURES) / "tiny-mha-f16-sharded",
                             fs::path(CALM_MODELS) / "shakespeare-8l"}) {
    CAPTURE(dir.string());
    const calm::LlamaConfig c = calm::load_llama_config(dir / "config.json");
    CHECK_NOTHROW(calm::Tokenizer::load(dir / "tokenizer.model").check_fits(c, "config.json"));
  }
  const calm::Tokenizer tok = calm::Tokenizer::load(kModel);
  calm::LlamaConfig c = calm::load_llama_config(fs::path(CALM_FIXTURES) / "tiny-gqa-f32-untied" / "config.json");
  c.bos_token_id = tok.bos_id();
  c.eos_token_id = tok.eos_id();
  c.eos_token_ids = {tok.eos_id()};
  c.vocab_size = tok.vocab_size() + 1;
  CHECK(contains(error_of([&] { tok.check_fits(c, "c.json"); }), "c.json says vocab_size"));
  CHECK(contains(error_of([&] { tok.check_fits(c, "c.json"); }), "cannot decode"));
  c.vocab_size = tok.vocab_size() - 1;
  CHECK(contains(error_of([&] { tok.check_fits(c, "c.json"); }), "past the embedding"));
  c.vocab_size = tok.vocab_size();
  CHECK_NOTHROW(tok.check_fits(c, "c.json"));
  c.bos_token_id = tok.bos_id() + 1;
  CHECK(contains(error_of([&] { tok.check_fits(c, "c.json"); }), "bos_token_id differs: c.json says"));
  c.bos_token_id = tok.bos_id();
  c.eos_token_ids = {tok.eos_id() + 1};
  c.eos_token_id = tok.eos_id() + 1;
  CHECK(contains(error_of([&] { tok.check_fits(c, "c.json"); }), "eos_token_id differs"));
  c.eos_token_ids = {tok.eos_id() + 1, tok.eos_id()};  // one of a list is enough
  CHECK_NOTHROW(tok.check_fits(c, "c.json"));
}
