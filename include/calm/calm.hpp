// Everything of calm::calm in one include: the Llama backend, every decoding strategy (one
// sequence, or many batched), the
// shipped confidence measures and schedules, sampling and calibration. The sentencepiece
// tokenizer (calm::tokenizer) is separate: <calm/io/tokenizer.hpp>.
#pragma once

#include "calm/version.hpp"

#include "calm/backends/llama/llama.hpp"
#include "calm/calibrate/calibration_json.hpp"
#include "calm/calibrate/distances.hpp"
#include "calm/calibrate/learn_then_test.hpp"
#include "calm/calibrate/pvalues.hpp"
#include "calm/concepts.hpp"
#include "calm/confidence/candidate_softmax.hpp"
#include "calm/confidence/exit_classifier.hpp"
#include "calm/confidence/hidden_saturation.hpp"
#include "calm/confidence/none.hpp"
#include "calm/confidence/softmax_response.hpp"
#include "calm/decoder.hpp"
#include "calm/decoding/batch.hpp"
#include "calm/drafts/prompt_lookup.hpp"
#include "calm/drafts/sub_vocabulary.hpp"
#include "calm/io/token_frequencies.hpp"
#include "calm/report.hpp"
#include "calm/sampling/sampler.hpp"
#include "calm/schedule/constant.hpp"
#include "calm/schedule/decaying.hpp"
#include "calm/schedule/local_oracle.hpp"
#include "calm/schedule/never.hpp"
#include "calm/schedule/static_exit.hpp"
