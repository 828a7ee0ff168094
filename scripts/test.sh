#!/usr/bin/env bash
# The README's test command: installs dependencies, fetches the external test vectors, builds
# everything (CUDA parts too when nvcc exists) and runs every test. GPU tests report "skipped"
# without a GPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
bash scripts/fetch-testdata.sh
build=${ENGRAM_BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" "$@"
