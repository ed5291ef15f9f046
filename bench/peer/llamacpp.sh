#!/usr/bin/env bash
# calm and llama.cpp side by side on the same random TinyLlama-shaped checkpoint, alternately, in
# one window (bench/README.md, "Side by side with llama.cpp"). Everything of llama.cpp's lives in
# a scratch folder outside the repository.
#   bench/peer/llamacpp.sh LLAMA_CPP_SOURCE SCRATCH [ROUNDS] [CALM_BUILD] [THREADS]
# LLAMA_CPP_SOURCE: a llama.cpp source tree (any recent snapshot; measured with c392e5094).
# SCRATCH: where llama.cpp is built and the GGUF files are written (~3.5 GB).
# CALM_BUILD: calm's build folder with bench_llama and bench_q8_0 (default: build).
# THREADS: threads for both engines (default 1; 2 needs an otherwise idle 2-core machine).
# Needs Debian's python3-torch, python3-numpy, python3-sentencepiece, python3-yaml, python3-tqdm.
set -euo pipefail
src=$(cd "$1" && pwd); scratch=$(mkdir -p "$2" && cd "$2" && pwd); rounds=${3:-2}
root=$(cd "$(dirname "$0")/../.." && pwd); calm_build=${4:-$root/build}; t=${5:-1}
peer=$scratch/llama.cpp
if [[ ! -x $peer/build/bin/llama-bench ]]; then
  rm -rf "$peer" && cp -r "$src" "$peer"
  cmake -S "$peer" -B "$peer/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build "$peer/build" -j"$(nproc)" --target llama-bench llama-quantize
fi
# The checkpoint calm's benchmarks use (written by the kit on first use).
ckpt=${CALM_BENCH_DIR:-/tmp/calm-bench}/tinyllama-bf16
[[ -f $ckpt/model.safetensors ]] || "$calm_build/bench/bench_llama" --benchmark_filter='BM_Decode/tinyllama/threads:1/copy:1' >/dev/null
if [[ ! -f $scratch/tinyllama-q8_0.gguf ]]; then
  hf=$scratch/tinyllama-hf && rm -rf "$hf" && mkdir -p "$hf"
  cp "$ckpt/config.json" "$hf/" && ln -s "$ckpt/model.safetensors" "$hf/model.safetensors"
  # A tokenizer for the converter (the weights are random; the converter pads the vocabulary
  # with [PADn] tokens up to config.json's vocab_size).
  cp "$root/models/shakespeare-8l/tokenizer.model" "$hf/"
  # Debian 12's torch 1.13 has no float8 dtypes, and the safetensors package is not packaged:
  # the converter gets getattr() for the former and calm's reader for the latter.
  sed -i -E 's/torch\.(float8_e4m3fn|float8_e5m2)\b/getattr(torch, "\1", None)/g' "$peer/convert_hf_to_gguf.py"
  CALM_TOOLS=$root/tools PYTHONPATH=$peer/gguf-py:$root/bench/peer/safetensors_shim \
    /usr/bin/python3 "$peer/convert_hf_to_gguf.py" "$hf" --no-lazy --outtype bf16 \
    --outfile "$scratch/tinyllama-bf16.gguf"
  "$peer/build/bin/llama-quantize" "$scratch/tinyllama-bf16.gguf" "$scratch/tinyllama-q8_0.gguf" q8_0
fi
[[ -f $scratch/tinyllama-q4_0.gguf ]] ||
  "$peer/build/bin/llama-quantize" "$scratch/tinyllama-bf16.gguf" "$scratch/tinyllama-q4_0.gguf" q4_0
# Alternately: llama.cpp bf16, calm bf16 and bf16_dot, llama.cpp q8_0, calm q8_0 and q8_0_dot,
# llama.cpp q4_0, calm q4_0 and q4_0_dot; THREADS threads; decode and a 64-token prefill.
for ((r = 1; r <= rounds; ++r)); do
  echo "== round $r, $t thread(s)"
  "$peer/build/bin/llama-bench" -m "$scratch/tinyllama-bf16.gguf" -t "$t" -p 64 -n 32 -r 3 | grep -E 'pp64|tg32'
  "$calm_build/bench/bench_llama" --benchmark_min_time=2 \
    --benchmark_filter="BM_(Decode/tinyllama(_bf16_dot)?/threads:$t/copy:1|Prefill/tinyllama(_bf16_dot)?/threads:$t)/" | grep BM_
  "$peer/build/bin/llama-bench" -m "$scratch/tinyllama-q8_0.gguf" -t "$t" -p 64 -n 32 -r 3 | grep -E 'pp64|tg32'
  "$calm_build/bench/bench_q8_0" --benchmark_filter="BM_(DecodeQ8|DecodeQ8DotVsQ8|PrefillQ8|PrefillQ8Dot)_TinyLlama/threads:$t/" | grep BM_
  "$peer/build/bin/llama-bench" -m "$scratch/tinyllama-q4_0.gguf" -t "$t" -p 64 -n 32 -r 3 | grep -E 'pp64|tg32'
  "$calm_build/bench/bench_q8_0" --benchmark_filter="BM_(DecodeQ4|DecodeQ4DotVsQ4|PrefillQ4|PrefillQ4Dot)_TinyLlama/threads:$t/" | grep BM_
done
