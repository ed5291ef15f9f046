// HfTokenizer (tokenizer.json) and calm::Tokenizer over it, on two tiny byte-level BPE files
// (tests/fixtures/io/hf_tokenizer.json: merges as "a b", ignore_merges, ByteLevel
// post-processor; hf_tokenizer_pairs.json: the same merges as ["a", "b"], no ignore_merges, a
// TemplateProcessing BOS) and on variants of them written here, one per refusal. Both have the
// 256 byte pieces, merges building "hello", " world", " the", "日", "123" and "'" + the first
// byte of "ſ", the piece "xyz" (reachable only whole), and the added tokens <|begin_of_text|>,
// <|end_of_text|>, <|eot_id|> (special) and <tool> (not special). The real Llama 3 file is
// tested against a reference implementation in tests/reference/.
#include "test_support.hpp"

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "calm/io/hf_tokenizer.hpp"
#include "calm/io/tokenizer.hpp"

namespace fs = std::filesystem;
using calm::test::contains;
using calm::test::error_of;
using calm::test::read_text;
using calm::test::ScratchDir;
using json = nlohmann::json;

namespace {

const fs::path kStrings = fs::path(CALM_FIXTURES) / "io" / "hf_tokenizer.json";
const fs::path kPairs = fs::path(CALM_FIXTURES) / "io" / "hf_tokenizer_pairs.json";
const fs::path kSentencepiece = fs::path(CALM_FIXTURES) / "io" / "tokenizer.model";

const calm::io::HfTokenizer& strings_tok() {
  static const calm::io::HfTokenizer t = calm::io::HfTokenizer::load(kStrings);
  return t;
}
const calm::io::HfTokenizer& pairs_tok() {
  static const calm::io::HfTokenizer t = calm::io::HfTokenizer::load(kPairs);
  return t;
}

// The id of a piece as tokenizer.json writes it.
int id_of(const calm::io::HfTokenizer& t, const std::string& piece) {
  for (int id = 0; id < static_cast<int>(t.vocab_size()); ++id)
    if (t.piece(id) == piece) return id;
  FAIL("no piece " << piece);
  return -1;
}

std::vector<int> byte_ids(const calm::io::HfTokenizer& t, std::string_view bytes) {
  std::vector<int> ids;
  for (char c : bytes) {
    const char one[] = {c};
    bool found = false;
    for (int id = 0; id < 256 && !found; ++id) {
      if (t.token_bytes(id) == std::string_view(one, 1)) {
        ids.push_back(id);
        found = true;
      }
    }
    REQUIRE(found);
  }
  return ids;
}

std::string lossy(std::string_view bytes) {
  std::string out;
  calm::io::hf_detail::append_utf8_lossy(bytes, out, true);
  return out;
}

// Writes `doc` as DIR/tokenizer.json and returns the load error ("" if it loads).
std::string load_error(const json& doc) {
  const ScratchDir dir("hf_tokenizer");
  const fs::path file = dir.write("tokenizer.json", doc.dump());
  return error_of([&] { (void)calm::io::HfTokenizer::load(file); });
}

json fixture() { return json::parse(read_text(kStrings)); }

}  // namespace

TEST_CASE("the fixtures load: vocabulary, added tokens, BOS and EOS") {
  const auto& t = strings_tok();
  CHECK(t.vocab_size() == 277);  // 273 BPE pieces + 4 added tokens
  CHECK(t.piece(273) == "<|begin_of_text|>");
  CHECK(t.bos_id() == 273);  // by name: the ByteLevel post-processor adds none
  CHECK(t.eos_id() == 274);
  CHECK(t.is_special(275));
  CHECK_FALSE(t.is_special(276));  // <tool>
  CHECK(t.ignore_merges());
  CHECK_FALSE(pairs_tok().ignore_merges());
  CHECK(pairs_tok().bos_id() == 273);  // from the template
  CHECK(pairs_tok().vocab_size() == 277);
  CHECK_ERROR_NAMES(t.piece(277), "token id 277", "hf_tokenizer.json", "277 pieces");
  CHECK_ERROR_NAMES(t.token_bytes(-1), "token id -1");
}

