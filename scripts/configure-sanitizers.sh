#!/usr/bin/env bash
# Configures the sanitizer tree (default build-san): clang++ 14 from Debian, AddressSanitizer +
# UndefinedBehaviorSanitizer (a UBSan report fails the test), libFuzzer coverage on every library
# and the fuzz targets of tests/fuzz, CPU only (no nvcc: GPU tests cannot run without a GPU, and
# the CUDA objects would double the build). -O1 with line tables keeps the build and the reports
# usable on two cores. Used by scripts/test-sanitizers.sh and scripts/fuzz.sh.
set -euo pipefail
build=${1:-build-san}
cmake -S "$(cd "$(dirname "$0")/.." && pwd)" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
  -DENGRAM_CUDA=OFF -DENGRAM_BUILD_BENCH=OFF \
  -DENGRAM_SANITIZE=address,undefined -DENGRAM_FUZZ=ON >/dev/null
