# Build helpers in the style of absl_cc_library: explicit sources, explicit deps, test labels.

# engram_cc_library(NAME n SRCS a.cc ... HDRS a.h ... DEPS x y ...)
function(engram_cc_library)
  cmake_parse_arguments(ARG "" "NAME" "SRCS;HDRS;DEPS" ${ARGN})
  if(ARG_SRCS)
    add_library(${ARG_NAME} STATIC ${ARG_SRCS} ${ARG_HDRS})
    target_include_directories(${ARG_NAME} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_link_libraries(${ARG_NAME} PUBLIC ${ARG_DEPS})
  else()
    add_library(${ARG_NAME} INTERFACE ${ARG_HDRS})
    target_include_directories(${ARG_NAME} INTERFACE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
    target_link_libraries(${ARG_NAME} INTERFACE ${ARG_DEPS})
  endif()
endfunction()

# engram_cc_test(NAME n SRCS a_test.cc LABELS unit|integration|golden|gpu DEPS ... [TIMEOUT s])
# One binary per test file; gtest_discover_tests would run each case as its own process, which is
# slow with two cores, so each binary is one ctest carrying the given labels.
function(engram_cc_test)
  cmake_parse_arguments(ARG "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS;ARGS" ${ARGN})
  add_executable(${ARG_NAME} ${ARG_SRCS})
  target_link_libraries(${ARG_NAME} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  add_test(NAME ${ARG_NAME} COMMAND ${ARG_NAME} ${ARG_ARGS})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  if(ENGRAM_SANITIZE)
    math(EXPR ARG_TIMEOUT "${ARG_TIMEOUT} * 3")  # instrumented code runs 2-3x slower
  endif()
  set_tests_properties(${ARG_NAME} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "ENGRAM_SOURCE_DIR=${PROJECT_SOURCE_DIR};ENGRAM_BINARY_DIR=${PROJECT_BINARY_DIR};ENGRAM_TESTDATA_DIR=${PROJECT_SOURCE_DIR}/.cache/testdata"
    SKIP_RETURN_CODE 77)
endfunction()
