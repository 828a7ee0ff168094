// engram-worker: the public inference server (docs/architecture.md contract 1).
//
//   engram-worker --model DIR --memory HOST:PORT [--listen HOST:PORT] [--metrics-port P] ...
//
// Start-up: parse and print the config, serve /metrics and gRPC at once (health NOT_SERVING while
// loading), load the model, start the scheduler, connect to the memory tier in the background.
// Health turns SERVING when the model is loaded and the tier is connected, and back to NOT_SERVING
// whenever the tier goes away. SIGTERM/SIGINT drain: health NOT_SERVING, new requests refused,
// running ones finish within --drain-timeout (then they are ended), then the process exits.
// The request path itself: inference_service.cc -> scheduler.cc -> model/cpu_backbone.cc.
#include <cstdio>
#include <fstream>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/flags_help.h"
#include "common/grpc_tls.h"
#include "common/lifecycle.h"
#include "common/log.h"
#include "common/metrics_server.h"
#include "common/status.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "model/backbone_factory.h"
#include "model/model.h"
#include "model/model_config.h"
#include "server/inference_service.h"
#include "server/openai_api.h"
#include "server/scheduler.h"
#include "server/tier_rows.h"
#include "server/worker_config.h"
#include "server/worker_metrics.h"

namespace engram {
namespace {

constexpr char kServiceName[] = "engram.v1.Inference";

absl::Status WritePortFile(const std::string& path, int grpc_port, int metrics_port,
                           int http_port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << "{\"grpc\": " << grpc_port << ", \"metrics\": " << metrics_port
        << ", \"http\": " << http_port << "}\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

// libprotobuf reports what it refuses (e.g. a request string that is not UTF-8, which the client
// gets back as INVALID_ARGUMENT) on raw stderr lines; they go through the worker's logfmt log.
void LogProtobufMessage(google::protobuf::LogLevel level, const char* file, int line,
                        const std::string& message) {
  const LogLevel ours =
      level >= google::protobuf::LOGLEVEL_ERROR ? LogLevel::kWarning : LogLevel::kInfo;
  if (ours >= GetLogLevel()) LogLine(ours, file, line).With("source", "protobuf") << message;
}

// Health follows two facts: the worker is ready (model loaded, not draining) and the memory tier
// is usable. Both can change on different threads.
class HealthState {
 public:
  explicit HealthState(grpc::HealthCheckServiceInterface* health) : health_(health) { Publish(); }
  void SetReady(bool ready) { Update(&ready_, ready); }
  void SetTierUp(bool up) { Update(&tier_up_, up); }

 private:
  void Update(bool* field, bool value) {
    absl::MutexLock lock(&mu_);
    *field = value;
    Publish();
  }
  void Publish() {
    const bool serving = ready_ && tier_up_;
    health_->SetServingStatus("", serving);
    health_->SetServingStatus(kServiceName, serving);
  }

  absl::Mutex mu_;
  grpc::HealthCheckServiceInterface* health_;
  bool ready_ = false;
  bool tier_up_ = false;
};

absl::Status Run(const WorkerConfig& config, Lifecycle& lifecycle) {
  // The config alone (cheap) gives the metric labels, so /metrics is up while the model loads.
  ENGRAM_ASSIGN_OR_RETURN(ModelConfig model_config, LoadModelConfig(config.model.dir));
  if (model_config.has_engram() && config.memory_tier.address.empty()) {
    return absl::InvalidArgumentError(
        "the model has Engram layers: --memory HOST:PORT is required");
  }
  auto registry = std::make_shared<prometheus::Registry>();
  WorkerMetrics metrics(registry, model_config.engram.layer_ids, model_config.name);
  MetricsServer metrics_server(registry);
  if (config.server.metrics_port >= 0) {
    ENGRAM_RETURN_IF_ERROR(
        metrics_server.Start(config.server.metrics_host, config.server.metrics_port));
  }

  InferenceServiceOptions service_options;
  service_options.limits.max_context_tokens = config.scheduler.max_context_tokens > 0
                                                  ? config.scheduler.max_context_tokens
                                                  : model_config.max_position_embeddings;
  service_options.limits.max_context_tokens =
      std::min(service_options.limits.max_context_tokens, model_config.max_position_embeddings);
  service_options.limits.default_max_tokens = config.scheduler.default_max_tokens;
  service_options.memory_tier_address = config.memory_tier.address;
  InferenceService service(metrics, service_options);
  metrics.SetLimits(config.scheduler.max_running_requests, config.scheduler.max_queued_requests,
                    service_options.limits.max_context_tokens);
  OpenAiApi http(metrics,
                 MakeOpenAiApiOptions(config, service_options.limits, model_config.name));
  if (config.http.port >= 0) ENGRAM_RETURN_IF_ERROR(http.Start(config.http.host, config.http.port));

  ENGRAM_ASSIGN_OR_RETURN(
      std::shared_ptr<grpc::ServerCredentials> credentials,
      MakeServerCredentials(
          {config.server.tls_cert, config.server.tls_key, config.server.tls_client_ca}));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (!config.server.reflection) builder.SetOption(NoReflectionOption());
  int grpc_port = 0;
  builder.AddListeningPort(config.server.listen, credentials, &grpc_port);
  builder.SetMaxReceiveMessageSize(config.server.max_receive_message_bytes);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", config.server.listen, " (port in use?)"));
  }
  HealthState health(server->GetHealthCheckService());
  ENGRAM_LOG(INFO)
          .With("listen", config.server.listen)
          .With("grpc_port", grpc_port)
          .With("metrics_port", metrics_server.port())
          .With("http_port", config.http.port >= 0 ? http.port() : -1)
      << "serving gRPC (NOT_SERVING until the model and the memory tier are ready)";
  if (!config.server.port_file.empty()) {
    ENGRAM_RETURN_IF_ERROR(
        WritePortFile(config.server.port_file, grpc_port, metrics_server.port(),
                      config.http.port >= 0 ? http.port() : -1));
  }

  const absl::Time load_start = absl::Now();
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<const Model> model, Model::Load(config.model.dir));
  BackboneOptions backbone_options;
  backbone_options.device = config.model.device;
  backbone_options.threads = config.model.threads;
  backbone_options.gpu_memory_fraction = config.model.gpu_memory_fraction;
  backbone_options.cuda_graphs = config.model.cuda_graphs;
  backbone_options.max_batch_sequences = config.scheduler.max_running_requests;
  backbone_options.max_step_tokens = config.scheduler.max_step_tokens;
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<Backbone> backbone_owner,
                          CreateBackbone(*model, backbone_options));
  Backbone& backbone = *backbone_owner;
  ENGRAM_LOG(INFO)
          .With("model", model->name())
          .With("device", backbone.device_name())
          .With("layers", model_config.num_hidden_layers)
          .With("engram_layers", model_config.engram.layer_ids.size())
          .With("seconds", absl::ToDoubleSeconds(absl::Now() - load_start))
      << "model loaded";