TEST_CASE("encoding: merges, the Llama 3 split, added tokens") {
  const auto& t = strings_tok();
  const int hello = id_of(t, "hello"), world = id_of(t, "Ġworld"), the = id_of(t, "Ġthe");
  CHECK(t.encode("hello world") == std::vector<int>{hello, world});
  CHECK(t.encode("hello the") == std::vector<int>{hello, the});
  CHECK(t.encode("") == std::vector<int>{});
  // Digits in groups of at most three, from the left: "123" "4" -> "123" is one piece.
  const int d123 = id_of(t, "123");
  std::vector<int> digits = {d123};
  const auto four = byte_ids(t, "4");
  digits.insert(digits.end(), four.begin(), four.end());
  CHECK(t.encode("1234") == digits);
  // Pieces the regex splits apart never merge: "12 3" is "12", " ", "3".
  CHECK(t.encode("12 3") == std::vector<int>{id_of(t, "12"), byte_ids(t, " ")[0], byte_ids(t, "3")[0]});
  // Added tokens are cut out of the raw text first, special or not, longest first.
  const std::vector<int> chat = t.encode("<|begin_of_text|>hello<|eot_id|><tool> world");
  CHECK(chat == std::vector<int>{273, hello, 275, 276, world});
  CHECK(t.encode("<|eot_id") == byte_ids(t, "<|eot_id"));  // incomplete: ordinary text
  // "日" is one piece made by two merges; with ignore_merges "xyz" is one piece, without it not.
  CHECK(t.encode("日") == std::vector<int>{id_of(t, "æĹ¥")});
  CHECK(t.encode("xyz") == std::vector<int>{id_of(t, "xyz")});
  CHECK(pairs_tok().encode("xyz") == byte_ids(pairs_tok(), "xyz"));
}

TEST_CASE("both merge encodings give the same ids") {
  const std::vector<std::string> texts = {
      "hello world, the world!", "  hello\n\n world\t the", "日本 日日", "It's 12345 o'clock",
      "hellohello worldworld", "<tool>hello", "'ſ 'S 'll"};
  for (const std::string& s : texts) {
    INFO(s);
    CHECK(strings_tok().encode(s) == pairs_tok().encode(s));  // no piece here is a whole word
  }
}

TEST_CASE("(?i:'s) matches 'ſ as Oniguruma does (Unicode case folding)") {
  // The merge "'" + first byte of "ſ" applies only if "'ſ" is one pre-token, which it is when
  // (?i:'s) folds ſ (U+017F) to s: Oniguruma 6.9.8 and PCRE2 do; the JavaScript reference
  // folds ASCII only, so this case is left out of the reference corpus.
  const auto& t = strings_tok();
  const std::vector<int> ids = t.encode("'ſ");
  REQUIRE(ids.size() == 2);
  CHECK(ids[0] == id_of(t, "'Å"));
}

TEST_CASE("decoding: bytes of the pieces, special tokens left out, U+FFFD for ill-formed UTF-8") {
  const auto& t = strings_tok();
  const std::string text = "hello world <tool> 日本語 😀 'ſ";
  CHECK(t.decode(t.encode(text)) == text);
  const std::vector<int> with_specials = {273, id_of(t, "hello"), 275, 274};
  CHECK(t.decode(with_specials) == "hello");
  // Half of "日" alone, a lone continuation byte, an overlong form: U+FFFD for each maximal part.
  CHECK(t.decode(std::vector<int>{id_of(t, "æĹ")}) == "\xEF\xBF\xBD");
  CHECK(t.decode(byte_ids(t, "a\x80" "b\xC0\xAF")) == "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(t.decode(byte_ids(t, "\xE6\x97" "a")) == "\xEF\xBF\xBD" "a");
  CHECK_ERROR_NAMES(t.decode(std::vector<int>{5000}), "token id 5000");
}

TEST_CASE("ill-formed UTF-8 input is read as U+FFFD, as a TextDecoder reads it") {
  const auto& t = strings_tok();
  CHECK(t.encode("a\xFF" "b") == t.encode("a\xEF\xBF\xBD" "b"));
  CHECK(t.encode("\xE6\x97") == t.encode("\xEF\xBF\xBD"));             // truncated: one U+FFFD
  CHECK(t.encode("\xED\xA0\x80") == t.encode("\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"));  // surrogate
  CHECK(t.encode("\xF0\x9F\x98 x") == t.encode("\xEF\xBF\xBD x"));
  CHECK(calm::io::hf_detail::find_ill_formed_utf8("ok \xC3\xA9 \xC3") == 6);
  CHECK(calm::io::hf_detail::find_ill_formed_utf8("ok \xC3\xA9") == std::string_view::npos);
}

TEST_CASE("the WHATWG decoder, fed in chunks, writes what it writes on the whole") {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255), len(0, 12);
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bytes;
    for (int n = len(rng); n > 0; --n) {
      const int b = byte(rng);
      bytes += static_cast<char>(b < 96 ? 0x61 : b);  // plenty of non-ASCII
    }
    const std::string whole = lossy(bytes);
    for (std::size_t cut = 0; cut <= bytes.size(); ++cut) {
      std::string out;
      std::string pending(bytes.substr(0, cut));
      const std::size_t held = calm::io::hf_detail::append_utf8_lossy(pending, out, false);
      pending = pending.substr(pending.size() - held) + bytes.substr(cut);
      calm::io::hf_detail::append_utf8_lossy(pending, out, true);
      REQUIRE(out == whole);
    }
  }
}

