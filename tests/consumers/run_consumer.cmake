# Drives one consumer project: (install calm,) configure, build, run. Fails on any error.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

# The README's example is the consumer's main.cpp.
file(READ ${CALM_SOURCE_DIR}/README.md readme)
string(REGEX MATCH "<!-- example:begin -->[^`]*```cpp\n(.*)```[^`]*<!-- example:end -->" _ "${readme}")
if(NOT CMAKE_MATCH_1)
  message(FATAL_ERROR "README.md has no ```cpp block between <!-- example:begin --> and <!-- example:end -->")
endif()
file(WRITE ${WORK}/main.cpp "${CMAKE_MATCH_1}")

# -O0 (-O1 for the benchmark consumer, which runs the kit's benchmarks on the bundled model):
# these check packaging and that a user's build compiles calm header-only; the main build
# compiles the same headers at -O3. -O1 about halves each consumer's compile time, -O0 takes a
# third off -O1 (the README's example: 39 s -> 26 s).
set(optimize -O0)
if(MODE STREQUAL "benchmark")
  set(optimize -O1)
endif()
set(configure_args -S ${CONSUMER} -B ${WORK}/build -DCMAKE_BUILD_TYPE=Release
    "-DCMAKE_CXX_FLAGS_RELEASE=${optimize} -DNDEBUG"
    -DCONSUMER_MAIN=${WORK}/main.cpp -DCALM_ARCH=${CALM_ARCH})
if(MODE STREQUAL "find_package" OR MODE STREQUAL "core_only" OR MODE STREQUAL "benchmark")
  run(${CMAKE_COMMAND} --install ${CALM_BUILD_DIR} --prefix ${WORK}/prefix)
  list(APPEND configure_args -DCMAKE_PREFIX_PATH=${WORK}/prefix)
else()
  list(APPEND configure_args -DCALM_SOURCE_DIR=${CALM_SOURCE_DIR})
endif()
if(MODE STREQUAL "benchmark")
  list(APPEND configure_args -DCALM_SOURCE_DIR=${CALM_SOURCE_DIR})
endif()
run(${CMAKE_COMMAND} ${configure_args})
run(${CMAKE_COMMAND} --build ${WORK}/build -j2)
if(MODE STREQUAL "benchmark")
  # Every benchmark of the example once, briefly: the kit's counters must come out.
  run(${WORK}/build/consumer ${CALM_SOURCE_DIR}/models/shakespeare-8l --benchmark_min_time=0.01)
  message(STATUS "consumer output:\n${last_output}")
  foreach(counter IN ITEMS check_over_layer wall_x wall_over_layer "checks%")
    if(NOT last_output MATCHES "${counter}=")
      message(FATAL_ERROR "the benchmark consumer printed no ${counter} counter:\n${last_output}")
    endif()
  endforeach()
  return()
endif()
run(${WORK}/build/consumer ${FIXTURES}/tiny-gqa-f32-untied)
message(STATUS "consumer output:\n${last_output}")
if(NOT last_output MATCHES "generated [0-9]+ tokens")
  message(FATAL_ERROR "consumer printed no 'generated N tokens' line:\n${last_output}")
endif()
