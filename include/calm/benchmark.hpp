// calm::benchmark — the benchmark kit (an optional part of calm, on Google Benchmark): measure a
// policy of your own the way calm measures its own.
//   calm/benchmark/bandwidth.hpp     the machine's limits in the same run: triad and read-only
//                                    bandwidth for n threads, the bound of a model's bytes/token
//   calm/benchmark/fixtures.hpp      random checkpoints at named real shapes, prompt files
//   calm/benchmark/measure_cost.hpp  one confidence check next to one layer of the same model
//   calm/benchmark/decode.hpp        early vs full decodes, interleaved: layers and time saved
//   calm/benchmark/memory.hpp        resident memory now and at its peak (what a load costs)
// CMake: find_package(calm COMPONENTS benchmark), link calm::benchmark (calm::calm alone does
// not need Google Benchmark). Everything is in namespace calm::bench.
#pragma once

#include "calm/benchmark/bandwidth.hpp"
#include "calm/benchmark/decode.hpp"
#include "calm/benchmark/fixtures.hpp"
#include "calm/benchmark/measure_cost.hpp"
#include "calm/benchmark/memory.hpp"
