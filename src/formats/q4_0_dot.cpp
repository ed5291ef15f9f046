// The q4_0-dot kernels Linear calls, compiled once for calm's own programs, tests and benchmarks
// (CALM_COMPILED_FORMATS; include/calm/formats/formats.hpp).
#include "calm/formats/formats.hpp"

template struct calm::formats::Kernels<calm::formats::Q4_0Dot>;
