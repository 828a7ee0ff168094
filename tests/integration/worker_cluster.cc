#include "tests/integration/worker_cluster.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/engram_config.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "model/demo_model.h"
#include "nlohmann/json.hpp"

namespace engram::testing {

// ---- Helpers -----------------------------------------------------------------------------------

bool IsServing(const std::string& address,
               std::shared_ptr<grpc::ChannelCredentials> credentials) {
  auto channel =
      grpc::CreateChannel(address, credentials ? credentials : grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status s = stub->Check(&context, request, &response);
  return s.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

// ---- WorkerCluster -----------------------------------------------------------------------------

namespace {

absl::Status RunToCompletion(const std::vector<std::string>& argv, const std::string& log) {
  auto p = Process::Start(argv, log);
  if (!p.ok()) return p.status();
  auto status = (*p)->Wait(absl::Seconds(120));
  if (!status.ok()) return status.status();
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return absl::InternalError(
        absl::StrCat(absl::StrJoin(argv, " "), " failed:\n", (*p)->LogTail()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerCluster>> WorkerCluster::Start(ClusterOptions options) {
  auto c = std::unique_ptr<WorkerCluster>(new WorkerCluster());
  const char* bin = std::getenv("ENGRAM_BINARY_DIR");
  if (bin == nullptr)
    return absl::FailedPreconditionError("ENGRAM_BINARY_DIR is not set (run under ctest)");
  c->bin_ = bin;
  const std::string tokenizer = DefaultDemoTokenizerPath();
  if (!std::filesystem::exists(tokenizer)) {
    return absl::FailedPreconditionError(
        absl::StrCat(tokenizer, " is missing: run scripts/fetch-testdata.sh"));
  }
  c->dir_ = absl::StrCat(::testing::TempDir(), "/worker_cluster_", getpid());
  std::filesystem::remove_all(c->dir_);
  std::filesystem::create_directories(c->dir_);

  const std::string model_dir = c->dir_ + "/tiny";
  DemoModelOptions o = TinyModelOptions(options.max_position_embeddings);
  // Unique per process: tests run in parallel, each with its own tier and shared-memory arenas.
  o.model_name = absl::StrCat("tiny-", getpid());
  absl::Status s = WriteDemoModel(model_dir, o);
  if (!s.ok()) return s;
  if (!options.chat_template.empty()) {
    std::ofstream config(model_dir + "/tokenizer_config.json");
    config << nlohmann::json{{"chat_template", options.chat_template}}.dump(2);
    if (!config) return absl::InternalError("cannot write tokenizer_config.json");
  }
  auto model = Model::Load(model_dir);
  if (!model.ok()) return model.status();
  c->model_ = *std::move(model);

  s = RunToCompletion(
      {c->bin_ + "/client/engram", "table", "import", model_dir, "--store", c->dir_ + "/store"},
      c->dir_ + "/import.log");
  if (!s.ok()) return s;

  c->memory_port_ = FreePort();
  c->memory_metrics_port_ = FreePort();
  c->memory_address_ = absl::StrCat("127.0.0.1:", c->memory_port_);
  c->memory_flags_ = options.memory_flags;
  c->memory_credentials_ = options.memory_credentials;
  s = c->StartMemory();
  if (!s.ok()) return s;
  s = c->StartWorker(options);
  if (!s.ok()) return s;
  return c;
}

WorkerCluster::~WorkerCluster() {
  // Drain both the way an operator would (SIGTERM), then make sure.
  for (auto* p : {&worker_, &memory_}) {
    if (*p && (*p)->running()) {
      (*p)->Signal(SIGTERM);
      (void)(*p)->Wait(absl::Seconds(15));
    }
    p->reset();
  }
  std::filesystem::remove_all(dir_);
}

absl::Status WorkerCluster::StartMemory() {
  ++memory_starts_;
  std::vector<std::string> argv = {bin_ + "/memory_tier/engram-memory",
                                   "--store",
                                   dir_ + "/store",
                                   "--listen",
                                   memory_address_,
                                   "--metrics-port",
                                   absl::StrCat(memory_metrics_port_),
                                   "--metrics-host",
                                   "127.0.0.1",
                                   "--shm-prefix",
                                   absl::StrCat("engram-test-", getpid())};
  argv.insert(argv.end(), memory_flags_.begin(), memory_flags_.end());
  auto p = Process::Start(argv, absl::StrCat(dir_, "/memory.", memory_starts_, ".log"));
  if (!p.ok()) return p.status();
  memory_ = *std::move(p);
  if (!WaitUntil([&] { return IsServing(memory_address_, memory_credentials_) || !memory_->running(); },
                 absl::Seconds(60)) ||
      !memory_->running()) {
    return absl::UnavailableError(
        absl::StrCat("engram-memory did not become SERVING:\n", memory_->LogTail()));
  }
  return absl::OkStatus();
}

absl::Status WorkerCluster::KillMemory() {
  memory_->Signal(SIGKILL);
  auto status = memory_->Wait(absl::Seconds(10));
  return status.ok() ? absl::OkStatus() : status.status();
}

void WorkerCluster::SignalMemory(int signal) { memory_->Signal(signal); }

absl::Status WorkerCluster::StartWorker(const ClusterOptions& options) {
  const std::string port_file = dir_ + "/worker.ports.json";
  std::vector<std::string> argv = {
      bin_ + "/server/engram-worker",
      "--model",
      dir_ + "/tiny",
      "--memory",
      memory_address_,
      "--listen",
      "127.0.0.1:0",
      "--metrics-host",
      "127.0.0.1",
      "--metrics-port",
      "0",
      "--port-file",
      port_file,
      "--http-host",
      "127.0.0.1",
      "--http-port",
      "0",
      "--threads",
      "1",
      "--reconnect-initial-backoff",
      "50ms",
      "--reconnect-max-backoff",
      "250ms",
      absl::StrCat("--shared-memory=", options.shared_memory ? "true" : "false")};
  argv.insert(argv.end(), options.worker_flags.begin(), options.worker_flags.end());
  auto p = Process::Start(argv, dir_ + "/worker.log");
  if (!p.ok()) return p.status();
  worker_ = *std::move(p);
  if (!WaitUntil([&] { return std::filesystem::exists(port_file) || !worker_->running(); },
                 absl::Seconds(60)) ||
      !worker_->running()) {
    return absl::UnavailableError(
        absl::StrCat("engram-worker did not start:\n", worker_->LogTail()));
  }
  auto ports = ReadJsonFile(port_file);
  if (!ports.ok()) return ports.status();
  worker_address_ = absl::StrCat("127.0.0.1:", (*ports)["grpc"].get<int>());
  worker_metrics_port_ = (*ports)["metrics"].get<int>();
  worker_http_port_ = (*ports)["http"].get<int>();
  if (!WaitUntil([&] {
        return IsServing(worker_address_, options.worker_credentials) || !worker_->running();
      },
                 absl::Seconds(60)) ||
      !worker_->running()) {
    return absl::UnavailableError(absl::StrCat("engram-worker did not become SERVING:\n", Logs()));
  }
  return absl::OkStatus();
}

std::unique_ptr<EngramClient> WorkerCluster::Client(absl::Duration timeout) const {
  EngramClientOptions o;
  o.timeout = timeout;
  auto client = EngramClient::Connect(worker_address_, o);
  return client.ok() ? *std::move(client) : nullptr;
}

void WorkerCluster::SignalWorker(int signal) { worker_->Signal(signal); }

absl::StatusOr<int> WorkerCluster::WaitWorker(absl::Duration timeout) {
  return worker_->Wait(timeout);
}

std::string WorkerCluster::Logs() const {
  std::string out;
  if (worker_) absl::StrAppend(&out, "---- engram-worker log ----\n", worker_->LogTail(), "\n");
  if (memory_) absl::StrAppend(&out, "---- engram-memory log ----\n", memory_->LogTail(), "\n");
  return out;
}

}  // namespace engram::testing
