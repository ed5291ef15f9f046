// MappedFile, SafeTensorsFile and Checkpoint: good files read back byte-exactly, and every kind
// of bad file gives a calm::Error that names the file and the tensor. The files are written by
// hand here (the format is 8 bytes of header length, a JSON header, raw data), not by the code
// under test.
#include "test_support.hpp"
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>

#include "calm/io/mapped_file.hpp"
#include "calm/io/safetensors.hpp"

namespace fs = std::filesystem;
using calm::io::Checkpoint;
using calm::io::MappedFile;
using calm::io::SafeTensorsFile;

namespace {

using calm::test::error_of;
using calm::test::contains;

using TempDir = calm::test::ScratchDir;

using calm::test::le64;
using calm::test::safetensors_bytes;
using calm::test::write_file;

std::string floats_bytes(std::initializer_list<float> values) {
  std::string s;
  for (float v : values) s.append(reinterpret_cast<const char*>(&v), sizeof v);
  return s;
}

// A file with a single tensor "w" whose header is `entry`, and `data` as the data section.
fs::path one_tensor_file(const TempDir& dir, const std::string& entry, std::string_view data,
                         const std::string& name = "bad.safetensors") {
  const fs::path p = dir.path / name;
  write_file(p, safetensors_bytes("{\"w\":" + entry + "}", data));
  return p;
}

}  // namespace

TEST_CASE("MappedFile maps the bytes and names the path in errors") {
  TempDir dir;
  const fs::path p = dir.path / "hello.bin";
  write_file(p, "hello");
  MappedFile f(p);
  REQUIRE(f.bytes().size() == 5);
  CHECK(std::memcmp(f.bytes().data(), "hello", 5) == 0);
  CHECK(f.path() == p);

  MappedFile moved(std::move(f));
  CHECK(moved.bytes().size() == 5);
  CHECK(f.bytes().empty());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract

  CHECK_ERROR_NAMES(MappedFile(dir.path / "absent.bin"), "absent.bin", "No such file");
  write_file(dir.path / "empty.bin", "");
  CHECK_ERROR_NAMES(MappedFile(dir.path / "empty.bin"), "empty.bin", "empty");
  CHECK_ERROR_NAMES(MappedFile(dir.path), dir.path.string(), "not a regular file");
}

TEST_CASE("MappedFile::release_pages drops residency only: the bytes read back unchanged") {
  TempDir dir;
  const fs::path p = dir.path / "pages.bin";
  std::string content(5 * 4096 + 123, '\0');
  for (std::size_t i = 0; i < content.size(); ++i) content[i] = char(i * 131 % 251);
  write_file(p, content);
  const MappedFile f(p);
  const std::span<const std::byte> all = f.bytes();
  CHECK(f.release_pages(all.subspan(100, 3 * 4096)));  // a range inside: whole pages dropped
  CHECK(f.release_pages(all));
  CHECK(std::memcmp(all.data(), content.data(), content.size()) == 0);
  // Ranges outside the mapping are refused and nothing is dropped (e.g. ordinary memory).
  CHECK_FALSE(f.release_pages(std::as_bytes(std::span(content))));
  CHECK_FALSE(f.release_pages({all.data() + 10, all.size()}));  // runs past the end
  CHECK(f.release_pages(all.subspan(all.size(), 0)));            // empty, at the end
}