TEST_CASE("StreamDecoder over byte-level pieces equals decode() at every prefix") {
  const calm::Tokenizer tok = calm::Tokenizer::load(kStrings);
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> any(0, static_cast<int>(tok.vocab_size()) - 1), len(1, 10);
  std::vector<std::vector<int>> sequences = {tok.encode("日本語 😀 hello<|eot_id|> wörld", false)};
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<int> ids;
    for (int n = len(rng); n > 0; --n) ids.push_back(any(rng));
    sequences.push_back(ids);
  }
  for (const auto& ids : sequences) {
    for (std::size_t k = 0; k <= ids.size(); ++k) {
      const std::vector<int> prefix(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k));
      calm::StreamDecoder dec(tok);
      std::string out;
      for (int id : prefix) out += dec.push(id);
      out += dec.flush();
      REQUIRE(out == tok.decode(prefix));
    }
  }
  // A character split over pieces appears once it completes, not as U+FFFD first.
  calm::StreamDecoder dec(tok);
  const calm::io::HfTokenizer& hf = *tok.hf_tokenizer();
  CHECK(dec.push(id_of(hf, "æĹ")).empty());
  CHECK(dec.push(byte_ids(hf, "\xA5")[0]) == "日");
  CHECK(dec.flush().empty());
}

TEST_CASE("long inputs: runs of letters, digits and spaces") {
  const auto& t = strings_tok();
  const std::string letters(200000, 'a'), spaces(100000, ' ');
  CHECK(t.encode(letters).size() == letters.size());  // no merge of "a a"
  CHECK(t.decode(t.encode(spaces + "x" + spaces)) == spaces + "x" + spaces);
  std::string digits;
  for (int i = 0; i < 10000; ++i) digits += "123";
  CHECK(t.encode(digits) == std::vector<int>(10000, id_of(t, "123")));  // groups of three
}

TEST_CASE("calm::Tokenizer holds either backend, and load_folder prefers tokenizer.json") {
  const ScratchDir dir("hf_folder");
  CHECK_ERROR_NAMES(calm::Tokenizer::load_folder(dir.path), "has no tokenizer", "tokenizer.json",
                    "tokenizer.model");
  fs::copy_file(kSentencepiece, dir.path / "tokenizer.model");
  const calm::Tokenizer sp = calm::Tokenizer::load_folder(dir.path);
  CHECK(sp.kind() == calm::TokenizerKind::sentencepiece);
  CHECK(sp.path() == dir.path / "tokenizer.model");
  CHECK(contains(sp.description(), "(sentencepiece)"));
  CHECK(sp.hf_tokenizer() == nullptr);
  fs::copy_file(kStrings, dir.path / "tokenizer.json");
  const calm::Tokenizer hf = calm::Tokenizer::load_folder(dir.path);
  CHECK(hf.kind() == calm::TokenizerKind::hf_bpe);
  CHECK(hf.description() == (dir.path / "tokenizer.json").string() + " (Hugging Face BPE)");
  CHECK(hf.vocab_size() == 277);
  CHECK(hf.bos_id() == 273);
  CHECK(hf.eos_id() == 274);
  CHECK(hf.encode("hello", true) == std::vector<int>{273, id_of(*hf.hf_tokenizer(), "hello")});
  CHECK(hf.decode(hf.encode("hello world", true)) == "hello world");
  CHECK(hf.is_control(273));
  CHECK_FALSE(hf.is_control(276));
  CHECK_FALSE(hf.is_byte(0));
  CHECK(hf.piece(id_of(*hf.hf_tokenizer(), "Ġworld")) == "Ġworld");
  CHECK_ERROR_NAMES(hf.check_id(277), "outside the vocabulary", "tokenizer.json");

  // tokenizer_config.json next to it names BOS/EOS (a string or {"content": ...}).
  dir.write("tokenizer_config.json", R"({"bos_token": {"content": "<|eot_id|>"}, "eos_token": "<|eot_id|>"})");
  const calm::Tokenizer configured = calm::Tokenizer::load_folder(dir.path);
  CHECK(configured.bos_id() == 275);
  CHECK(configured.eos_id() == 275);
  dir.write("tokenizer_config.json", R"({"eos_token": "<|nope|>"})");
  CHECK_ERROR_NAMES(calm::Tokenizer::load_folder(dir.path), "tokenizer_config.json", "eos_token",
                    "<|nope|>");
}

