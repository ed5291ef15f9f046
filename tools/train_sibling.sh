#!/usr/bin/env bash
# The bundled model's larger sibling: the same recipe (tools/train.py: weighted early-exit loss,
# self-distillation, LayerSkip's layer dropout) at hidden 512, 8 layers, intermediate 1408 —
# 24.6 M parameters, 49 MB of bf16 weights, more than the 32 MB L3 of the Zen hosts, so its
# weights stream from memory there as a real model's do. Not committed: its card is
# models/shakespeare-8l-wide.md.
#   tools/train_sibling.sh TEXT [OUT_DIR]     (TEXT: tinyshakespeare.txt; OUT_DIR default
#                                             models/shakespeare-8l-wide)
# Resumable: run it again to continue (the state is saved every 10 steps beside OUT_DIR); it runs
# niced with one thread so the machine stays usable. When training ends it exports the checkpoint
# and prints the per-layer report and the checksum the card records.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[[ $# -ge 1 ]] || { echo "usage: tools/train_sibling.sh TEXT [OUT_DIR] (TEXT: the training text, tinyshakespeare.txt)" >&2; exit 2; }
data=$1
out=${2:-$root/models/shakespeare-8l-wide}
[[ -f $data ]] || { echo "train_sibling: no training text at $data" >&2; exit 1; }
state=$out.train-state.pt
resume=()
[[ -f $state ]] && resume=(--resume)
# STEPS (default 320) x 8 x 256 tokens = 0.66 M tokens (about 1.7 epochs of the train split):
# about an hour at the ~180 tokens/s measured for this shape alone, two with a build beside it.
nice -n 19 /usr/bin/python3 "$root/tools/train.py" --data "$data" --out "$out" --state "$state" \
  "${resume[@]}" --layers 8 --hidden 512 --heads 8 --kv-heads 4 --intermediate 1408 --vocab 1024 \
  --context 256 --batch 8 --steps "${STEPS:-320}" --warmup 30 --lr 1.5e-3 --threads 1 --eval-every 200 \
  --save-every 10 --exit-loss weighted --distill 1 --layer-dropout 0.1
/usr/bin/python3 "$root/tools/train.py" --eval-only --model "$out" --data "$data" --eval-windows 0
sha256sum "$out/model.safetensors"
