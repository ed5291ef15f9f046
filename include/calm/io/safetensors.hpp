// safetensors reading: SafeTensorsFile (one file) and Checkpoint (a Hugging Face model directory,
// single-file or sharded). Tensors are views into the memory-mapped files; nothing is copied.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON header
//   {"<tensor>": {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end)}, ...,
//    "__metadata__": {"<string>": "<string>"}}   (optional)
// then the data section; offsets are relative to its first byte.
//
// Everything is validated at open(), so a TensorView always points at exactly numel * dtype size
// bytes inside its file. Like the reference implementation (huggingface/safetensors), the tensors
// must tile the data section: no overlap, no hole, no trailing bytes. The header is read as a
// whole (calm::io::parse_json): a key twice in the header or inside a tensor entry, a NUL byte or
// deep nesting is an error.
//
// Alignment, one rule for every safetensors file calm reads (model.safetensors, shards,
// calm.safetensors): data at any offset is accepted. The safetensors library pads the header so
// that every tensor is aligned for its dtype, but the format does not require it of other
// writers. A TensorView points into the mapping as it is; as<T>() refuses a misaligned
// pointer, and the loaders read such a tensor through a copy (to_floats() here, an aligned copy
// for the model's matrices in backends/llama/weights.hpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "calm/core/dtype.hpp"
#include "calm/core/error.hpp"
#include "calm/io/json.hpp"
#include "calm/io/mapped_file.hpp"

