#!/usr/bin/env bash
# Builds calm and runs its whole test suite (installs missing Debian packages first).
# Usage: tools/test.sh [--sanitize | --tsan | --fuzz [SECONDS]]
#   --sanitize: a separate ASan+UBSan build of the same tests
#   --tsan:     a ThreadSanitizer build of the tests that share a model between threads
#   --fuzz:     the libFuzzer targets (clang), SECONDS each (default 30; tests/fuzz/README.md)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ "${1:-}" == "--fuzz" ]]; then
  "$root/tools/install-deps.sh" --fuzz
  exec "$root/tests/fuzz/run.sh" "${2:-30}"
fi
"$root/tools/install-deps.sh" --python
jobs=$(nproc)
if [[ "${1:-}" == "--tsan" ]]; then
  build="$root/build-tsan"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCALM_TSAN=ON \
        -DCALM_BUILD_BENCH=OFF -DCALM_BUILD_EXAMPLES=OFF -DCALM_BUILD_COMPILE_TESTS=OFF -DCALM_PYTHON_TESTS=OFF \
        -DCALM_NPM_TESTS=OFF >/dev/null
  cmake --build "$build" -j"$jobs" --target test_session test_decoder
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
  ctest --test-dir "$build" -j"$jobs" --output-on-failure -R '^test_(session|decoder)/'
  exit 0
elif [[ "${1:-}" == "--sanitize" ]]; then
  build="$root/build-sanitize"
  # -O1 -g1: about a third less compile time than -O2 -g, line tables kept for the reports.
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCALM_SANITIZE=ON \
        -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
        -DCALM_BUILD_BENCH=OFF -DCALM_BUILD_EXAMPLES=ON -DCALM_BUILD_COMPILE_TESTS=OFF -DCALM_PYTHON_TESTS=OFF \
        -DCALM_NPM_TESTS=OFF >/dev/null
else
  build="$root/build"
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" -j"$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir "$build" -j"$jobs" --output-on-failure
