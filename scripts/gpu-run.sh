#!/usr/bin/env bash
# The GPU machine's half of a GPU run: the gpu-labelled tests and the benchmarks from the bundle
# that scripts/gpu-pack.sh made, every result written under $OUT (docs/benchmarks.md):
#
#   cmake --build build && bash scripts/gpu-pack.sh      (on the build machine)
#   bash scripts/gpu-run.sh [tests] [bench] [4b] [vectors] [profile] [serve] [train] [offload]
#                           [gather]
#                                                                      (GPU machine, .gpu carried)
#
# tests: every test listed in .gpu/gpu-tests.txt (ctest -L gpu), under compute-sanitizer when
#        ENGRAM_SANITIZE=1; bench: the demo model through `engram model run --device cuda`;
#        4b: the dense-4b throughput benchmark (512 sequences, and 256 when ENGRAM_BENCH_256 is
#            set; B=1 decode with the own GEMV kernel and with cuBLASLt) with the Hugging Face
#            baseline on the same card (ENGRAM_HF_SEQUENCES, default 8);
#        vectors: tests/vectors/generate.py with the machine's numpy and tokenizers, into
#        $OUT/vectors.tar (compare with tests/vectors);
#        profile: Nsight Compute over 400 kernels of B=1 decode of the dense-4b model (eager, no
#        graphs), summed per kernel into $OUT/profile.txt (time, share, DRAM GB/s);
#        serve: engram-worker --device cuda over gRPC: the demo model (tables in engram-memory)
#            answers greedy prompts (the CPU backend's answers beside them), then dense-4B with
#            GPT-2's vocabulary under bench/online_bench (1 to 256 streams), after the offline
#            throughput_bench figure of the same workload, and the worker's /metrics;
#        train: tools/train/train_demo.py on the GPU with the data .train.tar.xz carries
#            (docs/demo-model.md), then `engram eval --device cuda|cpu` of the trained model
#            against the script's bf16 and f32 losses; the model comes back in $OUT/train;
#        offload: the Engram offload experiment (docs/benchmarks.md): dense-4B with GPT-2's
#            vocabulary, and the same with one Engram layer at block 1 whose table is as large
#            as the disk holds (ENGRAM_PARAMS, default up to 50e9 parameters), synthesised into
#            a store on disk and profiled over the training part of .replay.txt.xz; then
#            configurations a-d on random ids and on replayed held-out text, then (e) on text
#            while time is left (ENGRAM_OFFLOAD_SECONDS, default 560 for the whole mode);
#        gather: bench/gather_bench over registered arenas of 4, 16 and 48 GiB (ENGRAM_GATHER_MIB
#            lists the sizes): whether random rows from an arena as large as the offload
#            experiment's cost more per row than from the 4 GiB one.
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
  free -g | head -n 2
  df -h /tmp /dev/shm
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
  if [ -n "${ENGRAM_BENCH_256:-}" ]; then
    timeout 120 .gpu/run throughput_bench --model "$m" --device cuda --sequences 256 \
      --max_running 256 --single=false 2>&1 | grep -v '^{' | tee -a "$out/bench.txt" | tail -n 3
  fi
  echo "B=1 through cuBLASLt (--gemv=false):" | tee -a "$out/bench.txt"
  timeout 90 .gpu/run throughput_bench --model "$m" --device cuda --sequences 1 --gemv=false \
    2>&1 | grep "B=1" | tee -a "$out/bench.txt"
  timeout 100 python3 bench/hf_baseline.py --model "$m" --sequences ${ENGRAM_HF_SEQUENCES:-8} \
    --batch ${ENGRAM_HF_SEQUENCES:-8} 2>&1 \
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
# ncu spells units either way ("nsecond" or "ns"); an unknown one stops the table rather than
# printing numbers in the wrong unit.
scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "ns": 1e-3, "us": 1.0, "ms": 1e3,
         "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "B": 1.0, "KB": 1e3, "MB": 1e6,
         "GB": 1e9}
