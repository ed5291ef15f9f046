// Tokenizer: the model's tokenizer (link calm::tokenizer) — a sentencepiece tokenizer.model or a
// Hugging Face tokenizer.json with a byte-level BPE model (Llama 3.x; calm/io/hf_tokenizer.hpp)
// behind one interface — and StreamDecoder, which turns generated ids into text one token at a
// time.
#pragma once

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <sentencepiece_processor.h>

#include "calm/core/error.hpp"
#include "calm/io/hf_config.hpp"
#include "calm/io/hf_tokenizer.hpp"
#include "calm/io/mapped_file.hpp"
#include "calm/io/tokenizer_file.hpp"

namespace calm {

enum class TokenizerKind { sentencepiece, hf_bpe };

class Tokenizer {
 public:
  // A file whose name ends in .json is read as a Hugging Face tokenizer.json, any other as a
  // sentencepiece model. Missing, empty or corrupt files give a calm::Error naming the file.
  static Tokenizer load(const std::filesystem::path& model_file) {
    if (model_file.extension() == ".json") {
      return Tokenizer(std::make_unique<io::HfTokenizer>(io::HfTokenizer::load(model_file)),
                       model_file);
    }
    const io::MappedFile file(model_file);
    auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = sp->LoadFromSerializedProto(
        {reinterpret_cast<const char*>(file.bytes().data()), file.bytes().size()});
    if (!status.ok()) {
      throw Error("'" + model_file.string() +
                  "' is not a sentencepiece model: " + status.ToString());
    }
    if (sp->GetPieceSize() <= 0)
      throw Error("'" + model_file.string() + "' has an empty vocabulary");
    return Tokenizer(std::move(sp), model_file);
  }

  // The tokenizer of a Hugging Face model folder: tokenizer.json when there is one (Llama 3.x
  // ships only that), else tokenizer.model. path() and description() say which.
  static Tokenizer load_folder(const std::filesystem::path& model_dir) {
    const std::filesystem::path file = io::tokenizer_file(model_dir);
    std::error_code ec;
    if (!std::filesystem::exists(file, ec)) {
      throw Error("'" + model_dir.string() +
                  "' has no tokenizer: neither tokenizer.json nor tokenizer.model");
    }
    return load(file);
  }

  // Token ids of `text`, with the BOS id first if add_bos.
  // tokenizer.json: ill-formed UTF-8 in `text` is read as U+FFFD (docs/design.md §12).
  std::vector<int> encode(std::string_view text, bool add_bos = true) const {
    std::vector<int> ids;
    if (hf_) {
      ids = hf_->encode(text);
    } else {
      const auto status = sp_->Encode(text, &ids);
      if (!status.ok())
        throw Error("encoding with '" + path_.string() + "' failed: " + status.ToString());
    }
    if (add_bos) {
      if (bos_id() < 0) throw Error("'" + path_.string() + "' defines no BOS token");
      ids.insert(ids.begin(), bos_id());
    }
    return ids;
  }

  // Text of `ids`. Control tokens (BOS, EOS; tokenizer.json: every special added token) decode
  // to nothing; byte pieces that do not form valid UTF-8 decode to U+FFFD. Ids outside the
  // vocabulary are an error.
  std::string decode(std::span<const int> ids) const {
    for (int id : ids) check_id(id);
    if (hf_) return hf_->decode(ids);
    std::string text;
    const auto status = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
    if (!status.ok())
      throw Error("decoding with '" + path_.string() + "' failed: " + status.ToString());
    return text;
  }

