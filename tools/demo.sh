#!/usr/bin/env bash
# What calm does, on the bundled Shakespeare model (installs missing Debian packages and builds
# calm-generate first):
#   1. a prompt of the model's own test split -- drawn like the prompts its certificate was
#      computed on (a few lines of dialogue ending in a speaker's name), so the certificate's
#      promise covers it -- decoded with the certified early exit, each token coloured by the
#      layer it left at;
#   2. the same prompt decoded losslessly (--speculative: drafted tokens checked by the full
#      model in one pass, so the text is the full model's, bit for bit);
#   3. the wall-clock speedup of the certified early exit over several test prompts, each run
#      next to the full model, as a median with its spread.
# Extra arguments go to step 1's calm-generate, e.g. --prompt-index 5, or --prompt "ROMEO:" (a
# prompt unlike the certificate's: calm says whether the certificate still covers the run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/install-deps.sh"
build="$root/build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target calm-generate
model="$root/models/shakespeare-8l"
certificate="$model/calm_calibration.json"
prompts="$model/data/test.jsonl"
generate="$build/examples/calm-generate"
for f in model.safetensors calm_calibration.json data/test.jsonl; do
  [[ -f "$model/$f" ]] || { echo "calm: the bundled model is missing $model/$f" >&2; exit 1; }
done
args=("$@")
has_prompt=0
for a in "${args[@]}"; do
  [[ "$a" == "--prompt" || "$a" == "--prompt-file" ]] && has_prompt=1
done
if ((!has_prompt)); then args=(--prompt-file "$prompts" "${args[@]}"); fi

echo
echo "== 1. Early exit at the certified threshold (test prompt, $(basename "$prompts"))"
# Decoded as it was certified: calm-generate takes the decoding settings the certificate
# records (greedy, its number of new tokens) for every flag not given, and refuses settings it
# does not cover unless --allow-uncertified (models/shakespeare-8l/README.md, docs/calibration.md).
"$generate" --model "$model" --calibration "$certificate" --show-exits "${args[@]}"

echo
echo "== 2. Lossless: the same prompt, speculative (the full model's text exactly)"
"$generate" --model "$model" --speculative --max-new-tokens 64 "${args[@]}"

echo
runs=16
echo "== 3. Wall-clock speedup of the certified early exit over $runs test prompts"
echo "   (each prompt decoded early-exit and then full, one after the other; the machine's noise"
echo "   moves any single run by tens of percent, so look at the median and the spread)"
results=$(for ((i = 0; i < runs; ++i)); do
  "$generate" --model "$model" --calibration "$certificate" --prompt-file "$prompts" \
    --prompt-index "$i" --compare-full 2>&1 >/dev/null |
    sed -n -e 's/.*average layers \([0-9.]*\) of \([0-9]*\).*/layers \1 \2/p' \
      -e 's/.*wall-clock speedup \([0-9.]*\)x.*/speedup \1/p'
done)
layers=$(awk '$1 == "layers" { sum += $2; n++; L = $3 } END { if (n) printf "%.2f of %d (layer speedup %.2fx)", sum / n, L, L / (sum / n) }' <<<"$results")
# mawk (Debian's awk) has no sort: the speedups come sorted.
awk '$1 == "speedup" { print $2 }' <<<"$results" | sort -n | awk -v layers="$layers" '
  { s[++n] = $1 }
  END {
    if (n == 0) { print "   no run reported a speedup" > "/dev/stderr"; exit 1 }
    median = n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2
    printf "   %d prompts: average layers %s; wall-clock speedup median %.2fx, range %.2fx..%.2fx\n",
      n, layers, median, s[1], s[n]
  }'
cat <<'EOF'
   What this means: the bundled model is 7 MB, so its weights sit in the CPU's cache and a
   skipped layer saves little next to each token's fixed costs (the head, sampling, the exit
   checks): expect ~1.1x here. Early exit and speculation pay where the weights stream from
   memory, as with real checkpoints (bench/README.md has the measured tables).
EOF