TEST_CASE("SafeTensorsFile reads F32, F16 and BF16 tensors and metadata") {
  TempDir dir;
  // Data section: a (F32, [2, 3], bytes 0..24), b (BF16, [2], 24..28), c (F16, [2], 28..32),
  // e (F32, [0, 5], empty, at 32).
  std::string data = floats_bytes({0, 1, 2, 3, 4, 5});
  const std::uint16_t halves[] = {0x3FC0 /* bf16 1.5 */, 0xC000 /* bf16 -2 */, 0x3C00 /* f16 1 */,
                                  0xC500 /* f16 -5 */};
  data.append(reinterpret_cast<const char*>(halves), sizeof halves);
  const std::string header = R"({"__metadata__":{"format":"pt"},)"
                             R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                             R"("c":{"dtype":"F16","shape":[2],"data_offsets":[28,32]},)"
                             R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[24,28]},)"
                             R"("e":{"dtype":"F32","shape":[0,5],"data_offsets":[32,32]}})";
  const fs::path p = dir.path / "good.safetensors";
  write_file(p, safetensors_bytes(header, data));

  const SafeTensorsFile f = SafeTensorsFile::open(p);
  REQUIRE(f.tensors().size() == 4);
  CHECK(f.tensors()[0].name == "a");  // sorted by name
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.find("zz") == nullptr);

  const calm::io::TensorView* a = f.find("a");
  REQUIRE(a != nullptr);
  CHECK(a->dtype == calm::DType::f32);
  CHECK(a->shape == std::vector<std::size_t>{2, 3});
  CHECK(a->numel() == 6);
  CHECK(a->nbytes == 24);
  CHECK(a->file == p);
  const float* av = a->as<float>();
  for (int i = 0; i < 6; ++i) CHECK(av[i] == static_cast<float>(i));

  const calm::io::TensorView* b = f.find("b");
  REQUIRE(b != nullptr);
  CHECK(calm::to_float(b->as<calm::bf16>()[0]) == 1.5f);
  CHECK(calm::to_float(b->as<calm::bf16>()[1]) == -2.0f);
  const calm::io::TensorView* c = f.find("c");
  REQUIRE(c != nullptr);
  CHECK(calm::to_float(c->as<calm::f16>()[0]) == 1.0f);
  CHECK(calm::to_float(c->as<calm::f16>()[1]) == -5.0f);
  const calm::io::TensorView* e = f.find("e");
  REQUIRE(e != nullptr);
  CHECK(e->numel() == 0);
  CHECK(e->nbytes == 0);

  // Reading with the wrong type names the tensor, the file and both dtypes.
  CHECK_ERROR_NAMES(a->as<calm::bf16>(), "'a'", p.string(), "F32", "BF16");
  CHECK_ERROR_NAMES(b->as<float>(), "'b'", p.string(), "BF16", "F32");
}

TEST_CASE("SafeTensorsFile: a scalar has shape [] and one element, an empty header is allowed") {
  TempDir dir;
  const fs::path p = one_tensor_file(dir, R"({"dtype":"F32","shape":[],"data_offsets":[0,4]})",
                                     floats_bytes({7.0f}), "scalar.safetensors");
  const SafeTensorsFile f = SafeTensorsFile::open(p);
  REQUIRE(f.find("w") != nullptr);
  CHECK(f.find("w")->numel() == 1);
  CHECK(f.find("w")->as<float>()[0] == 7.0f);

  const fs::path empty = dir.path / "none.safetensors";
  write_file(empty, safetensors_bytes("{}", ""));
  CHECK(SafeTensorsFile::open(empty).tensors().empty());
}

TEST_CASE("SafeTensorsFile refuses misaligned data when read as a wider type") {
  TempDir dir;
  // Unpadded header of odd length: the data section starts at an odd address.
  std::string header = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  if ((8 + header.size()) % 2 == 0) header += ' ';
  const fs::path p = dir.path / "odd.safetensors";
  write_file(p, calm::test::unpadded_safetensors_bytes(header, floats_bytes({1.0f})));
  const SafeTensorsFile f = SafeTensorsFile::open(p);
  CHECK_ERROR_NAMES(f.find("w")->as<float>(), "'w'", p.string(), "aligned");
}

