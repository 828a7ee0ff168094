#!/usr/bin/env bash
# Runs the engram-serve image with podman the way deploy/ runs it, and checks that it serves:
# numeric non-root user, read-only root filesystem, every capability dropped, no new privileges,
# the tier under deploy/seccomp/engram-memory.json, tier and worker in two containers sharing the
# host's /dev/shm (as two pods share the node's). It writes and imports the demo model with the
# image's own `engram`, then checks: /health turns 200, an OpenAI completion over HTTP streams to
# [DONE], the worker read rows through the shared-memory arena, the tier kept io_uring (no pread
# fallback), and both drain and exit 0 on `podman stop`.
#
#   bash scripts/podman-smoke.sh [IMAGE]          (default localhost/engram-serve:0.1.0)
#
# ENGRAM_TIER_SECCOMP=FILE runs the tier under another seccomp profile (e.g. a runtime's default
# profile, to see the pread fallback reported). Needs podman, curl and GPT-2's tokenizer.json (scripts/fetch-testdata.sh). Extra `podman run`
# flags for the host go in PODMAN_RUN_FLAGS (a VM with hybrid cgroups and no CAP_SYS_RESOURCE
# needed "--runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
image=${1:-localhost/engram-serve:0.1.0}
tokenizer=${ENGRAM_TOKENIZER:-$root/.cache/testdata/tokenizer-gpt2/package/models/tokenizer.json}
vol=$(mktemp -d)
mport=50072 mmetrics=9421 wport=50071 wmetrics=9420 hport=8071
prefix="engram-smoke-$$"
cleanup() {
  podman rm -f "$prefix-worker" "$prefix-memory" >/dev/null 2>&1 || true
  rm -rf "$vol"
}
trap cleanup EXIT

cp "$tokenizer" "$vol/tokenizer.json"
chown -R 10001:10001 "$vol"
# shellcheck disable=SC2206
common=(${PODMAN_RUN_FLAGS:-} --network host --user 10001:10001 --read-only --tmpfs /tmp
        --cap-drop ALL --security-opt no-new-privileges -v "$vol:/data" -v /dev/shm:/dev/shm)
run=(podman run --rm "${common[@]}")
serve=(podman run -d "${common[@]}")

echo "== demo model and import, with the image's engram"
"${run[@]}" "$image" engram model init-demo /data/model --tokenizer /data/tokenizer.json
"${run[@]}" "$image" engram table import /data/model --store /data/store

echo "== engram-memory (seccomp: deploy/seccomp/engram-memory.json) and engram-worker"
"${serve[@]}" --name "$prefix-memory" \
  --security-opt "seccomp=${ENGRAM_TIER_SECCOMP:-$root/deploy/seccomp/engram-memory.json}" \
  "$image" engram-memory --store /data/store --listen "127.0.0.1:$mport" --metrics-port "$mmetrics" \
  --metrics-host 127.0.0.1 --shm-prefix "$prefix" >/dev/null
"${serve[@]}" --name "$prefix-worker" "$image" engram-worker --model /data/model \
  --memory "127.0.0.1:$mport" --listen "127.0.0.1:$wport" --metrics-host 127.0.0.1 \
  --metrics-port "$wmetrics" --http-host 127.0.0.1 --http-port "$hport" --threads 1 >/dev/null

for _ in $(seq 240); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hport/health")" = 200 ] && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$hport/health" >/dev/null || {
  podman logs "$prefix-memory" | tail -20; podman logs "$prefix-worker" | tail -20
  echo "FAIL: the worker did not become healthy"; exit 1; }

echo "== HTTP completion, streamed"
out=$(curl -sN "http://127.0.0.1:$hport/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "The quick brown fox", "max_tokens": 16, "temperature": 0, "stream": true}')
printf '%s\n' "$out" | sed -n 1,3p
printf '%s\n' "$out" | tail -n 1 | grep -qx 'data: \[DONE\]' || { echo "FAIL: the stream did not end in [DONE]"; exit 1; }

metric() {  # metric PORT NAME: the first sample's value
  curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($0, m) == 1 && !n++ { print $NF }'
}
shm=$(metric "$wmetrics" 'engram_worker_engram_rows_total{tier="dram_shm"}')
fallback=$(metric "$mmetrics" 'engram_nvme_uring_fallback_readers')
echo "rows read through shared memory: $shm; NVMe readers on the pread fallback: $fallback"
[ "${shm%.*}" -gt 0 ] || { echo "FAIL: no rows through the shared-memory arena"; exit 1; }
[ "$fallback" = 0 ] || { echo "FAIL: io_uring unavailable under the seccomp profile"; exit 1; }

echo "== drain (SIGTERM), the worker first"
for c in worker memory; do
  podman stop -t 60 "$prefix-$c" >/dev/null
  code=$(podman inspect --format '{{.State.ExitCode}}' "$prefix-$c")
  echo "engram-$c exited $code"
  [ "$code" = 0 ] || { podman logs "$prefix-$c" | tail -20; echo "FAIL: engram-$c did not drain cleanly"; exit 1; }
done
echo "podman smoke test OK ($image)"
