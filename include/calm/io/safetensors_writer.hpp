// Writes a safetensors file (8-byte little-endian header length, JSON header, raw bytes),
// atomically: a reader never sees a half-written file.
#pragma once

#include <calm/core/dtype.hpp>
#include <calm/core/error.hpp>
#include <calm/io/atomic_file.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace calm::io {

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<std::size_t> shape;
  std::span<const std::byte> bytes;  // numel * dtype_size(dtype) bytes, row-major
};

inline void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  // Wider dtypes first (stable), as Hugging Face does, so every tensor's data stays aligned to
  // its element size after the 8-byte-aligned header.
  std::vector<const TensorToWrite*> order;
  for (const TensorToWrite& t : tensors) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(), [](const TensorToWrite* a, const TensorToWrite* b) {
    return dtype_size(a->dtype) > dtype_size(b->dtype);
  });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::size_t offset = 0;
  for (const TensorToWrite* tp : order) {
    const TensorToWrite& t = *tp;
    std::size_t numel = 1;
    for (std::size_t d : t.shape) numel *= d;
    if (numel * dtype_size(t.dtype) != t.bytes.size())
      throw Error("write_safetensors: tensor '" + t.name + "' has " + std::to_string(t.bytes.size()) +
                  " bytes but its shape and dtype need " + std::to_string(numel * dtype_size(t.dtype)));
    if (header.contains(t.name)) throw Error("write_safetensors: duplicate tensor '" + t.name + "'");
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned, as HF does
  const std::uint64_t n = text.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  write_atomically(path, [&](std::FILE* f) {
    write_all(f, len, 8, path);
    write_all(f, text.data(), text.size(), path);
    for (const TensorToWrite* t : order) write_all(f, t->bytes.data(), t->bytes.size(), path);
  });
}

}  // namespace calm::io
