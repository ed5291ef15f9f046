// calm_calibration.json: the record, its policy (measure, schedule, parameters) and results.
#include <calm/calibrate/calibration_json.hpp>
#include <calm/policy_registry.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = calm::fuzz::write_input(data, size, "calm_calibration.json");
  return calm::fuzz::refused_or_accepted(
      [&] { (void)calm::calibrate::read_calibration_json(path); });
}
