#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz, one after the other, each for a number of executions
# or seconds, and prints one line per target (executions, seconds, execs/s, corpus size, result).
#
#   bash scripts/fuzz.sh                       # every target, 60 s each
#   bash scripts/fuzz.sh --runs 10000000       # every target, 10M executions each
#   bash scripts/fuzz.sh --seconds 600 tokenizer_json_fuzz safetensors_fuzz
#
# Builds the targets first (clang++ from Debian, ASan + UBSan + libFuzzer, CPU only) in
# ${ENGRAM_FUZZ_BUILD_DIR:-build-san}, the same tree scripts/test-sanitizers.sh uses. Each target
# starts from its committed seeds (tests/fuzz/corpus/<target>) plus what earlier runs found
# (<build>/fuzz-corpus/<target>, which receives new inputs); a crash, leak, timeout or sanitizer
# report is written to <build>/fuzz-artifacts/ and the script exits 1 after the remaining targets.
# One process per target (no -jobs): the campaign uses one core.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
runs=""; seconds=60; build=${ENGRAM_FUZZ_BUILD_DIR:-build-san}; targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; seconds=""; shift 2 ;;
    --seconds) seconds=$2; runs=""; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --no-build) nobuild=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(tokenizer_json_fuzz safetensors_fuzz model_config_fuzz row_file_fuzz worker_request_fuzz
     openai_request_fuzz tier_request_fuzz)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

if [ -z "${nobuild:-}" ]; then
  bash scripts/configure-sanitizers.sh "$build"
  cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"
fi

limit=()
if [ -n "$runs" ]; then limit=(-runs="$runs"); else limit=(-max_total_time="$seconds"); fi
mkdir -p "$build/fuzz-artifacts" "$build/fuzz-logs"
# Targets that read files write them to a scratch directory under TMPDIR: tmpfs is 4x faster.
export TMPDIR=${ENGRAM_FUZZ_TMPDIR:-/dev/shm}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/sanitizer/lsan.supp:print_suppressions=0}
status=0
printf '%-22s %12s %8s %9s %8s  %s\n' target execs seconds execs/s corpus result
for t in "${targets[@]}"; do
  mkdir -p "$build/fuzz-corpus/$t"
  log="$build/fuzz-logs/$t.log"
  start=$(date +%s%N)
  rc=0
  "$build/tests/fuzz/$t" "$build/fuzz-corpus/$t" "tests/fuzz/corpus/$t" "${limit[@]}" \
      -timeout=30 -rss_limit_mb=3072 -max_len=16384 -print_final_stats=1 \
      -artifact_prefix="$build/fuzz-artifacts/$t-" >"$log" 2>&1 || rc=$?
  secs=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  corpus=$(ls "$build/fuzz-corpus/$t" | wc -l)
  result=ok
  if [ "$rc" -ne 0 ]; then result="FINDING (exit $rc, see $log)"; status=1; fi
  printf '%-22s %12s %8.0f %9.0f %8s  %s\n' "$t" "${execs:-?}" "$secs" \
    "$(awk -v n="${execs:-0}" -v s="$secs" 'BEGIN { printf "%d", n / s }')" "$corpus" "$result"
done
exit $status
