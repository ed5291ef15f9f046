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
if [[ ! -f "$model/model.safetensors" ]]; then
  echo "calm: bundled model missing at $model" >&2
  exit 1
fi
prompt="ROMEO:"
args=("$@")
for a in "${args[@]}"; do [[ "$a" == "--prompt" ]] && prompt=""; done
if [[ -n "$prompt" ]]; then args=(--prompt "$prompt" "${args[@]}"); fi
# Early exit at the threshold certified by calm-calibrate (classifier measure, delta 0.2,
# epsilon 0.1), tokens coloured by exit layer, the full model run alongside for the speedup.
exec "$build/examples/calm-generate" --model "$model" --max-new-tokens 120 \
  --calibration "$model/calm_calibration.json" --show-exits --compare-full \
  --temperature 0.8 --top-k 40 --seed 7 "${args[@]}"
