// Lossless speculative decoding (calm::SpeculativeDecoder) against full decoding, side by side:
//  - the bundled model (trained to exit early), greedy, 1 thread: each iteration decodes the
//    test prompts with the speculative decoder and with the full model, alternating which goes
//    first, so machine noise hits both alike (the kit's early-vs-full comparison,
//    calm/benchmark/decode.hpp). Counters: wall_x (full time / speculative time, generation
//    only), acceptance, tokens_per_round, mean draft exit layer, draft% / verify% of the time,
//    and identical (1 when every token equalled the full model's: it must);
//  - n-gram drafts (calm::PromptLookup, Saxena 2023), alone and before the certified early exit,
//    on copy-heavy prompts (a test passage written twice: the model continues by copying it) and
//    on the ordinary test prompts: the same wall_x, plus ngram_acceptance;
//  - verification cost per token: one pass of all layers over n tokens with Products::matvec
//    (what verification runs) or Products::matmul, against one decode step, at the bundled
//    model's and TinyLlama-1.1B's shapes (random weights, the kit's fixtures);
//  - the bundled model's sibling (tools/train_sibling.sh; skipped when absent): static,
//    classifier and n-gram drafts, test prompts and copy-heavy passages, wall_x as above;
//  - a speculative round at Llama-3.2-1B's shape from its measured pieces: a drafted token (the
//    whole head or one over a sub-vocabulary), the verification of 6 drafts, the computed
//    speedup at LayerSkip's published acceptance.
#include "model_fixture.hpp"

#include <calm/calibrate/calibration_json.hpp>
#include <calm/calm.hpp>
#include <calm/io/tokenizer.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