TEST_CASE("SafeTensorsFile: bad framing names the file") {
  TempDir dir;
  const fs::path p = dir.path / "frame.safetensors";

  write_file(p, "12345");
  CHECK_ERROR_NAMES(SafeTensorsFile::open(p), p.string(), "too short");

  write_file(p, le64(1000) + "{}");
  CHECK_ERROR_NAMES(SafeTensorsFile::open(p), p.string(), "header length 1000");

  write_file(p, le64(~std::uint64_t{0}) + "{}");  // must not wrap around
  CHECK_ERROR_NAMES(SafeTensorsFile::open(p), p.string(), "header length");

  write_file(p, safetensors_bytes("{\"w\": [1,", ""));
  CHECK_ERROR_NAMES(SafeTensorsFile::open(p), p.string(), "not valid JSON");

  write_file(p, le64(0));
  CHECK_ERROR_NAMES(SafeTensorsFile::open(p), p.string(), "not valid JSON");

  write_file(p, safetensors_bytes("[1, 2]", ""));
  CHECK_ERROR_NAMES(SafeTensorsFile::open(p), p.string(), "not a JSON object", "array");

  write_file(p, safetensors_bytes(R"({"__metadata__": [1]})", ""));
  CHECK_ERROR_NAMES(SafeTensorsFile::open(p), p.string(), "__metadata__");
  write_file(p, safetensors_bytes(R"({"__metadata__": {"k": 3}})", ""));
  CHECK_ERROR_NAMES(SafeTensorsFile::open(p), p.string(), "__metadata__", "'k'");

  // A tensor listed twice would otherwise be silently replaced by the last entry.
  write_file(p, safetensors_bytes(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                  R"("w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                  floats_bytes({1})));
  CHECK_ERROR_NAMES(SafeTensorsFile::open(p), p.string(), "'w' twice");
}

TEST_CASE("SafeTensorsFile: bad tensor entries name the file and the tensor") {
  TempDir dir;
  const std::string four = floats_bytes({1});
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  const auto open_entry = [&](const std::string& entry, std::string_view data = "") {
    const fs::path p = dir.path / "entry.safetensors";
    write_file(p, safetensors_bytes("{\"" + name + "\":" + entry + "}", data));
    return SafeTensorsFile::open(p);
  };
  const std::string file = (dir.path / "entry.safetensors").string();

  CHECK_ERROR_NAMES(open_entry("5"), file, name, "not an object");
  CHECK_ERROR_NAMES(open_entry(R"({"shape":[1],"data_offsets":[0,4]})", four), file, name,
                    "'dtype'");
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":"F32","data_offsets":[0,4]})", four), file, name,
                    "'shape'");
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":"F32","shape":[1]})", four), file, name,
                    "'data_offsets'");
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1})", four),
                    file, name, "unknown key 'x'");
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":32,"shape":[1],"data_offsets":[0,4]})", four), file,
                    name, "dtype is not a string");
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":"I64","shape":[1],"data_offsets":[0,8]})", four + four),
                    file, name, "unsupported dtype 'I64'");
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":"F32","shape":"1","data_offsets":[0,4]})", four), file,
                    name, "shape is not an array");
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":"F32","shape":[2,-1],"data_offsets":[0,4]})", four),
                    file, name, "shape[1]", "-1");
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":"F32","shape":[1.5],"data_offsets":[0,4]})", four), file,
                    name, "shape[0]");
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,8]})", four), file,
                    name, "data_offsets must be [begin, end]");
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,"4"]})", four), file,
                    name, "data_offsets[1]");
  // shape product * dtype size must equal end - begin.
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})", four), file,
                    name, "needs 8 bytes", "hold 4");
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":"BF16","shape":[1],"data_offsets":[0,4]})", four), file,
                    name, "needs 2 bytes");
  // 2^32 * 2^32 wraps to 0 in 64 bits: must be caught, not accepted as an empty tensor.
  CHECK_ERROR_NAMES(
      open_entry(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]})"), file,
      name, "overflows");
  CHECK_ERROR_NAMES(
      open_entry(R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]})"), file,
      name, "overflows");
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":"F32","shape":[1],"data_offsets":[4,0]})", four), file,
                    name, "begin after");
  CHECK_ERROR_NAMES(open_entry(R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})", four), file,
                    name, "run past the data section");
  CHECK_ERROR_NAMES(
      open_entry(R"({"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,0]})", four),
      file, name);
}

