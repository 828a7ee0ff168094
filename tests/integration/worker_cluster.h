// Test harness for the worker's end-to-end tests: real engram-memory and engram-worker processes on
// loopback, serving a tiny Engram model that the harness writes (model/demo_model.h) and imports
// (`engram table import`) into a fresh store. The same model is loaded in-process for the reference
// generation (model/local_generate.h).
//
// Binaries come from $ENGRAM_BINARY_DIR (set by ctest); logs go to the test's temp directory and
// are printed when a process fails to come up.
#ifndef ENGRAM_TESTS_INTEGRATION_WORKER_CLUSTER_H_
#define ENGRAM_TESTS_INTEGRATION_WORKER_CLUSTER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/engram_client.h"
#include "grpcpp/security/credentials.h"
#include "model/demo_model.h"
#include "model/model.h"
#include "tests/common/process.h"
#include "tests/model/tiny_model.h"

namespace engram::testing {

// grpc.health.v1 Check of the whole server at `address`: SERVING or not (false when unreachable).
// `credentials` null = plaintext.
bool IsServing(const std::string& address,
               std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

struct ClusterOptions {
  // Worker reads rows through the tier's shared-memory arena (else every row is streamed).
  bool shared_memory = true;
  // Extra engram-worker / engram-memory flags.
  std::vector<std::string> worker_flags;
  std::vector<std::string> memory_flags;
  // Context window of the tiny model: long enough that a generation outlasts the test's
  // reaction (abort, kill) by a wide margin even on a loaded machine.
  int max_position_embeddings = 1024;
  // When set, written as the model's tokenizer_config.json "chat_template".
  std::string chat_template;
  // How the cluster checks engram-memory's health (e.g. TLS credentials with a client certificate
  // when memory_flags turn on mutual TLS). Null = plaintext.
  std::shared_ptr<grpc::ChannelCredentials> memory_credentials;
  // Likewise for the worker's health (worker_flags with --tls-cert). Null = plaintext; Client()
  // is always plaintext.
  std::shared_ptr<grpc::ChannelCredentials> worker_credentials;
};

class WorkerCluster {
 public:
  // Writes and imports the model, starts both processes and waits until the worker is SERVING.
  static absl::StatusOr<std::unique_ptr<WorkerCluster>> Start(ClusterOptions options = {});
  ~WorkerCluster();

  const Model& model() const { return *model_; }
  const std::string& worker_address() const { return worker_address_; }
  const std::string& memory_address() const { return memory_address_; }
  int worker_metrics_port() const { return worker_metrics_port_; }
  // The worker's OpenAI-compatible HTTP API (always started, on a free port).
  int worker_http_port() const { return worker_http_port_; }
  int memory_metrics_port() const { return memory_metrics_port_; }
  const std::string& dir() const { return dir_; }
  // A client of the worker with `timeout` per call.
  std::unique_ptr<EngramClient> Client(absl::Duration timeout = absl::Seconds(60)) const;

  // Kills engram-memory with SIGKILL (an outage, not a drain) and reaps it.
  absl::Status KillMemory();
  // Starts engram-memory again on the same address and store; waits until it is SERVING.
  absl::Status StartMemory();
  // Sends `signal` to engram-memory (SIGSTOP / SIGCONT: a hung tier).
  void SignalMemory(int signal);
  // Sends `signal` to engram-worker / waits for it to exit (its wait status).
  void SignalWorker(int signal);
  absl::StatusOr<int> WaitWorker(absl::Duration timeout);
  // Both logs' tails, for failure messages.
  std::string Logs() const;

 private:
  WorkerCluster() = default;
  absl::Status StartWorker(const ClusterOptions& options);

  std::vector<std::string> memory_flags_;
  std::shared_ptr<grpc::ChannelCredentials> memory_credentials_;

  std::string dir_;
  std::string bin_;
  std::unique_ptr<const Model> model_;
  std::unique_ptr<Process> memory_;
  std::unique_ptr<Process> worker_;
  std::string memory_address_;
  std::string worker_address_;
  int memory_port_ = 0;
  int memory_metrics_port_ = 0;
  int worker_metrics_port_ = 0;
  int worker_http_port_ = 0;
  int memory_starts_ = 0;
};

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_INTEGRATION_WORKER_CLUSTER_H_
