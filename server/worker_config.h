// WorkerConfig: the one configuration struct of engram-worker (docs/architecture.md pattern 7).
//
// Nested by subsystem; every field documented with its unit and default. It is filled, in this
// order of precedence (later wins):
//   1. the defaults written below,
//   2. an optional JSON file (--config FILE) with the same nesting, e.g.
//        {"scheduler": {"max_running_requests": 32}, "memory_tier": {"rows_timeout": "5s"}}
//      (durations are strings such as "250ms", "30s"; unknown keys are errors),
//   3. command-line flags (`engram-worker --help` lists them; dashes and underscores are the same:
//      --metrics-port 9400 == --metrics_port=9400).
// It is validated once (Validate) and printed at startup (ToJson).
#ifndef ENGRAM_SERVER_WORKER_CONFIG_H_
#define ENGRAM_SERVER_WORKER_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace engram {

struct WorkerConfig {
  struct Server {
    // gRPC listen address (host:port; port 0 picks a free one). Flag --listen.
    // Default "0.0.0.0:50051".
    std::string listen = "0.0.0.0:50051";
    // Host and port of the Prometheus /metrics endpoint (port 0 picks a free one; -1 disables it).
    // Flags --metrics-host, --metrics-port. Default "0.0.0.0", 9400.
    std::string metrics_host = "0.0.0.0";
    int metrics_port = 9400;
    // On SIGTERM: how long running requests may take to finish before they are aborted.
    // Flag --drain-timeout. Default 30s.
    absl::Duration drain_timeout = absl::Seconds(30);
    // Writes the bound gRPC and metrics ports as JSON {"grpc": P, "metrics": Q} to this file as
    // soon as they are bound, before the model loads (for tests and scripts that start the worker
    // on port 0; readiness is still health). Flag --port-file. Default "" (none).
    std::string port_file;
    // Largest request message accepted (gRPC receive limit); larger ones get RESOURCE_EXHAUSTED
    // before they are parsed. Flag --max-receive-message-bytes. Default 4 MiB (a prompt that
    // fills a 128k-token context is well under 1 MiB of text or ids).
    int max_receive_message_bytes = 4 << 20;
    // gRPC server reflection (for grpcurl). Flag --reflection. Default true (docs/decisions.md,
    // "Reflection stays on by default").
    bool reflection = true;
    // TLS of the gRPC port (PEM paths; common/grpc_tls.h): certificate + key, and optionally the
    // CA of client certificates (mutual TLS). Flags --tls-cert, --tls-key, --tls-client-ca.
    // Default "" (plaintext).
    std::string tls_cert;
    std::string tls_key;
    std::string tls_client_ca;
  } server;

  struct Http {
    // The OpenAI-compatible HTTP API (docs/http-api.md): host and port (0 picks a free one; -1
    // disables it). Flags --http-host, --http-port. Default "0.0.0.0", 8000.
    std::string host = "0.0.0.0";
    int port = 8000;
    // Threads serving HTTP connections; each open connection (a streaming request, a waiting
    // non-streaming one, an idle keep-alive) holds one. 0 = max_running_requests +
    // max_queued_requests + 8, enough for every request the scheduler can hold. Flag
    // --http-threads. Default 0.
    int threads = 0;
    // Accepted connections waiting for a free thread at most; beyond it a connection is answered
    // 429 at once. Flag --http-max-pending-connections. Default 64.
    int max_pending_connections = 64;
    // How long an idle keep-alive connection keeps its thread. Flag --http-keep-alive-timeout.
    // Default 5s.
    absl::Duration keep_alive_timeout = absl::Seconds(5);
    // Deadline of an HTTP request that sends no X-Request-Timeout header; 0 = none. Flag
    // --http-request-timeout. Default 0.
    absl::Duration request_timeout = absl::ZeroDuration();
  } http;

  struct Model {
    // Model directory (config.json, *.safetensors, tokenizer.json). Required. Flag --model.
    std::string dir;
    // Threads of the CPU backbone; 0 = one per hardware thread. Flag --threads. Default 0.
    int threads = 0;
    // Where the backbone runs: "cuda" (the GPU backbone), "cpu" (the f32 reference) or "auto"
    // (cuda when the worker was built with CUDA and a GPU is visible, else cpu). Flag --device.
    // Default "auto".
    std::string device = "auto";
    // Share of the GPU's memory the CUDA backbone may fill (weights, workspace, then the KV cache
    // takes what is left up to this share). Flag --gpu-memory-fraction. Default 0.9.
    double gpu_memory_fraction = 0.9;
    // Replay decode steps from captured CUDA graphs (per batch-size bucket). Flag --cuda-graphs.
    // Default true.
    bool cuda_graphs = true;
  } model;