namespace calm::io {

namespace detail {

inline std::string shape_string(std::span<const std::size_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

inline std::optional<DType> parse_dtype(std::string_view name) noexcept {
  if (name == "F32") return DType::f32;
  if (name == "F16") return DType::f16;
  if (name == "BF16") return DType::bf16;
  return std::nullopt;
}

// a * b, or nullopt on size_t overflow (a crafted shape must not wrap around to a small size).
inline std::optional<std::size_t> checked_mul(std::size_t a, std::size_t b) noexcept {
  std::size_t out;
  if (__builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

}  // namespace detail

struct TensorView {
  std::string name;
  DType dtype;
  std::vector<std::size_t> shape;  // row-major, outermost first
  const std::byte* data;           // into the mapped file
  std::size_t nbytes;              // == numel() * dtype_size(dtype), checked at open
  std::filesystem::path file;

  std::size_t numel() const noexcept {
    std::size_t n = 1;
    for (std::size_t d : shape) n *= d;  // cannot overflow: checked when the file was opened
    return n;
  }

  // The data as T. Throws if T is not the stored dtype, or if the data is not aligned for T
  // (reading a misaligned float through a pointer is undefined behaviour; files written by
  // the safetensors library pad the header so that this never happens).
  template <class T>
  const T* as() const {
    if (dtype_of<T>() != dtype) {
      throw Error("tensor '" + name + "' in '" + file.string() + "' has dtype " +
                  std::string(dtype_name(dtype)) + ", read as " +
                  std::string(dtype_name(dtype_of<T>())));
    }
    if (reinterpret_cast<std::uintptr_t>(data) % alignof(T) != 0) {
      throw Error("tensor '" + name + "' in '" + file.string() + "' is not aligned to " +
                  std::to_string(alignof(T)) + " bytes");
    }
    return reinterpret_cast<const T*>(data);
  }

  // Whether data is aligned for the dtype, so that as<T>() can read it in place.
  bool aligned() const noexcept {
    return reinterpret_cast<std::uintptr_t>(data) % dtype_size(dtype) == 0;
  }

  // Element i widened to f32, read through a copy of its bytes (works at any alignment).
  float value(std::size_t i) const noexcept {
    const std::byte* p = data + i * dtype_size(dtype);
    switch (dtype) {
      case DType::f32: {
        float x;
        std::memcpy(&x, p, sizeof x);
        return x;
      }
      case DType::f16: {
        f16 x;
        std::memcpy(&x, p, sizeof x);
        return to_float(x);
      }
      case DType::bf16:
        break;
    }
    bf16 x;
    std::memcpy(&x, p, sizeof x);
    return to_float(x);
  }

  // All values widened to f32 (at any alignment).
  std::vector<float> to_floats() const {
    std::vector<float> out(numel());
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = value(i);
    return out;
  }

  // The index of the first NaN or infinity, or nullopt. Tests the exponent bits, so it reads
  // the tensor once at memory speed (any alignment).
  std::optional<std::size_t> first_non_finite() const noexcept {
    const std::size_t n = numel();
    if (dtype == DType::f32) {
      for (std::size_t i = 0; i < n; ++i) {
        std::uint32_t b;
        std::memcpy(&b, data + 4 * i, 4);
        if ((b & 0x7F800000u) == 0x7F800000u) return i;
      }
      return std::nullopt;
    }
    const std::uint16_t exponent = dtype == DType::f16 ? 0x7C00u : 0x7F80u;
    for (std::size_t i = 0; i < n; ++i) {
      std::uint16_t b;
      std::memcpy(&b, data + 2 * i, 2);
      if ((b & exponent) == exponent) return i;
    }
    return std::nullopt;
  }
};

class SafeTensorsFile {
 public:
  // Maps and validates the whole file; every error names the file and, where there is one,
  // the tensor.
  static SafeTensorsFile open(const std::filesystem::path& path) {
    SafeTensorsFile f{MappedFile(path)};
    f.parse();
    return f;
  }

  // nullptr if absent.
  const TensorView* find(std::string_view name) const noexcept {
    const auto it = std::lower_bound(
        tensors_.begin(), tensors_.end(), name,
        [](const TensorView& t, std::string_view n) { return std::string_view(t.name) < n; });
    return it != tensors_.end() && it->name == name ? &*it : nullptr;
  }
  // Sorted by name.
  std::span<const TensorView> tensors() const noexcept { return tensors_; }
  const std::map<std::string, std::string, std::less<>>& metadata() const noexcept {
    return metadata_;
  }
  const std::filesystem::path& path() const noexcept { return file_.path(); }
  const MappedFile& mapping() const noexcept { return file_; }

 private:
  explicit SafeTensorsFile(MappedFile file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw Error("'" + path().string() + "': " + what);
  }
  [[noreturn]] void fail_tensor(std::string_view tensor, const std::string& what) const {
    throw Error("tensor '" + std::string(tensor) + "' in '" + path().string() + "': " + what);
  }

  void parse() {
    const std::span<const std::byte> bytes = file_.bytes();
    if (bytes.size() < 8) {
      fail("too short for a safetensors file (" + std::to_string(bytes.size()) +
           " bytes, the header length alone takes 8)");
    }
    std::uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i)
      header_len = (header_len << 8) | std::to_integer<std::uint64_t>(bytes[i]);
    if (header_len > bytes.size() - 8) {
      fail("header length " + std::to_string(header_len) + " runs past the end of the file (" +
           std::to_string(bytes.size()) + " bytes)");
    }
    const nlohmann::json header = parse_json_object(as_text(bytes.subspan(8, header_len)),
                                                    "safetensors header", path().string());
    const std::span<const std::byte> data = bytes.subspan(8 + header_len);

    for (const auto& [key, value] : header.items()) {
      if (key == "__metadata__") {
        parse_metadata(value);
      } else {
        tensors_.push_back(parse_entry(key, value, data));
      }
    }
    std::sort(tensors_.begin(), tensors_.end(),
              [](const TensorView& a, const TensorView& b) { return a.name < b.name; });
    check_tiling(data);
  }

  void parse_metadata(const nlohmann::json& value) {
    if (!value.is_object())
      fail("__metadata__ is not an object (found " + describe_json(value) + ")");
    for (const auto& [k, v] : value.items()) {
      if (!v.is_string()) {
        fail("__metadata__ key '" + k + "' is not a string (found " + describe_json(v) + ")");
      }
      metadata_.emplace(k, v.get<std::string>());
    }
  }

  TensorView parse_entry(const std::string& name, const nlohmann::json& entry,
                         std::span<const std::byte> data) const {
    if (!entry.is_object())
      fail_tensor(name, "entry is not an object (found " + describe_json(entry) + ")");
    for (const auto& [k, v] : entry.items()) {
      if (k != "dtype" && k != "shape" && k != "data_offsets")
        fail_tensor(name, "unknown key '" + k + "'");
    }
    for (const char* k : {"dtype", "shape", "data_offsets"}) {
      if (!entry.contains(k)) fail_tensor(name, std::string("missing key '") + k + "'");
    }

    const nlohmann::json& dtype_json = entry["dtype"];
    if (!dtype_json.is_string())
      fail_tensor(name, "dtype is not a string (found " + describe_json(dtype_json) + ")");
    const std::string dtype_str = dtype_json.get<std::string>();
    const std::optional<DType> dtype = detail::parse_dtype(dtype_str);
    if (!dtype)
      fail_tensor(name, "unsupported dtype '" + dtype_str + "' (calm reads F32, F16 and BF16)");

    const auto read_sizes = [&](const char* key) {
      const nlohmann::json& arr = entry[key];
      if (!arr.is_array()) {
        fail_tensor(name, std::string(key) + " is not an array (found " + describe_json(arr) + ")");
      }
      std::vector<std::size_t> out;
      for (std::size_t i = 0; i < arr.size(); ++i) {
        // Non-negative JSON integers parse as unsigned; negatives and fractions do not.
        if (!arr[i].is_number_unsigned()) {
          fail_tensor(name, std::string(key) + "[" + std::to_string(i) +
                                "] is not a non-negative integer (found " + describe_json(arr[i]) +
                                ")");
        }
        out.push_back(arr[i].get<std::size_t>());
      }
      return out;
    };
    std::vector<std::size_t> shape = read_sizes("shape");
    const std::vector<std::size_t> offsets = read_sizes("data_offsets");
    if (offsets.size() != 2) {
      fail_tensor(name, "data_offsets must be [begin, end] (found " +
                            std::to_string(offsets.size()) + " numbers)");
    }
    const std::size_t begin = offsets[0];
    const std::size_t end = offsets[1];

    std::optional<std::size_t> nbytes = dtype_size(*dtype);
    for (std::size_t d : shape) {
      if (nbytes) nbytes = detail::checked_mul(*nbytes, d);
    }
    if (!nbytes)
      fail_tensor(name, "shape " + detail::shape_string(shape) + " overflows the address space");
    if (begin > end) {
      fail_tensor(name, "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                            ") begin after they end");
    }
    if (end > data.size()) {
      fail_tensor(name, "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                            ") run past the data section (" + std::to_string(data.size()) +
                            " bytes)");
    }
    if (end - begin != *nbytes) {
      fail_tensor(name, "shape " + detail::shape_string(shape) + " of " + dtype_str + " needs " +
                            std::to_string(*nbytes) + " bytes but data_offsets [" +
                            std::to_string(begin) + ", " + std::to_string(end) + ") hold " +
                            std::to_string(end - begin));
    }
    return TensorView{name, *dtype, std::move(shape), data.data() + begin, *nbytes, path()};
  }

  // The tensors, in file order, must cover the data section exactly once.
  void check_tiling(std::span<const std::byte> data) const {
    std::vector<const TensorView*> by_offset;
    for (const TensorView& t : tensors_) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(), [](const TensorView* a, const TensorView* b) {
      return std::pair(a->data, a->nbytes) < std::pair(b->data, b->nbytes);
    });
    const std::byte* covered = data.data();  // everything before this belongs to a tensor
    const TensorView* previous = nullptr;
    for (const TensorView* t : by_offset) {
      const auto offset = [&](const std::byte* p) { return std::to_string(p - data.data()); };
      if (t->data < covered) {
        fail_tensor(t->name, "its bytes overlap tensor '" + previous->name + "' (from offset " +
                                 offset(t->data) + ", which already ends at " + offset(covered) +
                                 ")");
      }
      if (t->data > covered) {
        fail_tensor(t->name, "bytes [" + offset(covered) + ", " + offset(t->data) +
                                 ") before it belong to no tensor (holes are not allowed)");
      }
      covered = t->data + t->nbytes;
      previous = t;
    }
    if (covered != data.data() + data.size()) {
      fail("the tensors cover " + std::to_string(covered - data.data()) +
           " bytes but the data section has " + std::to_string(data.size()) +
           " (trailing bytes are not allowed)");
    }
  }

  MappedFile file_;
  std::vector<TensorView> tensors_;  // sorted by name
  std::map<std::string, std::string, std::less<>> metadata_;
};

// A Hugging Face model directory: either model.safetensors, or model.safetensors.index.json
// {"weight_map": {"<tensor>": "<shard file>"}, "metadata": {...}} and its shards.
class Checkpoint {
 public:
  static Checkpoint open(const std::filesystem::path& dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      throw Error("checkpoint directory '" + dir.string() +
                  "' does not exist or is not a directory");
    }
    const fs::path single = dir / "model.safetensors";
    const fs::path index = dir / "model.safetensors.index.json";
    const bool has_single = fs::exists(single, ec);
    const bool has_index = fs::exists(index, ec);
    if (has_single && has_index) {
      // Which one a tool would read is a convention, not a guarantee; refuse rather than guess.
      throw Error("'" + dir.string() +
                  "' holds both model.safetensors and model.safetensors.index.json; keep one");
    }
    Checkpoint c;
    c.dir_ = dir;
    if (has_index) {
      c.open_sharded(index);
    } else if (has_single) {
      c.files_.push_back(SafeTensorsFile::open(single));
      for (const TensorView& t : c.files_.back().tensors()) c.index_.emplace(t.name, &t);
    } else {
      throw Error("no model.safetensors or model.safetensors.index.json in '" + dir.string() + "'");
    }
    return c;
  }

