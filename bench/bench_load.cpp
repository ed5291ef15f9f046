// Loading a checkpoint: wall time and resident memory. TinyLlama-1.1B's shape with random bf16
// weights (2.2 GB, the kit's fixture; the file is read once before timing, so the page cache is
// warm and the figure is calm's own work, not the disk's).
//   load_s                 seconds per load (LlamaModel::load: parse, check, copy or quantize)
//   peak_over_resident     peak RSS growth during the load ÷ the bytes the model keeps resident
//                          (its weights in memory: the copy, the q8_0 arena, or the mapping)
//   after_over_resident    RSS growth that remains once loaded ÷ the same
//   read_GB/s              file bytes ÷ load_s, next to read_bandwidth_GB/s (one thread reading
//                          memory, measured in this run)
// Args: weights (0 = the file mapping in place, 1 = copied to huge-page memory, 2 = q8_0).
#include <calm/backends/llama/llama.hpp>
#include <calm/benchmark.hpp>

#include <benchmark/benchmark.h>

#include <chrono>

namespace {

void BM_Load(benchmark::State& state) {
  const auto dir = calm::bench::random_checkpoint(calm::bench::kTinyLlama);
  const auto mode = state.range(0);
  const calm::LlamaOptions opts{.max_context = 256,
                                .copy_weights = mode != 0,
                                .weights = mode == 2 ? calm::WeightFormat::q8_0
                                                     : calm::WeightFormat::file};
  const double file_bytes = double(std::filesystem::file_size(dir / "model.safetensors"));
  {  // reads the whole file once: the page cache is warm for every mode
    auto warm = calm::LlamaModel::load(
        dir, {.max_context = 256, .copy_weights = false, .check_all_weights = true});
  }
  const double read_bw = calm::bench::measure_read_bandwidth(1);
  double seconds = 0, peak = 0, after = 0, resident = 0;
  bool have_peak = true;
  for (auto _ : state) {
    const std::size_t before = calm::bench::resident_bytes();
    have_peak = calm::bench::reset_peak_resident() && have_peak;
    const auto t0 = std::chrono::steady_clock::now();
    auto model = calm::LlamaModel::load(dir, opts);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // What the model keeps resident: its arena, or (in place) the mapped file it decodes from.
    resident = mode == 0 ? file_bytes : double(model->resident_weight_bytes());
    peak = std::max(peak, double(calm::bench::peak_resident_bytes()) - double(before));
    after = std::max(after, double(calm::bench::resident_bytes()) - double(before));
    benchmark::DoNotOptimize(model.get());
  }
  const double n = double(state.iterations());
  state.counters["load_s"] = seconds / n;
  if (have_peak) state.counters["peak_over_resident"] = peak / resident;
  state.counters["after_over_resident"] = after / resident;
  state.counters["read_GB/s"] = file_bytes / (seconds / n) / 1e9;
  state.counters["read_bandwidth_GB/s"] = read_bw / 1e9;
}

BENCHMARK(BM_Load)->Arg(0)->Arg(1)->Arg(2)->ArgName("weights")->Iterations(3)
    ->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
