// calm::calm without the tokenizer and without -march: decodes token ids with the full model.
#include <calm/calm.hpp>

#include <cstdio>
#include <vector>

static_assert(CALM_VERSION >= 200, "calm/version.hpp");

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const auto model = calm::LlamaModel::load(argv[1]);
  calm::FullDecoder<calm::LlamaSession> decoder{calm::LlamaSession(model)};
  const auto result = decoder.generate(std::vector<int>{1, 17, 42}, 5);
  std::printf("generated %zu tokens\n", result.tokens.size());
}