  bool contains(std::string_view name) const noexcept { return find(name) != nullptr; }

  const TensorView* find(std::string_view name) const noexcept {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : it->second;
  }

  const TensorView& get(std::string_view name) const {
    const TensorView* t = find(name);
    if (t == nullptr)
      throw Error("missing tensor '" + std::string(name) + "' in '" + dir_.string() + "'");
    return *t;
  }

  const TensorView& get(std::string_view name,
                        std::initializer_list<std::size_t> expected_shape) const {
    const TensorView& t = get(name);
    if (!std::equal(t.shape.begin(), t.shape.end(), expected_shape.begin(), expected_shape.end())) {
      throw Error("tensor '" + t.name + "' in '" + t.file.string() + "' has shape " +
                  detail::shape_string(t.shape) + ", expected " +
                  detail::shape_string({expected_shape.begin(), expected_shape.size()}));
    }
    return t;
  }

  // All tensor names, sorted.
  std::vector<std::string_view> names() const {
    std::vector<std::string_view> out;
    for (const auto& [name, t] : index_) out.push_back(name);
    return out;
  }
  std::span<const SafeTensorsFile> files() const noexcept { return files_; }
  const std::filesystem::path& dir() const noexcept { return dir_; }

  // MappedFile::release_pages on whichever file's mapping holds `range`; false when none does
  // (e.g. a realigned copy in ordinary memory, which must not be dropped).
  bool release_pages(std::span<const std::byte> range) const noexcept {
    for (const SafeTensorsFile& f : files_)
      if (f.mapping().release_pages(range)) return true;
    return false;
  }

