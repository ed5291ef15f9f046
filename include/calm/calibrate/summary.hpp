// The text tables calm-calibrate and calm-eval print after their decodes: what each tested
// threshold cost and certified. Plain strings (calm::calm does not depend on fmt), tested column
// by column through the programs' output (tests/programs).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "calm/calibrate/learn_then_test.hpp"
#include "calm/calibrate/validation.hpp"
#include "calm/core/printf.hpp"

namespace calm::calibrate {

// Learn-then-Test's walk, one line per grid threshold (mean loss, p-value, average layers of the
// decodes at it, passed or failed, or not tested), then lambda* and what it buys on these prompts
// against the full model, or why nothing was certified. cost_at(lambda): the totals of the decodes
// at a tested lambda; n prompts; L layers.
inline std::string calibration_summary(const CalibrationResult& result,
                                       const std::function<CostTotals(double)>& cost_at,
                                       const CostTotals& full, std::size_t L, double delta,
                                       double epsilon, std::size_t n) {
  std::string out = printf_string("%7s  %10s  %10s  %8s  \n", "lambda", "mean loss", "p-value",
                                  "layers");
  for (const GridRow& row : result.table) {
    const bool t = row.tested;
    const std::string loss = t ? printf_string("%.4f", *row.mean_loss) : "-",
                      p = t ? printf_string("%.3g", *row.p_value) : "-",
                      layers = t ? printf_string("%.2f", cost_at(row.lambda).average_layers()) : "-";
    out += printf_string("%7.4g  %10s  %10s  %8s  %s\n", row.lambda, loss.c_str(), p.c_str(),
                         layers.c_str(),
                         !t ? "not tested (fixed sequence stopped)"
                         : row.passed ? "passed" : "FAILED (p > epsilon)");
  }
  if (result.lambda_star) {
    const CostTotals e = cost_at(*result.lambda_star);
    const double avg = e.average_layers();
    out += printf_string("\nlambda* = %.4g: on these prompts, average layers %.2f of %zu (layer "
                         "speedup %.2fx), wall-clock speedup %.2fx against the full model\n",
                         *result.lambda_star, avg, L, avg > 0 ? static_cast<double>(L) / avg : 0.0,
                         wall_clock_speedup(full, e));
  } else {
    out += printf_string("\nno threshold could be certified at delta %g and epsilon %g with %zu "
                         "prompts: calm-generate --calibration runs the full model (try a larger "
                         "delta or more prompts)\n", delta, epsilon, n);
  }
  return out;
}

// Every measure at every grid threshold over all n prompts: mean loss, average layers and
// wall-clock speedup against the full model; tables[m][j] the decodes of measure m at grid[j].
inline std::string threshold_table(const std::vector<double>& grid,
                                   const std::vector<std::string>& measures,
                                   const std::vector<CostTable>& tables, const CostTotals& full,
                                   std::size_t n) {
  std::string out = printf_string("\nover all %zu prompts at each threshold: mean loss / average "
                                  "layers / wall-clock speedup\n%7s", n, "lambda");
  for (const std::string& m : measures) out += printf_string("  %24s", m.c_str());
  out += "\n";
  for (std::size_t j = 0; j < grid.size(); ++j) {
    out += printf_string("%7.4g", grid[j]);
    for (std::size_t m = 0; m < measures.size(); ++m) {
      const CostTotals t = total_cost(tables[m][j]);
      out += printf_string("  %8.4f %6.2f %7.2fx", t.mean_loss(), t.average_layers(),
                           wall_clock_speedup(full, t));
    }
    out += "\n";
  }
  return out;
}

}  // namespace calm::calibrate