  struct MemoryTier {
    // Address of engram-memory (host:port). Required for a model with Engram layers.
    // Flag --memory.
    std::string address;
    // Read rows from the tier's shared-memory arena when it runs on the same host; otherwise (or
    // when false) every row travels inside the Prefetch stream. Flag --shared-memory. Default true.
    bool shared_memory = true;
    // Reconnect backoff after the tier goes away: starts at the initial value, doubles per failed
    // attempt up to the maximum. Flags --reconnect-initial-backoff, --reconnect-max-backoff.
    // Defaults 100ms, 5s.
    absl::Duration reconnect_initial_backoff = absl::Milliseconds(100);
    absl::Duration reconnect_max_backoff = absl::Seconds(5);
    // Longest the forward pass waits at an Engram layer for rows that have not arrived, when the
    // request's own deadline is later or absent; past it the request fails with UNAVAILABLE.
    // Flag --rows-timeout. Default 10s.
    absl::Duration rows_timeout = absl::Seconds(10);
    // Most row ids in one Prefetch message; larger sets are split (the tier bounds batch sizes).
    // Flag --max-rows-per-batch. Default 8192.
    int max_rows_per_batch = 8192;
    // TLS to engram-memory (PEM paths): the CA of the tier's certificate, and this worker's client
    // certificate + key for a tier started with --tls-client-ca. Flags --memory-tls-ca,
    // --memory-tls-cert, --memory-tls-key. Default "" (plaintext).
    std::string tls_ca;
    std::string tls_cert;
    std::string tls_key;
  } memory_tier;

  struct Scheduler {
    // Sequences in the running batch at most; further admitted requests wait in the queue.
    // Flag --max-running-requests. Default 64.
    int max_running_requests = 64;
    // Requests waiting for a batch slot at most; beyond it Generate answers RESOURCE_EXHAUSTED.
    // Flag --max-queued-requests. Default 256.
    int max_queued_requests = 256;
    // Prompt tokens of one sequence processed in one step (prefill chunking), so a long prompt
    // does not stall the decode of others. Flag --prefill-chunk-tokens. Default 256.
    int prefill_chunk_tokens = 256;
    // Tokens (decode tokens + prefill chunk tokens) of all sequences in one step at most.
    // Flag --max-step-tokens. Default 1024.
    int max_step_tokens = 1024;
    // max_tokens of a request that leaves it 0. Flag --default-max-tokens. Default 256.
    int default_max_tokens = 256;
    // Context window in tokens (prompt + generated); 0 = the model's max_position_embeddings.
    // Flag --max-context-tokens. Default 0.
    int max_context_tokens = 0;
    // A sequence whose Engram rows are not resident (they must come from the tier's NVMe or a
    // tier on another host) when a step is formed: "sit-out" leaves it out of the steps until they
    // have arrived while the others go on (at most memory_tier.rows_timeout, then UNAVAILABLE);
    // "wait" runs it, and the step waits for its rows at the Engram layer (the whole batch
    // stalls). Flag --cold-rows. Default "sit-out".
    std::string cold_rows = "sit-out";
  } scheduler;

  // Log level: debug, info, warning or error. Flag --log-level. Default "info".
  std::string log_level = "info";

  // Checks every field; the message names the offending key.
  absl::Status Validate() const;
  // The effective configuration, nested like the file (durations as strings).
  nlohmann::json ToJson() const;
};

// Overlays a JSON object onto `config`; unknown keys and wrong types are INVALID_ARGUMENT naming
// the dotted key.
absl::Status ApplyJsonConfig(const nlohmann::json& json, WorkerConfig* config);

// Parses the process command line (absl flags; dashes in flag names are accepted), reads --config
// when given, applies the flags that were set and validates. Positional arguments are an error.
// --helpfull and --help=SUBSTRING print absl's usage and exit (this is main's parser only); main
// answers --help itself with WorkerFlagsHelp().
absl::StatusOr<WorkerConfig> ParseWorkerCommandLine(int argc, char** argv);

// What `engram-worker --help` prints: the usage line, every flag with its help text, and the
// default configuration as JSON (the keys a --config file uses).
std::string WorkerFlagsHelp();

}  // namespace engram

#endif  // ENGRAM_SERVER_WORKER_CONFIG_H_
