// calm-bench-custom-measure: a confidence measure of your own (the entropy measure of
// calm-custom-measure, entropy_measure.hpp) benchmarked with calm's benchmark kit against calm's
// softmax response and exit classifier, on a trained early-exit model (default: the bundled
// models/shakespeare-8l), 1 thread:
//   check/<measure>              one check next to one layer: check_ns, layer_ns, check_over_layer
//   decode/<measure>/lambda%:<λ> early vs full decodes of the model's test prompts, interleaved:
//                                avg_layers, layer_x, wall_x, wall_over_layer, the time split
//   calm-bench-custom-measure [MODEL_DIR] [--benchmark_filter=decode ...]
#include <calm/benchmark.hpp>
#include <calm/calm.hpp>
#include <calm/io/tokenizer.hpp>

#include <benchmark/benchmark.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "entropy_measure.hpp"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);  // takes the --benchmark_* flags out of argv
#ifdef CALM_BUNDLED_MODEL
  const std::filesystem::path dir = argc > 1 ? argv[1] : CALM_BUNDLED_MODEL;
#else
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [--benchmark_* flags]\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
#endif
  const auto model = calm::LlamaModel::load(dir);
  const auto tokenizer = calm::Tokenizer::load_folder(dir);
  const auto prompts = calm::bench::encode_prompt_file(dir / "data" / "test.jsonl", tokenizer,
                                                       8, 32, model->max_context());
  const auto classifier = calm::ExitClassifier::load(dir / "calm.safetensors",
                                                     model->hidden_size());

  // The price of an exit point: the entropy check, then calm's measures at the same model.
  calm::bench::register_check_costs("check", model, EntropyConfidence{});

  // What each measure saves, in layers and in time, with a decaying threshold from lambda.
  const auto decode = [&](auto measure, int lambda_percent) {
    using Measure = decltype(measure);
    calm::bench::register_early_vs_full(
        "decode/" + calm::bench::measure_name(measure) + "/lambda%:" +
            std::to_string(lambda_percent),
        [=] {
          return calm::Decoder<calm::LlamaSession, Measure, calm::DecayingThreshold>(
              calm::LlamaSession(model), measure,
              {.lambda = float(lambda_percent) / 100.0f, .tau = 4.0f});
        },
        prompts);
  };
  for (const int lambda : {90, 80, 60}) {
    decode(EntropyConfidence{}, lambda);
    decode(calm::SoftmaxResponse{}, lambda);
    decode(classifier, lambda);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
