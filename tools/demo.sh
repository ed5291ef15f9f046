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
for a in "${args[@]}"; do
  [[ "$a" == "--prompt" ]] && prompt=""
done
if [[ -n "$prompt" ]]; then args=(--prompt "$prompt" "${args[@]}"); fi
# Early exit at the threshold certified by calm-calibrate (models/shakespeare-8l/README.md and
# docs/calibration.md say which measure, schedule, delta and epsilon), decoded as it was
# certified: calm-generate takes the decoding settings the certificate records (greedy, its
# number of new tokens) for every flag not given, and refuses settings it does not cover (say
# --temperature 0.8) unless --allow-uncertified. Tokens are coloured by exit layer; the full
# model runs alongside for the speedup.
exec "$build/examples/calm-generate" --model "$model" --calibration "$certificate" \
  --show-exits --compare-full "${args[@]}"
