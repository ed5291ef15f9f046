// The progress line calm-calibrate and calm-eval draw on stderr while they decode.
#pragma once

#include <fmt/core.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

namespace calm::cli {

// A one-line progress bar with rate and ETA on stderr, redrawn at most 10 times a second. When
// stderr is not a terminal (a batch job's log) it prints a plain line every 30 s, and one summary
// line at finish().
class Progress {
 public:
  using Clock = std::chrono::steady_clock;

  Progress(std::string label, std::size_t total, std::string unit = "decodes")
      : label_(std::move(label)), unit_(std::move(unit)), total_(total),
        terminal_(::isatty(STDERR_FILENO) == 1), start_(Clock::now()), last_draw_(start_) {}

  void tick(std::size_t n = 1) {
    done_ += n;
    const auto now = Clock::now();
    if (terminal_ && (now - last_draw_ > std::chrono::milliseconds(100) || done_ == total_)) {
      draw(now);
      last_draw_ = now;
    } else if (!terminal_ && now - last_draw_ > std::chrono::seconds(30) && done_ < total_) {
      const double seconds = std::chrono::duration<double>(now - start_).count();
      const double rate = static_cast<double>(done_) / seconds;
      fmt::print(stderr, "{}: {}/{} {}, {:.2g}/s, ETA {:.0f} s\n", label_, done_, total_, unit_,
                 rate, static_cast<double>(total_ - done_) / rate);
      last_draw_ = now;
    }
  }

  void finish() {
    const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    if (terminal_) fmt::print(stderr, "\r\x1b[2K");
    fmt::print(stderr, "{}: {} {} in {:.1f} s\n", label_, done_, unit_, seconds);
  }

 private:
  void draw(Clock::time_point now) const {
    constexpr std::size_t kWidth = 30;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double share = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
    const auto filled = static_cast<std::size_t>(share * kWidth);
    const double rate = seconds > 0 ? static_cast<double>(done_) / seconds : 0.0;
    const double eta = rate > 0 ? static_cast<double>(total_ - std::min(done_, total_)) / rate : 0.0;
    fmt::print(stderr, "\r\x1b[2K{} [{}{}] {}/{} {}, {:.0f}/s, ETA {:.0f} s", label_,
               std::string(filled, '#'), std::string(kWidth - filled, '.'), done_, total_, unit_,
               rate, eta);
    std::fflush(stderr);
  }

  std::string label_, unit_;
  std::size_t total_ = 0, done_ = 0;
  bool terminal_ = false;
  Clock::time_point start_, last_draw_;
};

}  // namespace calm::cli
