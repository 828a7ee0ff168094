#!/bin/bash
# A short GPU run, for a machine lent for minutes (docs/benchmarks.md): the gpu-labelled tests,
# then throughput_bench with configurations a (dense-4B, B=1 too), c (the tier's DRAM arena read by
# id over PCIe) and d (c + the HBM hot-row cache) of the Engram offload experiment, with a table of
# ENGRAM_PARAMS parameters synthesised while the tests run. Both models take GPT-2's 50,257-id
# vocabulary (an Engram model's may not run past its tokenizer), so (a) here is not the
# 151,936-id Qwen3-4B shape of scripts/gpu-run.sh's 4b. The benchmark stops at SECONDS.
#
#   bash scripts/gpu-quick.sh [ENGRAM_PARAMS=10e9] [SECONDS=260] [CONFIGS=a,c,d]   (.gpu carried)
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/engram-gpu-results}; mkdir -p "$out"
export ENGRAM_SOURCE_DIR=$PWD ENGRAM_TESTDATA_DIR=$PWD/.gpu/testdata
export LD_LIBRARY_PATH=$PWD/.gpu/lib:/usr/local/cuda/lib64
params=${1:-10e9}; guard=${2:-260}
t0=$(date +%s)
el() { echo "+$(( $(date +%s) - t0 )) s"; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u; } 2>&1 | tee $out/summary.txt
E=.gpu/bin/engram
( $E model init-random /dev/shm/d4 --preset dense-4b --vocab-size 50257 > /tmp/i1.txt 2>&1
  $E model init-random /dev/shm/e4b --preset dense-4b --vocab-size 50257 --engram-layers 1 --engram-params $params > /tmp/i2.txt 2>&1
  $E table synth /dev/shm/e4b --store /tmp/store --seed 1 > /tmp/i3.txt 2>&1 ) &
prep=$!
: > /tmp/tests.txt
while read -r t; do
  s=$(date +%s)
  if timeout 60 .gpu/bin/$t >> /tmp/tests.txt 2>&1; then r=passed; else r="FAILED rc $?"; fi
  echo "$t: $r ($(( $(date +%s) - s )) s)" | tee -a $out/summary.txt
done < .gpu/gpu-tests.txt
grep -E "^\[  FAILED|Failure|largest" /tmp/tests.txt | head -24
gzip -c /tmp/tests.txt > $out/tests.txt.gz
echo "tests done $(el)"
wait $prep; tail -n 1 /tmp/i2.txt /tmp/i3.txt; echo "table ready $(el)"
left=$(( guard - ($(date +%s) - t0) ))
timeout $left .gpu/bin/throughput_bench --model /dev/shm/e4b --dense_model /dev/shm/d4 --device cuda \
  --store /tmp/store --configs ${3:-a,c,d} --workloads random --synth_seed 1 --sequences 512 \
  --max_running 256 2>&1 | grep -v '^{' | tee $out/experiment.txt
echo "bench rc ${PIPESTATUS[0]} $(el)"
