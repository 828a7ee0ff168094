#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer, and each libFuzzer
# target briefly from its committed corpus (ctest label fuzz), in the tree
# ${ENGRAM_SAN_BUILD_DIR:-build-san} configured by scripts/configure-sanitizers.sh (clang, CPU
# only). Run after scripts/test.sh (it installs the dependencies and fetches the test data); CI
# runs both (.ci/run). Arguments go to ctest.
#
# Any ASan/UBSan report fails the test that triggered it. LeakSanitizer runs too: a leak is a
# failure, except the leaks listed in tests/sanitizer/lsan.supp, each with its reason.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${ENGRAM_SAN_BUILD_DIR:-build-san}
bash scripts/configure-sanitizers.sh "$build"
cmake --build "$build" -j"$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/sanitizer/lsan.supp:print_suppressions=0}
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" "$@"