namespace {

constexpr std::size_t kNewTokens = 48;
using calm::bench::kBundled;

const std::shared_ptr<const calm::LlamaModel>& bundled() {
  static const auto m = calm::LlamaModel::load(kBundled);
  return m;
}

// The first 16 test prompts of the bundled model, tokenized.
const std::vector<std::vector<int>>& bundled_prompts() {
  static const std::vector<std::vector<int>> prompts = calm::bench::bundled_test_prompts(16);
  return prompts;
}

// The first 16 test passages (prompt + reference) written `copies` times each that fit.
const std::vector<std::vector<int>>& copy_heavy_prompts(std::size_t copies) {
  static std::map<std::size_t, std::vector<std::vector<int>>> prompts;
  auto it = prompts.find(copies);
  if (it == prompts.end())
    it = prompts.emplace(copies, calm::bench::copy_heavy_prompts(
                                     kBundled / "data" / "test.jsonl",
                                     calm::Tokenizer::load(kBundled / "tokenizer.model"), 16,
                                     copies, kNewTokens, bundled()->max_context()))
             .first;
  return it->second;
}

// Range `arg` of a benchmark picks the prompts: c > 0 passages written c times (copy-heavy),
// 0 the test prompts as they are.
const std::vector<std::vector<int>>& prompts_arg(const benchmark::State& state, int arg) {
  return state.range(arg) ? copy_heavy_prompts(std::size_t(state.range(arg))) : bundled_prompts();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

template <class Spec>
void measure(benchmark::State& state, Spec& spec,
             const std::vector<std::vector<int>>& prompts = bundled_prompts(),
             std::size_t new_tokens = kNewTokens) {
  calm::SpeculationStats total;
  double draft_s = 0, verify_s = 0;
  bool identical = true;
  const calm::bench::DecodeTotals totals = calm::bench::early_vs_full(
      state, spec, prompts, {.new_tokens = new_tokens},
      [&](const calm::SpeculativeResult& s, const calm::GenerationResult& f) {
        identical = identical && s.tokens == f.tokens;
        total.rounds += s.speculation.rounds;
        total.drafted += s.speculation.drafted;
        total.accepted += s.speculation.accepted;
        total.draft_layers += s.speculation.draft_layers;
        total.lookup_drafted += s.speculation.lookup_drafted;
        total.lookup_accepted += s.speculation.lookup_accepted;
        draft_s += s.speculation.draft_seconds;
        verify_s += s.speculation.verify_seconds;
      });
  // Every token is the full model's (exit layer L): layer_x is 1, wall_over_layer is wall_x,
  // and the split of a speculative decode is draft% / verify%, not the decoder loop's.
  for (const char* c : {"avg_layers", "layer_x", "wall_over_layer", "layers%", "checks%",
                        "propagation%", "head%"})
    state.counters.erase(c);
  state.counters["acceptance"] = total.acceptance_rate();
  state.counters["tokens_per_round"] = total.tokens_per_round();
  state.counters["draft_exit"] = total.mean_draft_exit();
  if (total.lookup_drafted) {
    state.counters["ngram_drafted%"] = 100.0 * double(total.lookup_drafted) / double(total.drafted);
    state.counters["ngram_acceptance"] =
        double(total.lookup_accepted) / double(total.lookup_drafted);
  }
  state.counters["draft%"] = 100 * draft_s / totals.early_seconds;
  state.counters["verify%"] = 100 * verify_s / totals.early_seconds;
  state.counters["identical"] = identical ? 1 : 0;
}

// Args: static draft layer E, gamma, reuse (1/0).
void BM_SpecStatic(benchmark::State& state) {
  calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> spec(
      calm::LlamaSession(bundled()), {}, {std::size_t(state.range(0))}, {},
      {.max_draft = std::size_t(state.range(1)), .reuse_draft = state.range(2) != 0});
  measure(state, spec);
}

// Args: threshold lambda in percent, gamma (decaying schedule, tau 4; reuse on).
template <class Measure>
void BM_SpecThreshold(benchmark::State& state, Measure m) {
  calm::SpeculativeDecoder<calm::LlamaSession, Measure, calm::ConstantThreshold> spec(
      calm::LlamaSession(bundled()), m, {float(state.range(0)) / 100.0f}, {},
      {.max_draft = std::size_t(state.range(1))});
  measure(state, spec);
}

void BM_SpecClassifier(benchmark::State& state) {
  BM_SpecThreshold(state, calm::ExitClassifier::load(kBundled / "calm.safetensors",
                                                     bundled()->hidden_size()));
}

calm::PromptLookup lookup_args(const benchmark::State& state) {  // ranges 2 and 3
  return {.max_ngram = std::size_t(state.range(2)), .min_ngram = std::size_t(state.range(3))};
}

// n-gram drafts alone. Args: copies (0: ordinary prompts), gamma, longest and shortest n-gram.
void BM_SpecNgram(benchmark::State& state) {
  calm::PromptLookupDecoder<calm::LlamaSession> spec(
      calm::LlamaSession(bundled()), {}, {}, {}, {.max_draft = std::size_t(state.range(1))},
      lookup_args(state));
  measure(state, spec, prompts_arg(state, 0));
}

// The same at TinyLlama-1.1B's shape (random bf16 weights, 2.2 GB: memory-bound, where a pass
// over n tokens costs little more than one), on 2 synthetic passages of 48 tokens written twice
// (copies 2) or once (copies 1). A random model does not copy, but its greedy output soon
// repeats itself, which n-gram drafts predict. Args as BM_SpecNgram.
void BM_SpecNgramTinyLlama(benchmark::State& state) {
  static const auto model = calm::LlamaModel::load(
      calm::bench::random_checkpoint(calm::bench::kTinyLlama), {.max_context = 256});
  std::vector<std::vector<int>> prompts =
      calm::bench::synthetic_prompts(2, 48, model->vocab_size());
  for (auto& p : prompts) {
    const std::vector<int> passage = p;
    for (std::int64_t c = 1; c < state.range(0); ++c) p.insert(p.end(), passage.begin(), passage.end());
    p.insert(p.begin(), 1);  // BOS
  }
  calm::PromptLookupDecoder<calm::LlamaSession> spec(
      calm::LlamaSession(model), {}, {}, {}, {.max_draft = std::size_t(state.range(1))},
      lookup_args(state));
  measure(state, spec, prompts, 32);
}

// The certified policy next to the bundled model (what calm-generate uses with no flags:
// calm_calibration.json's classifier at its lambda*) drafting after n-gram drafts, or alone.
// Args: copies (0: ordinary prompts), gamma, longest n-gram (0: early-exit drafts alone), shortest.
void BM_SpecNgramThenCertifiedExit(benchmark::State& state) {
  const auto record =
      calm::calibrate::read_calibration_json(kBundled / calm::calibrate::kCalibrationFileName);
  calm::SpeculativeDecoder<calm::LlamaSession, calm::ExitClassifier, calm::ConstantThreshold,
                           calm::PromptLookup>
      spec(calm::LlamaSession(bundled()),
           calm::ExitClassifier::load(kBundled / "calm.safetensors", bundled()->hidden_size()),
           {float(record.result.lambda_star.value())}, {},
           {.max_draft = std::size_t(state.range(1))},
           lookup_args(state));
  measure(state, spec, prompts_arg(state, 0));
}

// calm::bench::verify_cost with range(1) choosing the products (1 = matvec, 0 = matmul).
void verify_cost(benchmark::State& state, const std::shared_ptr<const calm::LlamaModel>& model) {
  calm::bench::verify_cost(state, model,
                           state.range(1) ? calm::Products::matvec : calm::Products::matmul);
}

void BM_VerifyCostBundled(benchmark::State& state) { verify_cost(state, bundled()); }
void BM_VerifyCostTinyLlama(benchmark::State& state) {
  static const auto m = calm::LlamaModel::load(
      calm::bench::random_checkpoint(calm::bench::kTinyLlama), {.max_context = 256});
  verify_cost(state, m);
}
// The same on the bf16 dot product (WeightFormat::bf16_dot: activations rounded to bf16, one
// arithmetic for every n), each row bitwise the row alone (Products::matvec). Args: n, amx (1:
// AMX-BF16 tiles where the process may, 0: the vdpbf16ps chain).
void BM_VerifyCostTinyLlamaBf16Dot(benchmark::State& state) {
  static const auto m =
      calm::LlamaModel::load(calm::bench::random_checkpoint(calm::bench::kTinyLlama),
                             {.max_context = 256, .weights = calm::WeightFormat::bf16_dot});
  calm::bench::verify_cost_amx(state, m, calm::Products::matvec);
}

// The sibling (calm::bench::sibling_model(): tools/train_sibling.sh, 49 MB of bf16 weights):
// its model, its first 16 test prompts (c = 0) or passages written c times, its classifier.
struct Sibling {
  std::shared_ptr<const calm::LlamaModel> model;
  std::vector<std::vector<int>> test, copying;
  std::filesystem::path dir;
};
const Sibling* sibling() {
  static const std::unique_ptr<Sibling> s = []() -> std::unique_ptr<Sibling> {
    const std::filesystem::path dir = calm::bench::sibling_model();
    if (dir.empty()) return nullptr;
    auto s = std::make_unique<Sibling>();
    s->dir = dir;
    s->model = calm::LlamaModel::load(dir);
    const calm::Tokenizer tok = calm::Tokenizer::load_folder(dir);
    s->test = calm::bench::encode_prompt_file(dir / "data" / "test.jsonl", tok, 16, kNewTokens,
                                              s->model->max_context());
    s->copying = calm::bench::copy_heavy_prompts(dir / "data" / "test.jsonl", tok, 16, 2,
                                                 kNewTokens, s->model->max_context());
    return s;
  }();
  return s.get();
}
bool skip_without_sibling(benchmark::State& state) {
  if (sibling()) return false;
  state.SkipWithError("no sibling model: make it with tools/train_sibling.sh (or set CALM_SIBLING)");
  return true;
}

// Static drafts on the sibling. Args: copies (0: test prompts), E, gamma.
void BM_SiblingStatic(benchmark::State& state) {
  if (skip_without_sibling(state)) return;
  const Sibling& s = *sibling();
  calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> spec(
      calm::LlamaSession(s.model), {}, {std::size_t(state.range(1))}, {},
      {.max_draft = std::size_t(state.range(2))});
  measure(state, spec, state.range(0) ? s.copying : s.test);
}
// The sibling's classifier (calm-train-classifier next to it) drafting. Args: copies, lambda%,
// gamma.
void BM_SiblingClassifier(benchmark::State& state) {
  if (skip_without_sibling(state)) return;
  const Sibling& s = *sibling();
  if (!std::filesystem::exists(s.dir / "calm.safetensors")) {
    state.SkipWithError("the sibling has no calm.safetensors (calm-train-classifier)");
    return;
  }
  calm::SpeculativeDecoder<calm::LlamaSession, calm::ExitClassifier, calm::ConstantThreshold> spec(
      calm::LlamaSession(s.model),
      calm::ExitClassifier::load(s.dir / "calm.safetensors", s.model->hidden_size()),
      {float(state.range(1)) / 100.0f}, {}, {.max_draft = std::size_t(state.range(2))});
  measure(state, spec, state.range(0) ? s.copying : s.test);
}
// n-gram drafts on the sibling (3-grams, min 1 or 3). Args: copies, gamma, min n-gram.
void BM_SiblingNgram(benchmark::State& state) {
  if (skip_without_sibling(state)) return;
  const Sibling& s = *sibling();
  calm::PromptLookupDecoder<calm::LlamaSession> spec(
      calm::LlamaSession(s.model), {}, {}, {}, {.max_draft = std::size_t(state.range(1))},
      {.max_ngram = 3, .min_ngram = std::size_t(state.range(2))});
  measure(state, spec, state.range(0) ? s.copying : s.test);
}

// --- Adaptive γ (SpeculativeOptions::adaptive_gamma; DEL, 2025) against fixed γ and the full model.
// Each prompt is decoded by the full model, the speculative decoder with a fixed γ and the same
// drafts with γ chosen per round (up to 8), the order rotating from prompt to prompt, so that
// machine noise hits all three alike. One adaptive decoder serves all prompts (what it learns
// carries over, as in a long-running program). Counters: auto_x and fixed_x (full time ÷
// speculative time, generation only), auto_over_fixed (fixed time ÷ adaptive time), the
// acceptance and tokens per verification of each, gamma_mean (adaptive), identical (1: every token
// of both equalled the full model's).
// Args: model (0 the bundled model, 1 the sibling), copies (0: test prompts), the fixed γ, the
// cost model's verify_row in percent of a step, and the draft's parameter (static: E; classifier:
// λ in percent; n-gram: the shortest n-gram, the longest 3).
template <class MakeSpec>
void adaptive_vs_fixed(benchmark::State& state, const std::shared_ptr<const calm::LlamaModel>& model,
                       const std::vector<std::vector<int>>& prompts, MakeSpec make) {
  calm::SpeculativeOptions fixed_options{.max_draft = std::size_t(state.range(2))};
  calm::SpeculativeOptions auto_options{.max_draft = 8};
  auto_options.adaptive_gamma = true;
  auto_options.cost.verify_row = double(state.range(3)) / 100.0;
  auto fixed = make(fixed_options);
  auto adaptive = make(auto_options);
  calm::FullDecoder<calm::LlamaSession> full{calm::LlamaSession(model)};
  double full_s = 0, fixed_s = 0, auto_s = 0;
  calm::SpeculationStats fixed_stats, auto_stats;
  bool identical = true;
  std::size_t turn = 0;
  for (auto _ : state) {
    for (const std::vector<int>& prompt : prompts) {
      std::vector<int> f, a, b;
      const auto run_full = [&] {
        const auto r = full.generate(prompt, kNewTokens);
        full_s += r.report.generation_seconds;
        f = r.tokens;
      };
      const auto run_fixed = [&] {
        const auto r = fixed.generate(prompt, kNewTokens);
        fixed_s += r.report.generation_seconds;
        fixed_stats.add(r.speculation);
        a = r.tokens;
      };
      const auto run_auto = [&] {
        const auto r = adaptive.generate(prompt, kNewTokens);
        auto_s += r.report.generation_seconds;
        auto_stats.add(r.speculation);
        b = r.tokens;
      };
      switch (turn++ % 3) {
        case 0: run_full(), run_fixed(), run_auto(); break;
        case 1: run_fixed(), run_auto(), run_full(); break;
        default: run_auto(), run_full(), run_fixed(); break;
      }
      identical = identical && a == f && b == f;
    }
  }
  state.counters["auto_x"] = full_s / auto_s;
  state.counters["fixed_x"] = full_s / fixed_s;
  state.counters["auto_over_fixed"] = fixed_s / auto_s;
  state.counters["auto_acceptance"] = auto_stats.acceptance_rate();
  state.counters["fixed_acceptance"] = fixed_stats.acceptance_rate();
  state.counters["auto_tokens_per_round"] = auto_stats.tokens_per_round();
  state.counters["fixed_tokens_per_round"] = fixed_stats.tokens_per_round();
  state.counters["gamma_mean"] = auto_stats.mean_gamma();
  state.counters["identical"] = identical ? 1 : 0;
}

// The model and prompts of range(0) and range(1); null model: no sibling (skipped).
struct AdaptiveSetup {
  std::shared_ptr<const calm::LlamaModel> model;
  const std::vector<std::vector<int>>* prompts = nullptr;
  std::filesystem::path dir;
};
AdaptiveSetup adaptive_setup(benchmark::State& state);

void BM_AdaptiveStatic(benchmark::State& state) {
  const AdaptiveSetup a = adaptive_setup(state);
  if (!a.model) return;
  adaptive_vs_fixed(state, a.model, *a.prompts, [&](const calm::SpeculativeOptions& o) {
    return calm::SpeculativeDecoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit>(
        calm::LlamaSession(a.model), {}, {std::size_t(state.range(4))}, {}, o);
  });
}
void BM_AdaptiveClassifier(benchmark::State& state) {
  const AdaptiveSetup a = adaptive_setup(state);
  if (!a.model) return;
  const calm::ExitClassifier classifier =
      calm::ExitClassifier::load(a.dir / "calm.safetensors", a.model->hidden_size());
  adaptive_vs_fixed(state, a.model, *a.prompts, [&](const calm::SpeculativeOptions& o) {
    return calm::SpeculativeDecoder<calm::LlamaSession, calm::ExitClassifier,
                                    calm::ConstantThreshold>(
        calm::LlamaSession(a.model), classifier, {float(state.range(4)) / 100.0f}, {}, o);
  });
}
void BM_AdaptiveNgram(benchmark::State& state) {
  const AdaptiveSetup a = adaptive_setup(state);
  if (!a.model) return;
  adaptive_vs_fixed(state, a.model, *a.prompts, [&](const calm::SpeculativeOptions& o) {
    return calm::PromptLookupDecoder<calm::LlamaSession>(
        calm::LlamaSession(a.model), {}, {}, {}, o,
        {.max_ngram = 3, .min_ngram = std::size_t(state.range(4))});
  });
}

// One exact pass over n tokens on the sibling, as BM_VerifyCostBundled.
void BM_VerifyCostSibling(benchmark::State& state) {
  if (skip_without_sibling(state)) return;
  verify_cost(state, sibling()->model);
}

AdaptiveSetup adaptive_setup(benchmark::State& state) {
  if (state.range(0) == 0)
    return {bundled(), &prompts_arg(state, 1), kBundled};
  if (skip_without_sibling(state)) return {};
  const Sibling& s = *sibling();
  return {s.model, state.range(1) ? &s.copying : &s.test, s.dir};
}

// One speculative round at Llama-3.2-1B's shape, from its measured pieces (random bf16 weights:
// random drafts would all be rejected, so the round is computed, not run). Interleaved:
//   step    one full decode step: 16 layers and the whole head (the tied 128,256 x 2048
//           embedding, a fifth of the weights);
//   draft   a drafted token at layer 4 of 16: layers 1-4, the skipped layers' K/V
//           (propagation), the final norm and a head -- the whole head, or a sub-vocabulary head
//           over V' tokens (calm::SubVocabularyHead);
//   verify  the verification of 6 drafts: 7 rows, of which 6 start at layer 5 (the drafts' exact
//           layers reused) and one at the embedding, Products::matvec, and 7 whole heads.
// Counters: draft_over_step and verify_over_step, and the speedup they give with LayerSkip's
// published acceptance for layerskip-llama3.2-1B at layer 4 (0.8 of 6 drafts accepted):
// computed_x = (1 + 0.8 * 6) / (6 draft + verify), in steps; computed_x_iid reads 0.8 as each
// draft's chance given the ones before were accepted, (1 - 0.8^7) / 0.2 tokens per round.
// Args: V' (0: the whole head), dot (1: WeightFormat::bf16_dot).
void BM_RoundCostLlama32_1B(benchmark::State& state) {
  static std::shared_ptr<const calm::LlamaModel> models[2];
  const std::size_t sub = std::size_t(state.range(0));
  const bool dot = state.range(1) != 0;
  auto& model = models[dot ? 1 : 0];
  if (!model)
    model = calm::LlamaModel::load(calm::bench::random_checkpoint(calm::bench::kLlama32_1B),
                                   {.max_context = 256,
                                    .weights = dot ? calm::WeightFormat::bf16_dot
                                                   : calm::WeightFormat::file});
  constexpr std::size_t kDrafts = 6, kExit = 4;
  const std::size_t h = model->hidden_size(), L = model->num_layers(), n = kDrafts + 1;
  std::unique_ptr<calm::SubVocabularyHead> head;
  if (sub > 0) {  // which V' tokens does not change the cost: the first V' ids
    std::vector<std::uint32_t> tokens(sub);
    std::iota(tokens.begin(), tokens.end(), 0u);
    head = std::make_unique<calm::SubVocabularyHead>(model->weights().lm_head, tokens);
  }
  calm::Decoder<calm::LlamaSession, calm::NoConfidence, calm::StaticExit> draft(
      calm::LlamaSession(model), {}, {kExit});
  calm::FullDecoder<calm::LlamaSession> full{calm::LlamaSession(model)};
  std::vector<int> prompt(32);
  std::iota(prompt.begin(), prompt.end(), 3);
  draft.start(prompt, 1);
  full.start(prompt, 1);
  calm::LlamaSession& verifier = full.backend();
  std::vector<float> normed(h), logits(sub > 0 ? sub : model->vocab_size()), rows(n * h),
      verify_logits(n * model->vocab_size());
  double step_s = 0, draft_s = 0, verify_s = 0;
  calm::detail::StepTimes times;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    full.advance(7, 1, 2, times);
    step_s += seconds_since(t0);
    full.rewind(prompt.size());
    t0 = std::chrono::steady_clock::now();
    draft.advance(7, 1, 2, times, /*with_head=*/false);
    draft.backend().final_norm(draft.exit_state(), normed);
    if (head) head->apply(normed, logits, draft.backend().pool());
    else draft.backend().lm_head(normed, logits);
    benchmark::DoNotOptimize(logits.data());
    draft_s += seconds_since(t0);
    draft.rewind(prompt.size());
    // Rows 0..5 as the drafts left them (their layers 1-4 in the cache), row 6 from its
    // embedding through layers 1-4, then all 7 through layers 5-16.
    for (std::size_t j = 0; j < kDrafts; ++j)
      verifier.run_layers(0, kExit, std::span<float>(rows.data() + j * h, h), prompt.size() + j,
                          calm::Products::matvec);
    for (std::size_t t = 0; t < n; ++t) model->embed(int(5 + t), rows.data() + t * h);
    t0 = std::chrono::steady_clock::now();
    verifier.run_layers(0, kExit, std::span<float>(rows.data() + kDrafts * h, h),
                        prompt.size() + kDrafts, calm::Products::matvec);
    verifier.run_layers(kExit, L, rows, prompt.size(), calm::Products::matvec);
    verifier.exit_heads(rows, verify_logits);
    verify_s += seconds_since(t0);
    full.rewind(prompt.size());
  }
  const double d = draft_s / step_s, v = verify_s / step_s;
  state.counters["step_ms"] = 1e3 * step_s / double(state.iterations());
  state.counters["head_MB"] = double(head ? head->bytes() : model->weights().lm_head.bytes()) / 1e6;
  state.counters["draft_over_step"] = d;
  state.counters["verify_over_step"] = v;
  state.counters["computed_x"] = (1.0 + 0.8 * kDrafts) / (kDrafts * d + v);
  state.counters["computed_x_iid"] = (1.0 - std::pow(0.8, kDrafts + 1)) / 0.2 / (kDrafts * d + v);
}

}  // namespace