TEST_CASE("SafeTensorsFile: tensors must tile the data section") {
  TempDir dir;
  const fs::path p = dir.path / "tile.safetensors";
  const std::string eight = floats_bytes({1, 2});

  write_file(p, safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                  R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                  eight));
  CHECK_ERROR_NAMES(SafeTensorsFile::open(p), p.string(), "'b'", "overlap", "'a'");

  write_file(p,
             safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight));
  CHECK_ERROR_NAMES(SafeTensorsFile::open(p), p.string(), "'a'", "[0, 4)", "no tensor");

  write_file(p,
             safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight));
  CHECK_ERROR_NAMES(SafeTensorsFile::open(p), p.string(), "trailing");
}

namespace {

// Writes a shard holding F32 tensors named `names`, tensor k filled with base + k.
void write_shard(const fs::path& p, const std::vector<std::string>& names, float base) {
  std::string header = "{";
  std::string data;
  for (std::size_t k = 0; k < names.size(); ++k) {
    if (k > 0) header += ",";
    header += "\"" + names[k] + "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[" +
              std::to_string(8 * k) + "," + std::to_string(8 * k + 8) + "]}";
    const float v = base + static_cast<float>(k);
    data += floats_bytes({v, v});
  }
  write_file(p, safetensors_bytes(header + "}", data));
}

}  // namespace

TEST_CASE("Checkpoint: single file, lookups and shape checks") {
  TempDir dir;
  write_shard(dir.path / "model.safetensors", {"model.norm.weight", "lm_head.weight"}, 10);
  Checkpoint ck = Checkpoint::open(dir.path);
  CHECK(ck.contains("model.norm.weight"));
  CHECK_FALSE(ck.contains("model.embed_tokens.weight"));
  CHECK(ck.get("lm_head.weight").as<float>()[0] == 11.0f);  // second tensor: base + 1
  CHECK(ck.get("model.norm.weight", {2}).as<float>()[1] == 10.0f);
  CHECK(ck.names().size() == 2);

  CHECK_ERROR_NAMES(ck.get("model.embed_tokens.weight"),
                    "missing tensor 'model.embed_tokens.weight'", dir.path.string());
  CHECK_ERROR_NAMES(ck.get("model.norm.weight", {2, 4}), "'model.norm.weight'",
                    (dir.path / "model.safetensors").string(), "shape [2]", "expected [2, 4]");

  // Moving keeps the views valid (they point into the mappings, not into the object).
  const Checkpoint moved = std::move(ck);
  CHECK(moved.get("lm_head.weight").as<float>()[1] == 11.0f);
}

TEST_CASE("Checkpoint: directory errors") {
  TempDir dir;
  CHECK_ERROR_NAMES(Checkpoint::open(dir.path / "nope"), "nope", "not a directory");
  CHECK_ERROR_NAMES(Checkpoint::open(dir.path), dir.path.string(), "no model.safetensors");
  write_shard(dir.path / "model.safetensors", {"a"}, 0);
  write_file(dir.path / "model.safetensors.index.json",
             R"({"weight_map": {"a": "model.safetensors"}})");
  CHECK_ERROR_NAMES(Checkpoint::open(dir.path), dir.path.string(), "both");
  fs::remove(dir.path / "model.safetensors.index.json");
  write_file(dir.path / "model.safetensors", "garbage!garbage");
  CHECK_ERROR_NAMES(Checkpoint::open(dir.path), (dir.path / "model.safetensors").string());
}

