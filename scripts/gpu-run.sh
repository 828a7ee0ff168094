#!/usr/bin/env bash
# The GPU machine's half of a GPU run: the gpu-labelled tests and the benchmarks from the bundle
# that scripts/gpu-pack.sh made, every result written under $OUT (docs/benchmarks.md):
#
#   cmake --build build && bash scripts/gpu-pack.sh      (on the build machine)
#   bash scripts/gpu-run.sh [tests] [bench] [4b] [vectors] [profile]   (GPU machine, .gpu carried)
#
# tests: every test listed in .gpu/gpu-tests.txt (ctest -L gpu), under compute-sanitizer when
#        ENGRAM_SANITIZE=1; bench: the demo model through `engram model run --device cuda`;
#        4b: the dense-4b throughput benchmark with the Hugging Face baseline on the same card;
#        vectors: tests/vectors/generate.py with the machine's numpy and tokenizers, into
#        $OUT/vectors.tar (compare with tests/vectors);
#        profile: Nsight Compute over 400 kernels of B=1 decode of the dense-4b model (eager, no
#        graphs), summed per kernel into $OUT/profile.txt (time, share, DRAM GB/s).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/engram-gpu-results}
mkdir -p "$out"
what=${*:-tests bench 4b vectors}
export ENGRAM_SOURCE_DIR=$PWD ENGRAM_TESTDATA_DIR=$PWD/.gpu/testdata
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.current --format=csv
  echo "cpus: $(nproc)"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
status=0
if [[ $what == *tests* ]]; then
  : > "$out/tests.txt"
  while read -r t; do
    if timeout 120 .gpu/run "$t" >> "$out/tests.txt" 2>&1; then r=passed; else r=FAILED; status=1; fi
    echo "$t: $r" | tee -a "$out/summary.txt"
  done < .gpu/gpu-tests.txt
  grep -E "^\[  FAILED|Failure|error|largest" "$out/tests.txt" | head -60
fi
if [[ $what == *bench* ]]; then
  demo=/tmp/engram-demo
  .gpu/run engram model init-demo "$demo" > /dev/null 2>&1
  for dev in cpu cuda; do
    timeout 120 .gpu/run engram model run "$demo" --prompt "The capital of France is" \
      --max-tokens 24 --device $dev 2>&1 | tail -n 2 | tee -a "$out/summary.txt"
  done
fi
if [[ $what == *4b* ]]; then
  m=/tmp/dense-4b
  t0=$(date +%s)
  .gpu/run engram model init-random "$m" --preset dense-4b > /tmp/init4b.txt 2>&1 || { status=1; tail -n 5 /tmp/init4b.txt; }
  echo "dense-4b written in $(( $(date +%s) - t0 )) s" | tee -a "$out/summary.txt"
  timeout 240 .gpu/run throughput_bench --model "$m" --device cuda --sequences 512 \
    --max_running 256 2>&1 | grep -v '^{' | tee "$out/bench.txt" | tail -n 8
  timeout 150 python3 bench/hf_baseline.py --model "$m" --sequences 32 --batch 32 2>&1 \
    | tail -n 3 | tee -a "$out/bench.txt"
fi
if [[ $what == *vectors* ]]; then
  rm -rf /tmp/vectors && mkdir -p /tmp/vectors
  python3 tests/vectors/generate.py --testdata .gpu/testdata --out /tmp/vectors 2>&1 | tail -n 5
  for f in /tmp/vectors/*.json; do
    cmp -s "$f" "tests/vectors/$(basename "$f")" && echo "$(basename "$f"): identical" \
      || echo "$(basename "$f"): DIFFERS"
  done | tee -a "$out/summary.txt"
  tar -C /tmp -cf "$out/vectors.tar" vectors
fi
if [[ $what == *profile* ]]; then
  m=/tmp/dense-4b
  [ -f $m/config.json ] || .gpu/run engram model init-random "$m" --preset dense-4b > /dev/null 2>&1
  # The B=1 part comes first; 4,000 kernels in (prefill and a dozen decode steps) it is steady.
  PATH=$PATH:/usr/local/cuda/bin timeout 300 ncu --launch-skip 4000 --launch-count 400 \
    --metrics gpu__time_duration.sum,dram__bytes.sum --csv .gpu/run throughput_bench --model "$m" \
    --device cuda --sequences 1 --min_len 100 --max_len 101 --graphs=false > /tmp/ncu.csv 2> /tmp/ncu.err \
    || { status=1; tail -n 3 /tmp/ncu.err; }
  python3 - <<'PY' | tee "$out/profile.txt"
import csv, collections
rows = [r for r in csv.reader(open("/tmp/ncu.csv")) if len(r) > 10]
head, rows = rows[0], rows[1:]
k, m, v, u = (head.index(x) for x in ("Kernel Name", "Metric Name", "Metric Value", "Metric Unit"))
us, by, n = collections.defaultdict(float), collections.defaultdict(float), collections.Counter()
scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}
for r in rows:
    x = float(r[v].replace(",", "")) * scale.get(r[u], 1.0)
    if r[m] == "gpu__time_duration.sum":
        us[r[k][:80]] += x
        n[r[k][:80]] += 1
    else:
        by[r[k][:80]] += x
total = sum(us.values())
print("%d kernels, %.1f us" % (sum(n.values()), total))
for name in sorted(us, key=us.get, reverse=True)[:16]:
    print("%9.1f us %5.1f%% n=%4d %7.0f GB/s  %s" % (us[name], 100 * us[name] / total, n[name],
                                                   by[name] / (us[name] * 1e3) if us[name] else 0, name))
PY
fi
exit $status
