// calm::Error: the one exception type calm throws for bad input.
// Every message names what is wrong and where (file, tensor, key, flag).
#pragma once

#include <stdexcept>
#include <string>

namespace calm {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace calm
