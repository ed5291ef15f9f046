// Which tokenizer file a Hugging Face model folder uses, for the tokenizer loader and the model
// fingerprint alike (no library needed: calm::calm alone may include it).
#pragma once

#include <filesystem>
#include <system_error>

namespace calm::io {

// tokenizer.json (Hugging Face tokenizers) when the folder has one, else tokenizer.model
// (sentencepiece), whether or not that exists: opening it names what is missing. Llama 3.x ships
// only tokenizer.json; folders converted for both keep tokenizer.json as the authoritative one.
inline std::filesystem::path tokenizer_file(const std::filesystem::path& model_dir) {
  const std::filesystem::path json = model_dir / "tokenizer.json";
  std::error_code ec;
  if (std::filesystem::exists(json, ec)) return json;
  return model_dir / "tokenizer.model";
}

}  // namespace calm::io