 private:
  Checkpoint() = default;

  void open_sharded(const std::filesystem::path& index_path) {
    const MappedFile index_file(index_path);
    const nlohmann::json index =
        parse_json_object(as_text(index_file.bytes()), "index", index_path.string());
    const std::string where = "'" + index_path.string() + "'";
    for (const auto& [key, value] : index.items()) {
      if (key != "weight_map" && key != "metadata")
        throw Error(where + ": unknown key '" + key + "'");
    }
    if (!index.contains("weight_map")) throw Error(where + ": missing key 'weight_map'");
    const nlohmann::json& weight_map = index["weight_map"];
    if (!weight_map.is_object()) {
      throw Error(where + ": weight_map is not an object (found " + describe_json(weight_map) +
                  ")");
    }

    std::map<std::string, std::vector<std::string>> names_by_shard;
    for (const auto& [name, shard] : weight_map.items()) {
      if (!shard.is_string()) {
        throw Error(where + ": shard of tensor '" + name + "' is not a string (found " +
                    describe_json(shard) + ")");
      }
      const std::string file = shard.get<std::string>();
      // Shards live next to the index: a name must not reach outside the directory.
      if (file.empty() || file.find('/') != std::string::npos ||
          file.find('\\') != std::string::npos || file.find("..") != std::string::npos ||
          file.find('\0') != std::string::npos) {
        throw Error(where + ": shard file name '" + file + "' of tensor '" + name +
                    "' is not a plain file name in the checkpoint directory");
      }
      names_by_shard[file].push_back(name);
    }

    for (const auto& [shard, names] : names_by_shard)
      files_.push_back(SafeTensorsFile::open(dir_ / shard));

    for (const SafeTensorsFile& f : files_) {
      for (const TensorView& t : f.tensors()) {
        const auto [it, inserted] = index_.emplace(t.name, &t);
        if (!inserted) {
          throw Error("tensor '" + t.name + "' is in two shards: '" + it->second->file.string() +
                      "' and '" + t.file.string() + "'");
        }
        const std::string listed =
            weight_map.contains(t.name) ? weight_map[t.name].get<std::string>() : std::string();
        if (listed != t.file.filename().string()) {
          throw Error("tensor '" + t.name + "' in '" + t.file.string() +
                      "' is not listed for that shard in " + where);
        }
      }
    }
    for (const auto& [shard, names] : names_by_shard) {
      for (const std::string& name : names) {
        if (!index_.contains(name)) {
          throw Error("tensor '" + name + "' is listed in " + where + " but missing from shard '" +
                      (dir_ / shard).string() + "'");
        }
      }
    }
  }

  std::filesystem::path dir_;
  std::vector<SafeTensorsFile> files_;
  // Points into files_[i].tensors(); those vectors never change after open, and moving a
  // Checkpoint moves their buffers, so the pointers stay valid.
  std::map<std::string, const TensorView*, std::less<>> index_;
};

}  // namespace calm::io
