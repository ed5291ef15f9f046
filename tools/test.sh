#!/usr/bin/env bash
# Builds calm and runs its whole test suite (installs missing Debian packages first).
# Usage: tools/test.sh [--quick | --sanitize | --tsan | --fuzz [SECONDS]]
#   --quick:    the unit tests only (Release, the same build folder): the inner loop
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
# Ninja where it is there (it schedules the two long compile chains better than make); the
# generator of an existing build folder is kept.
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
configure() {  # configure BUILD_DIR CMAKE_ARGS...
  local build=$1
  shift
  if [[ -f "$build/CMakeCache.txt" ]]; then generator=(); fi
  cmake -S "$root" -B "$build" "${generator[@]}" "$@" >/dev/null
}
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
case "${1:-}" in
  --tsan)
    build="$root/build-tsan"
    configure "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCALM_TSAN=ON \
      -DCALM_BUILD_BENCH=OFF -DCALM_BUILD_EXAMPLES=OFF -DCALM_BUILD_COMPILE_TESTS=OFF \
      -DCALM_PYTHON_TESTS=OFF -DCALM_NPM_TESTS=OFF
    cmake --build "$build" -j"$jobs" --target unit_threads
    export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
    exec ctest --test-dir "$build" -j"$jobs" --output-on-failure -R '^test_(session|decoder)/'
    ;;
  --sanitize)
    build="$root/build-sanitize"
    # -O0 -g1: half the compile time of -O1 (which took a third less than -O2 -g), line tables
    # kept for the reports; the kernels (calm_compiled) and the tests that run longer than they
    # compile keep optimizing (tests/CMakeLists.txt).
    configure "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCALM_SANITIZE=ON \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O0 -g1 -DNDEBUG" \
      -DCALM_BUILD_BENCH=OFF -DCALM_BUILD_EXAMPLES=ON -DCALM_BUILD_COMPILE_TESTS=OFF \
      -DCALM_PYTHON_TESTS=OFF -DCALM_NPM_TESTS=OFF
    ;;
  --quick)
    build="$root/build"
    configure "$build" -DCMAKE_BUILD_TYPE=Release
    cmake --build "$build" -j"$jobs" --target calm_unit_tests
    exec ctest --test-dir "$build" -j"$jobs" --output-on-failure -L unit
    ;;
  "")
    build="$root/build"
    configure "$build" -DCMAKE_BUILD_TYPE=Release
    ;;
  *)
    echo "usage: tools/test.sh [--quick | --sanitize | --tsan | --fuzz [SECONDS]]" >&2
    exit 2
    ;;
esac
cmake --build "$build" -j"$jobs"
ctest --test-dir "$build" -j"$jobs" --output-on-failure
