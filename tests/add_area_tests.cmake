# Run by CMake after a test executable is built (tests/CMakeLists.txt, calm_discover_areas):
# lists the doctest cases that one source file, <AREA>.cpp, defines (doctest's
# --source-file filter) and writes CTEST_FILE, which adds each as the ctest test <AREA>/<case>,
# run with the same filter. A run in which doctest ran no case fails: a name that doctest's
# --test-case filter cannot match would otherwise pass without running anything.
# Inputs: EXECUTABLE, AREA, CTEST_FILE, WORKING_DIR, LABEL (may be empty).
set(filter "--source-file=*/${AREA}.cpp")
execute_process(COMMAND "${EXECUTABLE}" ${filter} --list-test-cases
  OUTPUT_VARIABLE output RESULT_VARIABLE result WORKING_DIRECTORY "${WORKING_DIR}")
if(NOT result EQUAL 0)
  message(FATAL_ERROR "listing the test cases of ${AREA} (${EXECUTABLE}) failed (${result}):\n${output}")
endif()

# Bracket arguments keep every character of a case name literal in the written file.
function(quoted out value)
  set(${out} "[==[${value}]==]" PARENT_SCOPE)
endfunction()

set(labels "")
if(NOT LABEL STREQUAL "")
  set(labels " LABELS ${LABEL}")
endif()
set(script "")
set(tests "")
string(REPLACE "\n" ";" lines "${output}")
foreach(line IN LISTS lines)
  if(line STREQUAL "" OR line MATCHES "^=+$" OR line MATCHES "^\\[doctest\\] ")
    continue()
  endif()
  # doctest's filter splits on commas: a comma in a name is escaped.
  string(REPLACE "," "\\," pattern "${line}")
  quoted(name "${AREA}/${line}")
  quoted(exe "${EXECUTABLE}")
  quoted(case "--test-case=${pattern}")
  quoted(dir "${WORKING_DIR}")
  string(APPEND script
    "add_test(${name} ${exe} ${case} ${filter})\n"
    "set_tests_properties(${name} PROPERTIES WORKING_DIRECTORY ${dir}${labels}"
    " FAIL_REGULAR_EXPRESSION [==[test cases: +0 [|]]==])\n")
  list(APPEND tests "${AREA}/${line}")
endforeach()
if(tests STREQUAL "")
  message(FATAL_ERROR "${EXECUTABLE} lists no test case from ${AREA}.cpp")
endif()
# <AREA>_TESTS lists the area's tests for include files that set properties after this one.
string(REPLACE ";" "]==] [==[" joined "${tests}")
string(APPEND script "set(${AREA}_TESTS [==[${joined}]==])\n")
file(WRITE "${CTEST_FILE}" "${script}")
