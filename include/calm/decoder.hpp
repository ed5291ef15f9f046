// calm::Decoder<Backend, Confidence, Schedule>: early-exit generation composed at compile time
// from a backend (calm::LlamaSession), a confidence measure and an exit schedule. Each decoding
// mode is its own strategy (a constrained specialisation, see calm/decoding/common.hpp):
//   Decoder<B, C, ConstantThreshold | DecayingThreshold>  CALM  (calm/decoding/early_exit.hpp)
//   Decoder<B, NoConfidence, Never | StaticExit>           fixed exits (calm/decoding/fixed_exit.hpp)
//   Decoder<B, NoConfidence, LocalOracle>                  analysis (calm/decoding/oracle.hpp)
// and, lossless, SpeculativeDecoder<B, C, S, TokenDrafts>: n-gram lookups (calm::PromptLookup)
// and/or the early-exit decoder draft, the full model verifies (calm/decoding/speculative.hpp).
#pragma once

#include "calm/confidence/none.hpp"
#include "calm/decoding/common.hpp"
#include "calm/decoding/early_exit.hpp"
#include "calm/decoding/fixed_exit.hpp"
#include "calm/decoding/oracle.hpp"
#include "calm/decoding/speculative.hpp"
#include "calm/schedule/never.hpp"

namespace calm {

// The full model, token by token, through the same loop as the early-exit strategies.
template <class Backend>
using FullDecoder = Decoder<Backend, NoConfidence, Never>;

}  // namespace calm
