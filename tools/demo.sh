#!/usr/bin/env bash
# Generates text with the bundled Shakespeare model (installs missing Debian packages and builds
# calm-generate first). Extra arguments go to calm-generate, e.g. --prompt "ROMEO:" --show-exits
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/tools/install-deps.sh"
build="$root/build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target calm-generate
model="$root/models/shakespeare-8l"
certificate="$model/calm_calibration.json"
if [[ ! -f "$model/model.safetensors" ]]; then
  echo "calm: bundled model missing at $model" >&2
  exit 1
fi
prompt="ROMEO:"
args=("$@")
length=1
for a in "${args[@]}"; do
  [[ "$a" == "--prompt" ]] && prompt=""
  [[ "$a" == "--max-new-tokens" ]] && length=0
done
if [[ -n "$prompt" ]]; then args=(--prompt "$prompt" "${args[@]}"); fi
# Early exit at the threshold certified by calm-calibrate (classifier measure, delta 0.2,
# epsilon 0.1), decoded as it was certified: calm-generate takes the decoding settings the
# certificate records for every flag not given, and refuses settings it does not cover (say
# --temperature 0.8 on a greedy certificate) unless --allow-uncertified. Tokens are coloured by
# exit layer; the full model runs alongside for the speedup.
# A certificate of format version 1 (no "decoding" record, as the bundled one was first written)
# does not say its length: it was made with calm-calibrate's defaults, greedy and 32 new tokens
# (docs/calibration.md), so the demo generates 32.
if ((length)) && ! grep -q '"decoding"' "$certificate"; then
  args=(--max-new-tokens 32 "${args[@]}")
fi
exec "$build/examples/calm-generate" --model "$model" --calibration "$certificate" \
  --show-exits --compare-full "${args[@]}"
