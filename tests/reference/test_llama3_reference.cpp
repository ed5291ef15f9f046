// calm's tokenizer.json implementation against Hugging Face's JavaScript one, on the real
// Llama 3 tokenizer.json: the files fetch_llama3_tokenizer.sh puts in DIR (llama3/: the
// tokenizer; out/: the reference, see encode_reference.mjs for what each file holds). Requires identical ids for every record,
// decode(encode(s)) == s for well-formed UTF-8 (U+FFFD substitution otherwise), StreamDecoder's
// output == decode(), and identical decoding of random id sequences.
// Usage: test_llama3_reference DIR
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "calm/io/hf_tokenizer.hpp"
#include "calm/io/tokenizer.hpp"

namespace {

int failures = 0;

void fail(const std::string& what) {
  if (++failures <= 20) std::fprintf(stderr, "FAIL: %s\n", what.c_str());
}

std::string from_hex(std::string_view hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  return out;
}

std::string to_hex(std::string_view s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::vector<int> parse_ids(const std::string& s) {
  std::vector<int> ids;
  std::istringstream in(s);
  for (int id; in >> id;) ids.push_back(id);
  return ids;
}

std::string join(const std::vector<int>& ids) {
  std::string s;
  for (int id : ids) {
    if (!s.empty()) s += ' ';
    s += std::to_string(id);
  }
  return s;
}

// (first column, second column) of each line of a .tsv file.
std::vector<std::pair<std::string, std::string>> read_tsv(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw calm::Error("cannot read '" + file + "' (run fetch_llama3_tokenizer.sh first)");
  std::vector<std::pair<std::string, std::string>> rows;
  for (std::string line; std::getline(in, line);) {
    const std::size_t tab = line.find('\t');
    if (tab == std::string::npos) throw calm::Error("'" + file + "': a line without a tab");
    rows.emplace_back(line.substr(0, tab), line.substr(tab + 1));
  }
  return rows;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// `text` without the special tokens' text (which decodes to nothing), leftmost-longest first.
std::string without_specials(const calm::Tokenizer& tok, const std::string& text) {
  std::vector<std::string> specials;
  for (int id = 0; id < static_cast<int>(tok.vocab_size()); ++id)
    if (tok.is_control(id)) specials.push_back(tok.piece(id));
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t longest = 0;
    for (const std::string& s : specials)
      if (s.size() > longest && text.compare(i, s.size(), s) == 0) longest = s.size();
    if (longest > 0) {
      i += longest;
    } else {
      out += text[i++];
    }
  }
  return out;
}

void check_records(const calm::Tokenizer& tok, const std::string& dir) {
  const auto rows = read_tsv(dir + "/records.tsv");
  std::vector<std::string> texts;
  std::vector<std::vector<int>> expected;
  std::size_t bytes = 0;
  for (const auto& [hex, ids] : rows) {
    texts.push_back(from_hex(hex));
    expected.push_back(parse_ids(ids));
    bytes += texts.back().size();
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<int>> got;
  got.reserve(texts.size());
  for (const std::string& t : texts) got.push_back(tok.encode(t, /*add_bos=*/false));
  const double encode_s = seconds_since(t0);
  std::size_t ids_compared = 0, tokens = 0, ill_formed = 0;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    tokens += got[i].size();
    ids_compared += expected[i].size();
    if (got[i] != expected[i]) {
      fail("record " + std::to_string(i) + " (hex " + to_hex(texts[i]).substr(0, 120) +
           "): calm [" + join(got[i]).substr(0, 200) + "] reference [" +
           join(expected[i]).substr(0, 200) + "]");
      continue;
    }
    // Round trip: the text itself, or its U+FFFD-substituted form, less special tokens.
    std::string want;
    if (calm::io::hf_detail::find_ill_formed_utf8(texts[i]) != std::string_view::npos) {
      ++ill_formed;
      calm::io::hf_detail::append_utf8_lossy(texts[i], want, true);
    } else {
      want = texts[i];
    }
    if (want.find("<|") != std::string::npos) want = without_specials(tok, want);
    const std::string decoded = tok.decode(got[i]);
    if (decoded != want) fail("record " + std::to_string(i) + ": decode(encode(s)) != s");
    calm::StreamDecoder stream(tok);
    std::string streamed;
    for (int id : got[i]) streamed += stream.push(id);
    streamed += stream.flush();
    if (streamed != decoded) fail("record " + std::to_string(i) + ": StreamDecoder != decode");
  }
  std::printf("records: %zu (%zu with ill-formed UTF-8), %zu bytes, %zu reference ids compared\n",
              texts.size(), ill_formed, bytes, ids_compared);
  std::printf("encode: %.3f s, %.2f MB/s, %.0f tokens/s\n", encode_s, bytes / encode_s / 1e6,
              tokens / encode_s);
}

void check_template(const std::string& dir) {
  const auto t0 = std::chrono::steady_clock::now();
  const calm::Tokenizer tok = calm::Tokenizer::load(dir + "/template/tokenizer.json");
  std::printf("template variant (merges as pairs) loaded in %.3f s\n", seconds_since(t0));
  if (tok.bos_id() != 128000) fail("template: bos_id " + std::to_string(tok.bos_id()));
  std::size_t n = 0;
  for (const auto& [hex, ids] : read_tsv(dir + "/template.tsv")) {
    const std::vector<int> got = tok.encode(from_hex(hex), /*add_bos=*/true);
    if (got != parse_ids(ids)) fail("template record (hex " + hex.substr(0, 120) + ")");
    ++n;
  }
  std::printf("template records: %zu\n", n);
}

void check_decode(const calm::Tokenizer& tok, const std::string& dir) {
  std::size_t n = 0;
  for (const auto& [ids, hex] : read_tsv(dir + "/decode.tsv")) {
    const std::vector<int> seq = parse_ids(ids);
    const std::string got = tok.decode(seq);
    if (got != from_hex(hex)) {
      fail("decode [" + ids + "]: calm " + to_hex(got) + " reference " + hex);
      continue;
    }
    calm::StreamDecoder stream(tok);
    std::string streamed;
    for (int id : seq) streamed += stream.push(id);
    if (streamed + stream.flush() != got) fail("decode [" + ids + "]: StreamDecoder != decode");
    ++n;
  }
  std::printf("decodes: %zu\n", n);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_llama3_reference DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  try {
    const auto t0 = std::chrono::steady_clock::now();
    const calm::Tokenizer tok = calm::Tokenizer::load_folder(dir + "/llama3");
    std::printf("loaded %s in %.3f s (JIT %s)\n", tok.description().c_str(), seconds_since(t0),
                tok.hf_tokenizer()->jit() ? "on" : "off");
    if (tok.kind() != calm::TokenizerKind::hf_bpe) fail("load_folder did not pick tokenizer.json");
    if (tok.vocab_size() != 128256) fail("vocab_size " + std::to_string(tok.vocab_size()));
    if (tok.bos_id() != 128000) fail("bos_id " + std::to_string(tok.bos_id()));
    if (tok.eos_id() != 128001) fail("eos_id " + std::to_string(tok.eos_id()));
    if (!tok.is_control(128009) || tok.is_control(1000) || tok.is_byte(0))
      fail("is_control/is_byte");
    check_records(tok, dir + "/out");
    check_decode(tok, dir + "/out");
    check_template(dir + "/out");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: %s\n", e.what());
    return 1;
  }
  if (failures > 0) {
    std::fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  std::printf("OK\n");
  return 0;
}