  std::unique_ptr<TierRowBackend> rows;
  if (model_config.has_engram()) {
    TierRowBackendOptions tier;
    tier.address = config.memory_tier.address;
    tier.shared_memory = config.memory_tier.shared_memory;
    tier.reconnect_initial_backoff = config.memory_tier.reconnect_initial_backoff;
    tier.reconnect_max_backoff = config.memory_tier.reconnect_max_backoff;
    tier.max_rows_per_batch = config.memory_tier.max_rows_per_batch;
    tier.tls = {config.memory_tier.tls_ca, config.memory_tier.tls_cert, config.memory_tier.tls_key};
    rows = std::make_unique<TierRowBackend>(*model, tier, metrics);
    rows->SetListener([&health](bool up) { health.SetTierUp(up); });
  } else {
    health.SetTierUp(true);
  }

  SchedulerOptions scheduler_options;
  scheduler_options.max_running_requests = config.scheduler.max_running_requests;
  scheduler_options.max_queued_requests = config.scheduler.max_queued_requests;
  scheduler_options.prefill_chunk_tokens = config.scheduler.prefill_chunk_tokens;
  scheduler_options.max_step_tokens = config.scheduler.max_step_tokens;
  scheduler_options.max_context_tokens = service_options.limits.max_context_tokens;
  scheduler_options.rows_timeout = config.memory_tier.rows_timeout;
  scheduler_options.cold_rows =
      config.scheduler.cold_rows == "wait" ? ColdRows::kWaitInStep : ColdRows::kSitOut;
  Scheduler scheduler(*model, backbone, rows.get(), metrics, scheduler_options);
  scheduler.Start();
  service.Attach(model.get(), &scheduler);
  http.SetReadiness([&lifecycle, tier = rows.get()]() -> absl::Status {
    if (lifecycle.state() != LifecycleState::kReady) {
      return absl::UnavailableError(
          absl::StrCat("the worker is ", std::string(LifecycleStateName(lifecycle.state()))));
    }
    return tier != nullptr ? tier->Ready() : absl::OkStatus();
  });
  http.Attach(model.get(), &scheduler);
  if (rows) rows->Start();