for r in rows:
    if r[u] not in scale:
        raise SystemExit("profile: unknown unit %r of %s" % (r[u], r[m]))
    x = float(r[v].replace(",", "")) * scale[r[u]]
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
if [[ $what == *serve* ]]; then
  E=".gpu/run engram"
  wait_ready() { $E health --server "$1" --wait 180 > /dev/null || { tail -n 20 "$2"; status=1; }; }
  metrics() { python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$1/metrics').read().decode())"; }
  # The demo model: tables in engram-memory, the backbone on the GPU.
  rm -rf /tmp/demo-store
  $E table import models/demo --store /tmp/demo-store > /tmp/import.txt 2>&1 || tail -n 3 /tmp/import.txt
  .gpu/run engram-memory --store /tmp/demo-store --listen 127.0.0.1:50052 --metrics-port 9401 \
    > /tmp/memory.log 2>&1 &
  mpid=$!
  wait_ready 127.0.0.1:50052 /tmp/memory.log
  .gpu/run engram-worker --model models/demo --memory 127.0.0.1:50052 --device cuda \
    --listen 127.0.0.1:50051 --metrics-port 9400 > /tmp/worker-demo.log 2>&1 &
  wpid=$!
  wait_ready 127.0.0.1:50051 /tmp/worker-demo.log
  for prompt in "The President of the United States" "And God said unto Moses," "The capital of France is"; do
    echo "== $prompt"
    echo "-- engram-worker --device cuda (gRPC):"
    timeout 60 $E generate --server 127.0.0.1:50051 --prompt "$prompt" --max-tokens 40 --temperature 0 2>&1
    echo; echo "-- engram model run --device cpu:"
    timeout 60 $E model run models/demo --prompt "$prompt" --max-tokens 40 --device cpu 2>&1 | tail -n 2
  done | tee "$out/serve.txt"
  metrics 9400 | grep -E '^engram_worker_(kv|cuda_graph|step_duration|engram_rows|time_to_first)' | grep -v _bucket > "$out/worker-demo-metrics.txt"
  grep -m1 -i "backbone\|device" /tmp/worker-demo.log | tee -a "$out/serve.txt"
  kill -TERM $wpid; wait $wpid
  kill -TERM $mpid; wait $mpid
  # dense-4B (GPT-2's vocabulary, so every id has text): offline figure, then online through gRPC.
  m=/dev/shm/d4
  [ -f $m/config.json ] || $E model init-random $m --preset dense-4b --vocab-size 50257 > /dev/null 2>&1
  timeout 120 .gpu/run throughput_bench --model $m --device cuda --sequences 512 --max_running 256 \
    --single=false 2>&1 | grep -v '^{' | tail -n 3 | tee -a "$out/online.txt"
  .gpu/run engram-worker --model $m --device cuda --listen 127.0.0.1:50061 --metrics-port 9410 \
    --max-running-requests 256 --max-queued-requests 1024 > /tmp/worker-4b.log 2>&1 &
  wpid=$!
  wait_ready 127.0.0.1:50061 /tmp/worker-4b.log
  timeout 300 .gpu/run online_bench --server 127.0.0.1:50061 --concurrency 1,16,64,256 \
    --requests 512 2>&1 | tee -a "$out/online.txt"
  metrics 9410 | grep -E '^engram_' | grep -vE '_bucket' > "$out/worker-4b-metrics.txt"
  kill -TERM $wpid; wait $wpid
fi
if [[ $what == *train* ]]; then
  # The data (split, token stream, tokenizer merges) was prepared on the build machine.
  T=/tmp/train; rm -rf $T; mkdir -p $T; tar -xJf .train.tar.xz -C $T
  timeout 420 python3 tools/train/train_demo.py --corpus /nonexistent --out $T --device cuda \
    ${ENGRAM_TRAIN_ARGS:---hidden 256 --layers 6 --heads 4 --kv-heads 2 --intermediate 768 --seq 256 \
    --batch 32 --steps 1000000 --minutes 3 --lr 2e-3 --engram-layers 1,3 --engram-heads 4 \
    --engram-head-dim 32 --fp8-tables --engram-vocab 30000 --name engram-demo-gpu} 2>&1 | tail -n 25 | tee "$out/train.txt"
  for dev in cuda cpu; do
    for v in model control; do
      echo "engram eval $v excerpt --device $dev: $(.gpu/run engram eval $T/$v --text $T/excerpt.txt \
        --device $dev 2>&1 | tail -n 1)"
      echo "engram eval $v heldout --device $dev: $(.gpu/run engram eval $T/$v --text $T/heldout.txt \
        --device $dev 2>&1 | tail -n 1)"
    done
  done | tee -a "$out/train.txt"
  mkdir -p "$out/train"
  cp -r $T/model $T/control $T/excerpt.txt $T/heldout.txt $T/report.json "$out/train/" 2>/dev/null
fi
if [[ $what == *gather* ]]; then
  for mib in ${ENGRAM_GATHER_MIB:-4096 16384 49152}; do
    timeout 240 .gpu/run gather_bench --table-mib "$mib" --iters 100 2>&1 | tee -a "$out/gather.txt"
  done
fi
if [[ $what == *offload* ]]; then
  # ENGRAM_PRESET, ENGRAM_DEVICE, ENGRAM_CONFIGS, ENGRAM_SEQUENCES and ENGRAM_BENCH_ARGS shrink it
  # for a dry run on a CPU (e.g. tiny, cpu, a,b,c, 8, "--min_len 10 --max_len 40 --threads 2");
  # ENGRAM_WORKLOADS picks and orders the workloads (default random,text).
  t0=$(date +%s); left() { echo $(( ${ENGRAM_OFFLOAD_SECONDS:-560} - ($(date +%s) - t0) )); }
  E=".gpu/run engram"; S=/tmp/store; preset=${ENGRAM_PRESET:-dense-4b}
  xz -dc .replay.txt.xz > /tmp/replay.txt
  size=$(stat -c %s /tmp/replay.txt); held=$(( size - 3000000 ))
  # 53.4 GB per 50e9 parameters (FP8 rows of 256 values + scales, 15 rows a 4 KiB page); leave
  # 4 GB of the disk free. The two models (8 GB each) and, for (c), the whole table live in
  # /dev/shm: a tmpfs of half the RAM by default, too small for both, so it is grown first where
  # the machine lets us. A tmpfs larger than the RAM counts as 90% of the RAM.
  ram=$(free -b | awk '/^Mem:/ {print $2}'); shm=$(( ram * 9 / 10 ))
  [ "$(df --output=size -B1 /dev/shm | tail -n 1)" -ge $shm ] || mount -o remount,size=$shm /dev/shm \
    || echo "could not grow /dev/shm" | tee -a "$out/offload.txt"
  avail=$(df --output=avail -B1 /tmp | tail -n 1)
  shm_free=$(df --output=avail -B1 /dev/shm | tail -n 1)
  shm_avail=$(( (shm_free < shm ? shm_free : shm) - 17000000000 ))
  fit=$(python3 -c "print(int(min(50e9, ($avail - 4e9) / 1.068, ($shm_avail - 4e9) / 1.068) // 1e9) * 1e9)")
  params=${ENGRAM_PARAMS:-$fit}
  echo "table: $params parameters (disk available $avail bytes, /dev/shm $shm_avail after the models)" | tee "$out/offload.txt"
  $E model init-random /dev/shm/d4 --preset $preset --vocab-size 50257 > /dev/null 2>&1
  $E model init-random /dev/shm/e4b --preset $preset --vocab-size 50257 --engram-layers 1 \
    --engram-params $params > /tmp/e4b.txt 2>&1 || tail -n 3 /tmp/e4b.txt
  rm -rf $S
  s0=$(date +%s)
  $E table synth /dev/shm/e4b --store $S --seed 1 2>&1 | tail -n 2 | tee -a "$out/offload.txt"
  echo "synthesised in $(( $(date +%s) - s0 )) s" | tee -a "$out/offload.txt"
  # The top 4 M rows (~1 GiB of FP8 rows, the HBM cache's size) are stored for (d)'s hot list.
  hot=4000000
  $E table profile /dev/shm/e4b --store $S --corpus /tmp/replay.txt --max-bytes $held \
    --top $hot 2>&1 \
    | tail -n 2 | tee -a "$out/offload.txt"
  common="--model /dev/shm/e4b --dense_model /dev/shm/d4 --device ${ENGRAM_DEVICE:-cuda}
    --store $S --synth_seed 1 --sequences ${ENGRAM_SEQUENCES:-512} --max_running 256
    --replay_corpus /tmp/replay.txt --heldout_from $held --hbm_cache_gib ${ENGRAM_HBM_GIB:-1}
    --hbm_hot_rows $hot ${ENGRAM_BENCH_ARGS:-}"
  timeout $(left) .gpu/run throughput_bench $common --configs ${ENGRAM_CONFIGS:-a,b,c,d} \
    --workloads ${ENGRAM_WORKLOADS:-random,text} 2>&1 | grep -v '^{' | tee -a "$out/offload.txt"
  echo "a-d done at +$(( $(date +%s) - t0 )) s" | tee -a "$out/offload.txt"
  [ "$(left)" -gt 60 ] && timeout $(left) .gpu/run throughput_bench $common --configs e \
    --workloads text --single=false 2>&1 | grep -v '^{' | tee -a "$out/offload.txt"
  rm -rf /dev/shm/d4 /dev/shm/e4b
fi
exit $status
