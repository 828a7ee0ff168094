#include "tests/integration/worker_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/engram_config.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "model/demo_model.h"
#include "nlohmann/json.hpp"

namespace engram::testing {

// ---- Process -----------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Process>> Process::Start(const std::vector<std::string>& argv,
                                                        const std::string& log_path) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execv(args[0], args.data());
    _exit(127);
  }
  auto p = std::unique_ptr<Process>(new Process());
  p->pid_ = pid;
  p->log_path_ = log_path;
  return p;
}

Process::~Process() {
  if (!reaped_) {
    Signal(SIGKILL);
    (void)Wait(absl::Seconds(10));
  }
}

void Process::Signal(int signal) {
  if (!reaped_ && pid_ > 0) kill(pid_, signal);
}

absl::StatusOr<int> Process::Wait(absl::Duration timeout) {
  if (reaped_) return absl::FailedPreconditionError("already reaped");
  int status = 0;
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      return status;
    }
    if (absl::Now() > deadline) return absl::DeadlineExceededError("process still running");
    absl::SleepFor(absl::Milliseconds(10));
  }
}

bool Process::running() {
  if (reaped_) return false;
  int status;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    reaped_ = true;
    return false;
  }
  return true;
}

std::string Process::LogTail(size_t bytes) const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string all = ss.str();
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

// ---- Helpers -----------------------------------------------------------------------------------

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

bool WaitUntil(const std::function<bool()>& condition, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

bool IsServing(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status s = stub->Check(&context, request, &response);
  return s.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(5, 0);
  auto res = client.Get(path.c_str());
  if (!res) return absl::UnavailableError(absl::StrCat("GET 127.0.0.1:", port, path, " failed"));
  if (res->status != 200) {
    return absl::UnavailableError(
        absl::StrCat("GET ", path, ": HTTP ", res->status, " ", res->body));
  }
  return res->body;
}

double MetricValue(const std::string& exposition, const std::string& metric) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(metric, 0) != 0) continue;
    const std::string rest = line.substr(metric.size());
    if (rest.empty() || (rest[0] != ' ' && rest[0] != '{')) continue;
    if (metric.find('{') == std::string::npos && rest[0] == '{') continue;
    return std::strtod(rest.substr(rest.rfind(' ') + 1).c_str(), nullptr);
  }
  return -1;
}

// ---- WorkerCluster -----------------------------------------------------------------------------

DemoModelOptions TinyModelOptions(int max_position_embeddings) {
  DemoModelOptions o;
  o.hidden_size = 32;
  o.intermediate_size = 64;
  o.num_hidden_layers = 2;
  o.num_attention_heads = 2;
  o.num_key_value_heads = 1;
  o.max_position_embeddings = max_position_embeddings;
  o.engram_layer_ids = {0, 1};
  o.engram_n_heads = 2;
  o.engram_head_dim = 16;
  o.engram_vocab_size = 997;
  return o;
}

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
  if (!WaitUntil([&] { return IsServing(memory_address_) || !memory_->running(); },
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
  if (!WaitUntil([&] { return IsServing(worker_address_) || !worker_->running(); },
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
