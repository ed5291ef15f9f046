// The bf16-dot kernels Linear calls, compiled once for calm's own programs, tests and benchmarks
// (CALM_COMPILED_FORMATS; include/calm/formats/formats.hpp).
#include "calm/formats/formats.hpp"

template struct calm::formats::Kernels<calm::formats::BF16Dot>;
