// The batched decoder calm-serve runs (until it lands in the library: a stand-in of the same
// interface).
#pragma once
#if __has_include(<calm/decoding/batch.hpp>)
#include <calm/decoding/batch.hpp>
#else
#include "batch_standin.hpp"
#endif
