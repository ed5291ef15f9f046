#!/usr/bin/env bash
# Builds calm's libFuzzer targets with clang (ASan + UBSan) and runs each for a bounded time on
# a seed corpus: the fixtures' files plus generated hostile cases (deep nesting, NUL bytes).
# Usage: tests/fuzz/run.sh [SECONDS_PER_TARGET (default 30)]
# A finding (crash, leak, UB, an exception other than calm::Error, a hang) fails the run and
# leaves its input under build-fuzz/fuzz-artifacts/.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-30}
build="$root/build-fuzz"
CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCALM_FUZZ=ON \
  -DCALM_BUILD_EXAMPLES=OFF -DCALM_BUILD_BENCH=OFF -DCALM_BUILD_COMPILE_TESTS=OFF \
  -DCALM_PYTHON_TESTS=OFF -DCALM_INSTALL=OFF -DCALM_NPM_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target calm_fuzz_targets

corpus="$build/fuzz-corpus"
artifacts="$build/fuzz-artifacts"
rm -rf "$corpus" "$artifacts"
mkdir -p "$artifacts"
F="$root/tests/fixtures"
M="$root/models/shakespeare-8l"
seed() {  # seed TARGET FILE...
  local target=$1
  shift
  mkdir -p "$corpus/$target"
  for f in "$@"; do cp "$f" "$corpus/$target/$(echo "${f#"$root"/}" | tr / _)"; done
}
seed fuzz_safetensors "$M/calm.safetensors" "$F/tiny-mha-f16-sharded/model-00002-of-00002.safetensors"
seed fuzz_exit_classifier "$M/calm.safetensors"
seed fuzz_index "$F/tiny-mha-f16-sharded/model.safetensors.index.json"
seed fuzz_config "$F"/*/config.json "$M/config.json"
seed fuzz_calibration "$M/calm_calibration.json"
seed fuzz_prompts "$root/tests/programs/prompts.jsonl"
seed fuzz_hf_tokenizer "$F/io/hf_tokenizer.json" "$F/io/hf_tokenizer_pairs.json"
for t in "$root"/tests/fuzz/fuzz_*.cpp; do
  name=$(basename "$t" .cpp)
  [[ -d "$corpus/$name" ]] || { echo "fuzz/run.sh: no seeds for $name" >&2; exit 1; }
done
# The hostile cases found by probing: 100,000 levels of nesting where each format holds JSON,
# and a NUL byte that once ended parsing early.
/usr/bin/python3 - "$corpus" "$M/calm.safetensors" <<'PY'
import json, struct, sys
corpus, clf = sys.argv[1], sys.argv[2]
deep = "[" * 100000 + "]" * 100000
def st(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data
def put(target, name, data):
    open(f"{corpus}/{target}/gen_{name}", "wb").write(data if isinstance(data, bytes) else data.encode())
put("fuzz_safetensors", "deep_entry", st(('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":' + deep + '}}').encode(), b"\0" * 4))
put("fuzz_safetensors", "deep_metadata", st(('{"__metadata__":' + deep + '}').encode()))
put("fuzz_safetensors", "nul", st(b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}\0{"v":1}', b"\0" * 4))
put("fuzz_exit_classifier", "deep_entry", st(('{"calm.exit_classifier.weight":' + deep + '}').encode()))
put("fuzz_index", "deep_weight_map", '{"weight_map":{"a":' + deep + '}}')
config = json.load(open(f"{sys.argv[2].rsplit('/', 1)[0]}/config.json"))
text = json.dumps(config)
put("fuzz_config", "deep_rope_scaling", text.replace('"rope_scaling": null', '"rope_scaling": ' + deep) if '"rope_scaling": null' in text else text[:-1] + ', "rope_scaling": ' + deep + "}")
put("fuzz_config", "nul", text + "\0" + '{"rope_scaling": {"type": "linear"}}')
cal = open(f"{sys.argv[2].rsplit('/', 1)[0]}/calm_calibration.json").read()
put("fuzz_calibration", "deep_version", cal.replace('"version": 1', '"version": ' + deep, 1))
put("fuzz_calibration", "nul", cal + "\0garbage")
put("fuzz_hf_tokenizer", "deep", '{"model": {"vocab": ' + deep + '}}')
put("fuzz_hf_tokenizer", "nul", open(f"{corpus}/fuzz_hf_tokenizer/tests_fixtures_io_hf_tokenizer.json").read() + "\0{}")
put("fuzz_prompts", "deep", '{"prompt": ' + deep + '}\n')
put("fuzz_prompts", "nul", '{"prompt": "a"}\0{"prompt": 1}\n')
# Many members (a parse once quadratic in them; a seed fits -max_len) and an added-token id that
# once sized the tokenizer's tables before the gap check.
put("fuzz_safetensors", "many_entries", st(("{" + ",".join(
    f'"t{i}":{{"dtype":"F32","shape":[1],"data_offsets":[{4 * i},{4 * i + 4}]}}' for i in range(3500)
) + "}").encode(), b"\0" * 14000))
tok = json.load(open(f"{corpus}/fuzz_hf_tokenizer/tests_fixtures_io_hf_tokenizer.json"))
tok["added_tokens"][0]["id"] = 2**30
put("fuzz_hf_tokenizer", "huge_added_id", json.dumps(tok))
put("fuzz_prompts", "huge_number", '{"prompt": "a", "n": 1e999}\n')  # once a bare nlohmann error
# Values once accepted that failed later or silently: a rope theta and a scaling factor of 1e-45,
# an end-token list, and a certificate key nothing reads.
for name, change in [("tiny_rope_theta", {"rope_theta": 1e-45}),
                     ("tiny_rope_factor", {"rope_scaling": {"rope_type": "linear", "factor": 1e-45}}),
                     ("eos_list", {"eos_token_id": [config.get("eos_token_id", 2), 7]})]:
    put("fuzz_config", name, json.dumps({**config, **change}))
cert = json.loads(cal)
put("fuzz_calibration", "unknown_key", json.dumps({**cert, "comment": "not a key of the format"}))
PY

run_one() {  # run_one NAME: one target for $secs seconds; its log is build-fuzz/NAME.log
  local name=$1
  if TMPDIR=$(test -w /dev/shm && echo /dev/shm || echo "${TMPDIR:-/tmp}") \
       "$build/tests/fuzz/$name" "$corpus/$name" -max_total_time="$secs" -timeout=10 \
       -rss_limit_mb=2048 -max_len=262144 -print_final_stats=1 \
       -artifact_prefix="$artifacts/$name-" >"$build/$name.log" 2>&1; then
    echo "fuzz: $name: $(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$build/$name.log" | grep -o '[0-9]*$') runs in ${secs} s, no finding"
  else
    echo "fuzz: $name: FINDING (log: $build/$name.log, input under $artifacts)" >&2
    tail -40 "$build/$name.log" >&2
    return 1
  fi
}
export -f run_one
export build corpus artifacts secs
ls "$root"/tests/fuzz/fuzz_*.cpp | xargs -n1 basename | sed 's/\.cpp$//' |
  xargs -P"$(nproc)" -I{} bash -c 'run_one {}'
