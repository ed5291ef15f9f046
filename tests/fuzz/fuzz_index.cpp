// model.safetensors.index.json next to one valid shard: the weight_map's file names, nesting,
// duplicates and types.
#include <calm/io/safetensors.hpp>

#include <filesystem>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool shard = [] {  // the shard the seeds name, copied once
    std::filesystem::copy_file(
        std::filesystem::path(CALM_FIXTURES) / "tiny-mha-f16-sharded/model-00001-of-00002.safetensors",
        calm::fuzz::scratch() / "model-00001-of-00002.safetensors",
        std::filesystem::copy_options::overwrite_existing);
    return true;
  }();
  (void)shard;
  calm::fuzz::write_input(data, size, "model.safetensors.index.json");
  return calm::fuzz::refused_or_accepted(
      [&] { (void)calm::io::Checkpoint::open(calm::fuzz::scratch()); });
}