BENCHMARK(BM_SpecStatic)
    ->ArgsProduct({{2, 3, 4, 6}, {2, 4, 6}, {1}})
    ->Args({3, 4, 0})
    ->ArgNames({"E", "gamma", "reuse"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_SpecThreshold, softmax, calm::SoftmaxResponse{})
    ->ArgsProduct({{30, 50, 70, 90}, {4, 8}})
    ->ArgNames({"lambda%", "gamma"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_SpecThreshold, saturation, calm::HiddenSaturation{})
    ->ArgsProduct({{90, 95, 99}, {4, 8}})
    ->ArgNames({"lambda%", "gamma"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SpecClassifier)
    ->ArgsProduct({{50, 70, 90}, {4, 8}})
    ->ArgNames({"lambda%", "gamma"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SpecNgram)
    ->ArgsProduct({{2, 4, 0}, {2, 4, 8}, {3}, {1, 2, 3}})
    ->ArgNames({"copies", "gamma", "ngram", "min"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SpecNgramTinyLlama)
    ->ArgsProduct({{2, 1}, {8}, {3}, {1}})
    ->ArgNames({"copies", "gamma", "ngram", "min"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SpecNgramThenCertifiedExit)
    ->ArgsProduct({{2, 0}, {4, 8}, {3}, {1, 3}})
    ->Args({2, 4, 0, 1})->Args({0, 4, 0, 1})
    ->ArgNames({"copies", "gamma", "ngram", "min"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_VerifyCostBundled)
    ->ArgsProduct({{1, 2, 4, 8, 16}, {1, 0}})
    ->ArgNames({"n", "matvec"})
    ->Iterations(200)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_VerifyCostSibling)
    ->ArgsProduct({{1, 2, 4, 8}, {1}})
    ->ArgNames({"n", "matvec"})
    ->Iterations(100)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_VerifyCostTinyLlama)
    ->ArgsProduct({{1, 2, 4, 8, 16}, {1, 0}})
    ->ArgNames({"n", "matvec"})
    ->Iterations(5)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_VerifyCostTinyLlamaBf16Dot)
    ->ArgsProduct({{1, 2, 4, 8, 16}, {1, 0}, {1, 2}})
    ->ArgNames({"n", "amx", "threads"})
    ->Iterations(5)->Unit(benchmark::kMillisecond);

BENCHMARK(BM_SiblingStatic)
    ->ArgsProduct({{0, 2}, {2, 3, 4}, {4, 6}})
    ->ArgNames({"copies", "E", "gamma"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SiblingClassifier)
    ->ArgsProduct({{0, 2}, {80, 90}, {4, 6}})
    ->ArgNames({"copies", "lambda%", "gamma"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SiblingNgram)
    ->ArgsProduct({{2, 0}, {4, 8}, {1, 3}})
    ->ArgNames({"copies", "gamma", "min"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
// Fixed γ 1, 2, 4 and 6 (8 for n-gram drafts) each beside the adaptive decoder with verify_row
// 25% (the default); a few rows with 40% and 60% (costlier rows: shorter γ).
BENCHMARK(BM_AdaptiveClassifier)
    ->ArgsProduct({{0, 1}, {0, 2}, {1, 2, 4, 6}, {25}, {80}})
    ->Args({0, 0, 4, 60, 80})
    ->Args({1, 0, 2, 40, 80})
    ->ArgNames({"sibling", "copies", "gamma", "vrow%", "lambda%"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_AdaptiveStatic)
    ->ArgsProduct({{0, 1}, {0}, {1, 2, 4, 6}, {25}, {3}})
    ->Args({0, 0, 4, 60, 3})
    ->Args({1, 0, 2, 40, 3})
    ->ArgNames({"sibling", "copies", "gamma", "vrow%", "E"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_AdaptiveNgram)
    ->ArgsProduct({{0, 1}, {2, 0}, {1, 2, 4, 8}, {25}, {3}})
    ->Args({0, 2, 4, 60, 3})
    ->ArgsProduct({{0, 1}, {2, 0}, {2}, {40}, {3}})
    ->ArgNames({"sibling", "copies", "gamma", "vrow%", "min"})
    ->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_RoundCostLlama32_1B)
    ->ArgsProduct({{0, 32768, 16384, 8192}, {0}})
    ->Args({32768, 1})->Args({0, 1})
    ->ArgNames({"sub_vocab", "dot"})
    ->Iterations(12)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
