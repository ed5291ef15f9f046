// A Llama-2-7B-shaped checkpoint (13.5 GB of random bf16) loads and decodes on a 24 GB machine:
// copied into memory and quantized to q8_0, each holding its weights once (the file mapping's
// pages are dropped behind the copy), with finite logits after a prefill and a few steps.
#include <calm/backends/llama/llama.hpp>
#include <calm/benchmark/fixtures.hpp>
#include <calm/benchmark/memory.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

TEST_CASE("a 7B-shaped bf16 checkpoint loads and decodes, resident once") {
  const auto dir = calm::bench::random_checkpoint(calm::bench::kLlama2_7B);
  for (const calm::WeightFormat format : {calm::WeightFormat::file, calm::WeightFormat::q8_0}) {
    CAPTURE(int(format));
    const std::size_t before = calm::bench::resident_bytes();
    REQUIRE(calm::bench::reset_peak_resident());
    const auto model = calm::LlamaModel::load(dir, {.max_context = 256, .weights = format});
    const double resident = double(model->resident_weight_bytes());
    MESSAGE("weights in memory: " << resident / 1e9 << " GB, peak RSS growth while loading: "
                                  << (double(calm::bench::peak_resident_bytes()) - double(before)) / 1e9 << " GB");
    CHECK(double(calm::bench::peak_resident_bytes()) - double(before) <= 1.1 * resident);
    calm::LlamaSession session(model, {});
    std::vector<int> prompt(8);
    std::iota(prompt.begin(), prompt.end(), 3);
    std::vector<float> x(session.hidden_size()), logits(session.vocab_size());
    session.prefill(prompt, 0, x);
    for (std::size_t pos = prompt.size(); pos < prompt.size() + 4; ++pos) {
      session.embed(int(pos), x);
      for (std::size_t i = 0; i < session.num_layers(); ++i) session.run_layer(i, x, pos);
      session.exit_head(x, logits);
      CHECK(std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); }));
    }
  }
}