TEST_CASE("Checkpoint: sharded") {
  TempDir dir;
  const fs::path index = dir.path / "model.safetensors.index.json";
  const std::string s1 = "model-00001-of-00002.safetensors";
  const std::string s2 = "model-00002-of-00002.safetensors";
  write_shard(dir.path / s1, {"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"}, 1);
  write_shard(dir.path / s2, {"model.norm.weight"}, 5);
  const std::string good_map = "{\"model.embed_tokens.weight\": \"" + s1 +
                               "\", \"model.layers.0.mlp.up_proj.weight\": \"" + s1 +
                               "\", \"model.norm.weight\": \"" + s2 + "\"}";
  write_file(index, R"({"metadata": {"total_size": 24}, "weight_map": )" + good_map + "}");

  SUBCASE("good") {
    const Checkpoint ck = Checkpoint::open(dir.path);
    CHECK(ck.files().size() == 2);
    CHECK(ck.get("model.embed_tokens.weight").as<float>()[0] == 1.0f);
    CHECK(ck.get("model.layers.0.mlp.up_proj.weight").as<float>()[0] == 2.0f);
    CHECK(ck.get("model.norm.weight").as<float>()[0] == 5.0f);
    CHECK(ck.get("model.norm.weight").file == dir.path / s2);
  }
  SUBCASE("shard names must stay inside the directory") {
    for (const std::string bad :
         {"../model.safetensors", "sub/x.safetensors", "/etc/passwd", "..", ""}) {
      write_file(index, "{\"weight_map\": {\"model.norm.weight\": \"" + bad + "\"}}");
      CHECK_ERROR_NAMES(Checkpoint::open(dir.path), index.string(), "'model.norm.weight'",
                        "'" + bad + "'");
    }
  }
  SUBCASE("a listed tensor missing from its shard") {
    write_file(index, "{\"weight_map\": {\"model.norm.weight\": \"" + s2 +
                          "\", \"model.layers.1.mlp.up_proj.weight\": \"" + s2 + "\"}}");
    // s1 is not referenced, so only s2 is opened.
    CHECK_ERROR_NAMES(Checkpoint::open(dir.path), "'model.layers.1.mlp.up_proj.weight'",
                      (dir.path / s2).string(), "missing");
  }
  SUBCASE("a tensor in two shards") {
    write_shard(dir.path / s2, {"model.norm.weight", "model.embed_tokens.weight"}, 5);
    CHECK_ERROR_NAMES(Checkpoint::open(dir.path), "'model.embed_tokens.weight'", "two shards",
                      (dir.path / s1).string(), (dir.path / s2).string());
  }
  SUBCASE("a tensor in a shard but not in the weight map") {
    write_shard(dir.path / s2, {"model.norm.weight", "lm_head.weight"}, 5);
    CHECK_ERROR_NAMES(Checkpoint::open(dir.path), "'lm_head.weight'", (dir.path / s2).string(),
                      "not listed");
  }
  SUBCASE("a missing shard file") {
    fs::remove(dir.path / s2);
    CHECK_ERROR_NAMES(Checkpoint::open(dir.path), (dir.path / s2).string());
  }
  SUBCASE("bad index files") {
    write_file(index, "{\"weight_map\": ");
    CHECK_ERROR_NAMES(Checkpoint::open(dir.path), index.string(), "not valid JSON");
    write_file(index, "{\"metadata\": {}}");
    CHECK_ERROR_NAMES(Checkpoint::open(dir.path), index.string(), "'weight_map'");
    write_file(index, "{\"weight_map\": [1]}");
    CHECK_ERROR_NAMES(Checkpoint::open(dir.path), index.string(), "weight_map is not an object");
    write_file(index, "{\"weight_map\": {\"model.norm.weight\": 2}}");
    CHECK_ERROR_NAMES(Checkpoint::open(dir.path), index.string(), "'model.norm.weight'",
                      "not a string");
    write_file(index, "{\"weight_map\": " + good_map + ", \"extra\": 1}");
    CHECK_ERROR_NAMES(Checkpoint::open(dir.path), index.string(), "unknown key 'extra'");
  }
}
