#!/usr/bin/env bash
# The GPU machine's half of a GPU run: executes the GPU tests and the benchmarks from a bundle made
# on the build machine, and writes every result under $OUT. Build and pack first (docs/benchmarks.md):
#
#   cmake --build build --target engram_gather_test arena_gather_test gather_bench memory_tier_bench
#   scripts/gpu-bundle.sh .gpu build/tests/gpu/engram_gather_test \
#       build/tests/gpu/arena_gather_test build/bench/gather_bench build/bench/memory_tier_bench
#
# then run `bash scripts/gpu-run.sh` on the GPU machine with .gpu carried along.
set -uo pipefail
out=${OUT:-/tmp/engram-gpu-results}
mkdir -p "$out"
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current,pcie.link.width.current --format=csv
  echo "cpus: $(nproc)"; free -g | head -2; uname -r
} > "$out/machine.txt" 2>&1
status=0
for t in engram_gather_test arena_gather_test; do
  if .gpu/run "$t" > "$out/$t.txt" 2>&1; then echo "$t: passed"; else echo "$t: FAILED"; status=1; fi
  tail -n 3 "$out/$t.txt"
done
.gpu/run gather_bench --table-mib 4096 --iters 200 > "$out/gather_bench_4g.txt" 2>&1
.gpu/run gather_bench --table-mib 256 --iters 200 > "$out/gather_bench_256m.txt" 2>&1
cat "$out/gather_bench_4g.txt"
mkdir -p /tmp/engram-bench
.gpu/run memory_tier_bench --dir /tmp/engram-bench --table-gib 4 --seconds 2 > "$out/memory_tier_bench.txt" 2>&1
tail -n 30 "$out/memory_tier_bench.txt"
exit $status