  lifecycle.Set(LifecycleState::kReady);  // no-op when a signal already started the drain
  health.SetReady(lifecycle.state() == LifecycleState::kReady);
  lifecycle.WaitFor(LifecycleState::kDraining);

  // Drain: refuse new work, let running requests finish, then end what is left.
  ENGRAM_LOG(INFO)
          .With("running", scheduler.running())
          .With("queued", scheduler.queued())
          .With("timeout", absl::FormatDuration(config.server.drain_timeout))
      << "draining";
  // Refuse first, then report NOT_SERVING: a client that sees NOT_SERVING is never accepted.
  scheduler.StopAccepting();
  health.SetReady(false);
  if (!scheduler.WaitIdle(absl::Now() + config.server.drain_timeout)) {
    ENGRAM_LOG(WARNING) << "drain timeout: ending the remaining requests";
  }
  scheduler.Stop(absl::UnavailableError("the worker shut down before the request finished"));
  http.Stop();  // after every HTTP stream wrote its last event
  // Every stream got its last message. gRPC's graceful shutdown also waits for idle client
  // connections to go away, which clients holding a channel never do: a short grace, then the
  // library closes them.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server->Wait();
  rows.reset();  // no RPC can reach the scheduler now; ends the tier's reconnect thread
  metrics_server.Stop();
  lifecycle.Set(LifecycleState::kStopped);
  ENGRAM_LOG(INFO) << "stopped";
  return absl::OkStatus();
}

}  // namespace
}  // namespace engram

int main(int argc, char** argv) {
  if (engram::HelpRequested(argc, argv)) {
    std::fputs(engram::WorkerFlagsHelp().c_str(), stdout);
    return 0;
  }
  engram::Lifecycle lifecycle;
  // First, before any other thread exists, so every thread inherits the blocked signals.
  engram::SignalWatcher signals([&lifecycle](int signal) {
    ENGRAM_LOG(INFO).With("signal", signal) << "termination signal received";
    lifecycle.Set(engram::LifecycleState::kDraining);  // states only move forward
  });
  auto config = engram::ParseWorkerCommandLine(argc, argv);
  if (!config.ok()) {
    std::fprintf(stderr, "engram-worker: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  engram::LogLevel level;
  engram::ParseLogLevel(config->log_level, &level);
  engram::SetLogLevel(level);
  google::protobuf::SetLogHandler(engram::LogProtobufMessage);
  // Paths need not be UTF-8: replace what JSON cannot carry rather than throw.
  ENGRAM_LOG(INFO).With(
      "config", config->ToJson().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace))
      << "engram-worker starting";
  absl::Status status = engram::Run(*config, lifecycle);
  if (!status.ok()) {
    ENGRAM_LOG(ERROR).With("code", absl::StatusCodeToString(status.code())) << status.message();
    std::fprintf(stderr, "engram-worker: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
