// Helpers shared by the tests that run checkpoints: the committed fixture models, the relative
// error used with every stated tolerance, and a bitwise comparison of two sessions' caches.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <span>
#include <vector>

#include "test_support.hpp"

#include <calm/io/mapped_file.hpp>
#include <calm/io/safetensors.hpp>

#include <cstdint>
#include <cstring>
#include <string>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

namespace calm::test {

// A reference dump of tools/reference.py (tests/fixtures/README.md): the prompt and greedy
// tokens from its __metadata__, and rows of its (n_tokens, width) F32 tensors.
struct ReferenceDump {
  calm::io::SafeTensorsFile file;
  std::vector<int> prompt, greedy;

  explicit ReferenceDump(const std::filesystem::path& path)
      : file(calm::io::SafeTensorsFile::open(path)) {
    // The token lists live in the safetensors __metadata__ as JSON strings.
    calm::io::MappedFile raw(path);
    std::uint64_t n = 0;
    std::memcpy(&n, raw.bytes().data(), 8);
    const auto header = calm::test::parse_json(
        std::string(reinterpret_cast<const char*>(raw.bytes().data()) + 8, n));
    const auto& meta = header.at("__metadata__");
    prompt = calm::test::parse_json(meta.at("prompt_tokens").get<std::string>()).get<std::vector<int>>();
    greedy = calm::test::parse_json(meta.at("greedy_tokens").get<std::string>()).get<std::vector<int>>();
  }

  // Row t of a (n_tokens, width) F32 tensor.
  std::vector<float> row(const std::string& name, std::size_t t) const {
    const calm::io::TensorView* v = file.find(name);
    REQUIRE_MESSAGE(v != nullptr, "reference lacks " << name);
    const std::size_t width = v->shape.at(1);
    const float* p = v->as<float>() + t * width;
    return {p, p + width};
  }
};

// The bundled model (models/shakespeare-8l).
inline const std::filesystem::path kBundled = std::filesystem::path(CALM_MODELS) / "shakespeare-8l";

// The fixture checkpoints under tests/fixtures that come with a reference dump, sorted.
inline std::vector<std::filesystem::path> checkpoint_fixtures() {
  std::vector<std::filesystem::path> dirs;
  for (const auto& e : std::filesystem::directory_iterator(CALM_FIXTURES))
    if (std::filesystem::exists(e.path() / "config.json") &&
        std::filesystem::exists(e.path() / "reference.safetensors"))
      dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

// ||got - want|| / ||want|| in double.
inline double relative_error(std::span<const float> got, std::span<const float> want) {
  REQUIRE(got.size() == want.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Every K and V entry of the first `positions` positions (all of them by default), bit for bit.
template <class A, class B>
bool same_cache(const A& a, const B& b, std::size_t positions = 0) {
  if (positions == 0) {
    if (a.length() != b.length()) return false;
    positions = a.length();
  }
  for (std::size_t l = 0; l < a.num_layers(); ++l)
    for (std::size_t p = 0; p < positions; ++p) {
      const auto ka = a.k_at(l, p), kb = b.k_at(l, p), va = a.v_at(l, p), vb = b.v_at(l, p);
      if (!std::equal(ka.begin(), ka.end(), kb.begin()) ||
          !std::equal(va.begin(), va.end(), vb.begin()))
        return false;
    }
  return true;
}

}  // namespace calm::test