  // Refuses a tokenizer that does not belong to the model config.json describes: a different
  // number of pieces than the vocabulary (ids past the embedding, or ids it cannot decode,
  // would surface only mid-generation), or BOS/EOS ids other than config.json's (which one is
  // meant cannot be guessed). Call it once both are loaded.
  void check_fits(const LlamaConfig& config, const std::string& config_file) const {
    if (vocab_size() != config.vocab_size)
      throw Error("tokenizer '" + path_.string() + "' has " + std::to_string(vocab_size()) +
                  " pieces but " + config_file + " says vocab_size " +
                  std::to_string(config.vocab_size) +
                  (vocab_size() > config.vocab_size
                       ? ": its ids would index past the embedding"
                       : ": the model could generate ids the tokenizer cannot decode"));
    if (bos_id() >= 0 && bos_id() != config.bos_token_id)
      throw Error("bos_token_id differs: " + config_file + " says " +
                  std::to_string(config.bos_token_id) + ", tokenizer '" + path_.string() +
                  "' says " + std::to_string(bos_id()));
    const auto& eos = config.eos_token_ids;
    if (eos_id() >= 0 && std::find(eos.begin(), eos.end(), eos_id()) == eos.end())
      throw Error("eos_token_id differs: " + config_file + " says " +
                  std::to_string(config.eos_token_id) + ", tokenizer '" + path_.string() +
                  "' says " + std::to_string(eos_id()));
  }

  // Every token that ends generation: config.json's eos_token_id (one id or a list, as Llama 3
  // lists <|eot_id|> beside <|end_of_text|>) and this tokenizer's EOS (check_fits: one of them).
  std::vector<int> end_tokens(const LlamaConfig& config) const {
    std::vector<int> ends = config.eos_token_ids;
    if (eos_id() >= 0 && std::find(ends.begin(), ends.end(), eos_id()) == ends.end())
      ends.push_back(eos_id());
    return ends;
  }

  int bos_id() const { return hf_ ? hf_->bos_id() : sp_->bos_id(); }  // -1 if the model defines none
  int eos_id() const { return hf_ ? hf_->eos_id() : sp_->eos_id(); }
  std::size_t vocab_size() const {
    return hf_ ? hf_->vocab_size() : static_cast<std::size_t>(sp_->GetPieceSize());
  }
  std::string piece(int id) const {
    check_id(id);
    return hf_ ? hf_->piece(id) : sp_->IdToPiece(id);
  }
  // Sentencepiece's byte-fallback pieces (<0xE6>). Byte-level BPE has none: any piece may hold
  // any bytes.
  bool is_byte(int id) const {
    check_id(id);
    return hf_ ? false : sp_->IsByte(id);
  }
  bool is_control(int id) const {
    check_id(id);
    return hf_ ? hf_->is_special(id) : sp_->IsControl(id);
  }
  const std::filesystem::path& path() const noexcept { return path_; }
  TokenizerKind kind() const noexcept {
    return hf_ ? TokenizerKind::hf_bpe : TokenizerKind::sentencepiece;
  }
  // "DIR/tokenizer.json (Hugging Face BPE)" or "DIR/tokenizer.model (sentencepiece)".
  std::string description() const {
    return path_.string() + (hf_ ? " (Hugging Face BPE)" : " (sentencepiece)");
  }
  // The tokenizer.json backend, or nullptr for sentencepiece.
  const io::HfTokenizer* hf_tokenizer() const noexcept { return hf_.get(); }

  void check_id(int id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= vocab_size()) {
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary of '" +
                  path_.string() + "' (" + std::to_string(vocab_size()) + " pieces)");
    }
  }

 private:
  Tokenizer(std::unique_ptr<sentencepiece::SentencePieceProcessor> sp, std::filesystem::path path)
      : sp_(std::move(sp)), path_(std::move(path)) {}
  Tokenizer(std::unique_ptr<io::HfTokenizer> hf, std::filesystem::path path)
      : hf_(std::move(hf)), path_(std::move(path)) {}

  // Exactly one of the two is set.
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;  // not movable itself
  std::unique_ptr<io::HfTokenizer> hf_;
  std::filesystem::path path_;
};