// An edit of a valid tokenizer.json and what the error must say.
struct EditCase {
  const char* name;
  void (*edit)(json&);
  std::vector<std::string> message;
};

// Each edit of the fixture is refused with an error naming the file and every part of message.
void check_refusals(const std::vector<EditCase>& cases) {
  for (const EditCase& c : cases) {
    INFO(std::string(c.name));
    json doc = fixture();
    c.edit(doc);
    const std::string error = load_error(doc);
    CHECK_MESSAGE(contains(error, "tokenizer.json'"), error);
    for (const std::string& part : c.message) CHECK_MESSAGE(contains(error, part), error);
  }
}

TEST_CASE("what calm does not implement is refused by name") {
  const std::vector<EditCase> cases = {
      {"normalizer", [](json& d) { d["normalizer"] = {{"type", "NFC"}}; },
       {"key 'normalizer'", "type \"NFC\"", "no normalizers"}},
      {"Unigram", [](json& d) { d["model"]["type"] = "Unigram"; }, {"model.type", "\"Unigram\"", "BPE"}},
      {"WordPiece", [](json& d) { d["model"]["type"] = "WordPiece"; }, {"model.type", "\"WordPiece\""}},
      {"dropout", [](json& d) { d["model"]["dropout"] = 0.1; }, {"model.dropout", "random"}},
      {"prefix", [](json& d) { d["model"]["continuing_subword_prefix"] = "##"; },
       {"model.continuing_subword_prefix", "\"##\""}},
      {"truncation", [](json& d) { d["truncation"] = {{"max_length", 8}}; }, {"key 'truncation'"}},
      {"padding", [](json& d) { d["padding"] = {{"length", 8}}; }, {"key 'padding'"}},
      {"Metaspace", [](json& d) { d["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Metaspace"}}; },
       {"pre_tokenizer.pretokenizers[0].type", "\"Metaspace\""}},
      {"no pre-tokenizer", [](json& d) { d["pre_tokenizer"] = nullptr; }, {"key 'pre_tokenizer'", "ByteLevel"}},
      {"no ByteLevel", [](json& d) { d["pre_tokenizer"]["pretokenizers"].erase(1); },
       {"key 'pre_tokenizer'", "no ByteLevel"}},
      {"ByteLevel first",
       [](json& d) {
         auto& p = d["pre_tokenizer"]["pretokenizers"];
         std::swap(p[0], p[1]);
       },
       {"pre_tokenizer.pretokenizers[1]", "follows the ByteLevel"}},
      {"Removed", [](json& d) { d["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
       {"pretokenizers[0].behavior", "\"Removed\"", "Isolated"}},
      {"invert", [](json& d) { d["pre_tokenizer"]["pretokenizers"][0]["invert"] = true; },
       {"pretokenizers[0].invert"}},
      {"\\w", [](json& d) { d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+"; },
       {"pretokenizers[0].pattern", "\\w", "Oniguruma"}},
      {"POSIX", [](json& d) { d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "[[:alpha:]]+"; },
       {"pretokenizers[0].pattern", "POSIX"}},
      {"bad regex", [](json& d) { d["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(a"; },
       {"pretokenizers[0].pattern", "does not compile", "PCRE2"}},
      {"pattern kind", [](json& d) { d["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Glob", "*"}}; },
       {"pretokenizers[0].pattern", "Regex"}},
      {"WordPiece decoder", [](json& d) { d["decoder"] = {{"type", "WordPiece"}}; },
       {"decoder.type", "\"WordPiece\""}},
      {"no decoder", [](json& d) { d["decoder"] = nullptr; }, {"key 'decoder'", "ByteLevel"}},
      {"BertProcessing", [](json& d) { d["post_processor"] = {{"type", "BertProcessing"}}; },
       {"post_processor.type", "\"BertProcessing\""}},
      {"template with $B",
       [](json& d) {
         d["post_processor"] = {{"type", "TemplateProcessing"},
                                {"single", json::parse(R"([{"Sequence": {"id": "A", "type_id": 0}},
                                                           {"SpecialToken": {"id": "<|eot_id|>", "type_id": 0}}])")},
                                {"special_tokens", json::object()}};
       },
       {"post_processor.single", "\"$A\""}},
      {"lstrip", [](json& d) { d["added_tokens"][1]["lstrip"] = true; }, {"added_tokens[1].lstrip"}},
      {"rstrip", [](json& d) { d["added_tokens"][2]["rstrip"] = true; }, {"added_tokens[2].rstrip"}},
      {"single_word", [](json& d) { d["added_tokens"][0]["single_word"] = true; },
       {"added_tokens[0].single_word"}},
  };
  check_refusals(cases);
}

TEST_CASE("malformed files are refused with the file and what is wrong") {
  const std::vector<EditCase> cases = {
      {"no model", [](json& d) { d.erase("model"); }, {"key 'model'", "missing"}},
      {"vocab type", [](json& d) { d["model"]["vocab"] = json::array(); }, {"model.vocab", "expected an object"}},
      {"id type", [](json& d) { d["model"]["vocab"]["xyz"] = "7"; }, {"model.vocab", "\"xyz\"", "expected an integer"}},
      {"id range", [](json& d) { d["model"]["vocab"]["xyz"] = 100000; }, {"model.vocab", "\"xyz\""}},
      {"same id", [](json& d) { d["model"]["vocab"]["xyz"] = 0; }, {"model.vocab", "both have id 0"}},
      {"missing byte",
       [](json& d) {
         d["model"]["vocab"].erase("Ā");  // byte 0x00
         d["model"]["vocab"]["xyz"] = 0;   // ids stay 0..271
       },
       {"model.vocab", "no token for byte 0x00"}},
      {"not byte-level", [](json& d) { d["model"]["vocab"].erase("xyz"); d["model"]["vocab"]["x y"] = 272; },
       {"model.vocab", "\"x y\"", "not byte-level"}},
      {"gap", [](json& d) { d["model"]["vocab"].erase("xyz"); },
       {"added_tokens[3].id", "id 276 leaves a gap", "no token has id 272"}},
      {"merge string", [](json& d) { d["model"]["merges"][2] = "a b c"; }, {"model.merges[2]", "one space"}},
      {"merge type", [](json& d) { d["model"]["merges"][0] = 3; }, {"model.merges[0]", "expected"}},
      {"merge piece", [](json& d) { d["model"]["merges"][1] = "q Q"; }, {"model.merges[1]", "\"qQ\""}},
      {"merge unknown", [](json& d) { d["model"]["merges"][1] = "ŀ zz"; }, {"model.merges[1]", "\"zz\""}},
      {"added id taken", [](json& d) { d["added_tokens"][3]["id"] = 5; }, {"added_tokens[3]", "id 5"}},
      // 273 vocabulary tokens and 4 added ones: ids 273..276. A gap is refused before any table
      // is sized by the largest id (2^30 once allocated 32 GB).
      {"added id gap", [](json& d) { d["added_tokens"][3]["id"] = 277; },
       {"added_tokens[3].id", "id 277 leaves a gap", "no token has id 276"}},
      {"added id 2^30", [](json& d) { d["added_tokens"][1]["id"] = 1 << 30; },
       {"added_tokens[1].id", "id 1073741824 leaves a gap", "no token has id 274"}},
      {"added twice", [](json& d) { d["added_tokens"][3]["content"] = "<|eot_id|>"; },
       {"added_tokens[3]", "twice"}},
      {"added empty", [](json& d) { d["added_tokens"][3]["content"] = ""; }, {"added_tokens[3].content"}},
      {"flag type", [](json& d) { d["added_tokens"][0]["special"] = "yes"; }, {"added_tokens[0].special"}},
      {"template id", [](json& d) {
         d["post_processor"] = json::parse(R"({"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "special_tokens": {}})");
       },
       {"post_processor.special_tokens", "\"<s>\""}},
  };
  check_refusals(cases);

  const ScratchDir dir("hf_malformed");
  for (const auto& [text, part] : std::vector<std::pair<std::string, std::string>>{
           {"{\"model\": ", "not valid JSON"},
           {"[1, 2]", "not a JSON object"},
           {"{\"model\": {}, \"model\": {}}", "the key 'model' twice"},
           {std::string("{\"a\": 1}\0", 9), "NUL byte"}}) {
    const fs::path file = dir.write("tokenizer.json", text);
    CHECK_ERROR_NAMES(calm::io::HfTokenizer::load(file), file.string(), part);
  }
  CHECK_ERROR_NAMES(calm::io::HfTokenizer::load(dir.path / "missing.json"), "missing.json");
  CHECK_ERROR_NAMES(calm::Tokenizer::load(dir.path / "missing.json"), "missing.json");
  fs::create_directory(dir.path / "d.json");
  CHECK_ERROR_NAMES(calm::io::HfTokenizer::load(dir.path / "d.json"), "not a regular file");
}
