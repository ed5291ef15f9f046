// calm-serve: a completion's text as it grows, cut before the first stop string. Text that could
// still become the start of a stop string is held back, so a streamed client never receives the
// first characters of a stop string that the next token completes.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace calm::serve {

class StopScanner {
 public:
  explicit StopScanner(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Appends `text`; returns what may be sent now. Once a stop string is found, stopped() is true,
  // the text before it is returned and everything after it is dropped.
  std::string feed(std::string_view text) {
    if (stopped_) return {};
    held_ += text;
    std::size_t cut = std::string::npos;
    for (const std::string& s : stops_) cut = std::min(cut, held_.find(s));
    if (cut != std::string::npos) {
      stopped_ = true;
      std::string out = held_.substr(0, cut);
      held_.clear();
      return out;
    }
    // The longest end of the held text that begins some stop string stays held.
    std::size_t hold = 0;
    for (const std::string& s : stops_)
      for (std::size_t k = std::min(s.size() - 1, held_.size()); k > hold; --k)
        if (std::string_view(held_).substr(held_.size() - k) == std::string_view(s).substr(0, k)) {
          hold = k;
          break;
        }
    std::string out = held_.substr(0, held_.size() - hold);
    held_.erase(0, held_.size() - hold);
    return out;
  }
  // The end of the completion without a stop string: what was held back is sent.
  std::string finish() { return std::exchange(held_, std::string()); }
  bool stopped() const noexcept { return stopped_; }

 private:
  std::vector<std::string> stops_;  // non-empty strings
  std::string held_;
  bool stopped_ = false;
};

}  // namespace calm::serve