// Decodes a stream of generated ids. The concatenation of everything push() and flush() return
// is exactly tokenizer.decode(all ids). Two things make naive per-token decoding wrong:
//  - a character outside the vocabulary arrives as several byte pieces (<0xE6><0x97><0xA5>);
//    until the last one arrives the decoder shows U+FFFD, so trailing U+FFFD is held back;
//  - sentencepiece drops the leading space of the first piece of a text ("▁Hello" -> "Hello"),
//    so a later piece decoded alone would lose its space.
// Decoding everything each step would be O(n) per token; instead, once all text is out and the
// last piece is not a byte, the window restarts, and later windows are decoded behind an
// "anchor" piece so that their first space is kept (its text is then cut off again).
// For byte-level BPE (tokenizer.json) decoding is the concatenation of the tokens' bytes, read
// as UTF-8: a piece may end inside a character, so the bytes of an incomplete but still possible
// UTF-8 sequence are held back until it completes (or cannot), and nothing else is.
// The tokenizer must outlive the decoder. Call flush() once, at the end of the stream.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer)
      : tok_(&tokenizer), hf_(tokenizer.hf_tokenizer()) {
    if (hf_ != nullptr) return;
    for (int id = 0; id < static_cast<int>(tok_->vocab_size()); ++id) {
      if (tok_->is_byte(id) || tok_->is_control(id)) continue;
      const int one[] = {id};
      const std::string text = tok_->decode(one);
      if (!text.empty() && text.find(kReplacement) == std::string::npos &&
          text.find("\xE2\x81\x87") == std::string::npos) {
        anchor_ = id;  // an ordinary piece whose text is not empty even at the start
        anchor_text_ = text;
        break;
      }
    }
  }

  // The text that `token` completes (possibly empty).
  std::string push(int token) {
    tok_->check_id(token);
    if (hf_ != nullptr) {
      pending_ += hf_->token_bytes(token);
      std::string out;
      const std::size_t held = io::hf_detail::append_utf8_lossy(pending_, out, false);
      pending_.erase(0, pending_.size() - held);
      return out;
    }
    window_.push_back(token);
    const std::string text = window_text();
    std::size_t stable = text.size();
    while (stable >= kReplacement.size() && stable > emitted_ &&
           std::string_view(text).substr(stable - kReplacement.size()).starts_with(kReplacement)) {
      stable -= kReplacement.size();
    }
    std::string out = stable > emitted_ ? text.substr(emitted_, stable - emitted_) : std::string();
    emitted_ = std::max(emitted_, stable);
    if (emitted_ == text.size() && !tok_->is_byte(token) && anchor_ >= 0 &&
        (started_ || !text.empty())) {
      // Everything is out and no byte sequence is open: later text does not depend on the window.
      window_.clear();
      emitted_ = 0;
      started_ = true;
    }
    return out;
  }

  // Whatever is held back (an incomplete byte sequence, shown as U+FFFD as decode() does).
  std::string flush() {
    if (hf_ != nullptr) {
      std::string out;
      io::hf_detail::append_utf8_lossy(pending_, out, true);
      pending_.clear();
      return out;
    }
    const std::string text = window_text();
    std::string out = text.size() > emitted_ ? text.substr(emitted_) : std::string();
    emitted_ = text.size();
    return out;
  }

 private:
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

  // The window's text as it appears inside the decoding of the whole stream.
  std::string window_text() const {
    if (!started_) return tok_->decode(window_);
    std::vector<int> anchored;
    anchored.reserve(window_.size() + 1);
    anchored.push_back(anchor_);
    anchored.insert(anchored.end(), window_.begin(), window_.end());
    std::string text = tok_->decode(anchored);
    return text.substr(std::min(anchor_text_.size(), text.size()));
  }

  const Tokenizer* tok_;
  const io::HfTokenizer* hf_;  // byte-level BPE: only pending_ is used
  std::string pending_;        // bytes of an incomplete UTF-8 sequence
  int anchor_ = -1;  // -1: no usable anchor, so the window never restarts
  std::string anchor_text_;
  std::vector<int> window_;  // ids since the last restart
  std::size_t emitted_ = 0;  // bytes of window_text() already returned
  bool started_ = false;     // some text was emitted before the window: its first space is kept
};

}  // namespace calm
