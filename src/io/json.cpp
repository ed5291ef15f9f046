// The strict JSON reader's body, compiled once for calm's own programs, tests and benchmarks
// (CALM_COMPILED; include/calm/core/compiled.hpp).
#define CALM_COMPILE_IO_JSON
#include "calm/io/json.hpp"
