#include "memory_tier/tier_server.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/grpc_tls.h"
#include "common/log.h"
#include "common/metrics_server.h"
#include "common/status.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "memory_tier/catalog.h"
#include "memory_tier/memory_tier_service.h"
#include "memory_tier/table_set.h"
#include "memory_tier/tier_metrics.h"

namespace engram {
namespace {

constexpr char kServiceName[] = "engram.v1.MemoryTier";

double SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<TierServer>> TierServer::Start(const TierConfig& config) {
  ENGRAM_RETURN_IF_ERROR(config.Validate());
  // TLS files are read first: a missing one fails the start before anything is bound or opened.
  ENGRAM_ASSIGN_OR_RETURN(
      std::shared_ptr<grpc::ServerCredentials> credentials,
      MakeServerCredentials(
          {config.server.tls_cert, config.server.tls_key, config.server.tls_client_ca}));
  auto s = std::unique_ptr<TierServer>(new TierServer());
  s->config_ = config;
  s->metrics_ = std::make_unique<TierMetrics>(std::make_shared<prometheus::Registry>());
  s->metrics_->state->Set(0);
  if (config.server.metrics_port >= 0) {
    s->metrics_server_ = std::make_unique<MetricsServer>(s->metrics_->registry());
    TierServer* raw = s.get();
    s->metrics_server_->SetBeforeScrape([raw] {
      if (raw->lifecycle_.state() == LifecycleState::kReady) raw->tables_->UpdateGauges();
    });
    ENGRAM_RETURN_IF_ERROR(
        s->metrics_server_->Start(config.server.metrics_host, config.server.metrics_port));
  }
  ENGRAM_ASSIGN_OR_RETURN(s->catalog_, Catalog::Open(config.store.dir, Catalog::Mode::kReadWrite));

  MemoryTierService::Options so;
  so.max_batch_rows = config.server.max_batch_rows;
  // Room for the response's other fields and framing beside the rows.
  so.max_response_row_bytes = static_cast<uint64_t>(config.server.max_message_bytes) - 4096;
  so.max_unsent_bytes_per_stream = static_cast<uint64_t>(config.server.max_message_bytes);
  so.lookup_threads = config.server.lookup_threads;
  so.max_pending_per_stream = config.server.max_pending_per_stream;
  s->service_ = std::make_unique<MemoryTierService>(so, s->metrics_.get());
  grpc::EnableDefaultHealthCheckService(true);
  // The plugin is process-wide and read when a builder is created: set it per server.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (!config.server.reflection) {
    builder.SetOption(NoReflectionOption());
  }
  builder.AddListeningPort(config.server.listen, credentials, &s->port_);
  builder.RegisterService(s->service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.server.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(config.server.max_message_bytes));
  // Workers ping every 10 s (keepalive, also on an idle connection) to notice a hung tier; accept
  // pings every 5 s without counting them as abuse (gRPC's default allows one per 5 minutes).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || s->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", config.server.listen, " (address in use?)"));
  }
  grpc::HealthCheckServiceInterface* health = s->server_->GetHealthCheckService();
  // "" and engram.v1.MemoryTier follow the lifecycle; each table also has its own service name,
  // engram.v1.MemoryTier/<model>/<layer>, SERVING only while the tier is ready and the table is
  // served (a refused version is NOT_SERVING there, while the other tables are served).
  auto set_health = [health, raw = s.get()](bool serving) {
    health->SetServingStatus(serving);
    health->SetServingStatus(kServiceName, serving);
    if (raw->tables_) {
      for (const auto& t : raw->tables_->tables()) {
        health->SetServingStatus(TableHealthServiceName(t->record.model, t->record.layer),
                                 serving && t->serving);
      }
    }
  };
  set_health(false);
  TierMetrics* metrics = s->metrics_.get();
  s->lifecycle_.OnChange([set_health, metrics](LifecycleState state) {
    set_health(state == LifecycleState::kReady);
    metrics->state->Set(static_cast<double>(state));
    ENGRAM_LOG(INFO).With("state", std::string(LifecycleStateName(state))) << "lifecycle";
  });
  ENGRAM_LOG(INFO)
          .With("addr", config.server.listen)
          .With("port", s->port_)
          .With("metrics_port", s->metrics_port())
      << "listening; loading tables";

  auto tables = TableSet::Load(*s->catalog_, config, s->metrics_.get());
  if (!tables.ok()) {
    s->server_->Shutdown();
    return Annotate(tables.status(), "loading tables");
  }
  s->tables_ = std::move(*tables);
  s->service_->SetTables(s->tables_.get());
  s->last_flush_ = SteadySeconds();
  s->stats_thread_ = std::thread([raw = s.get()] { raw->StatsLoop(); });
  s->lifecycle_.Set(LifecycleState::kReady);
  return s;
}

TierServer::~TierServer() { Shutdown(); }

std::string TableHealthServiceName(absl::string_view model, uint32_t layer) {
  return absl::StrCat(kServiceName, "/", model, "/", layer);
}

int TierServer::metrics_port() const { return metrics_server_ ? metrics_server_->port() : -1; }

void TierServer::StatsLoop() {
  const absl::Duration interval = absl::Seconds(config_.placement.stats_flush_interval_s);
  while (!stop_stats_.WaitForNotificationWithTimeout(interval)) {
    if (!config_.placement.persist_stats) continue;
    absl::Status s = FlushStats();
    if (!s.ok()) {
      ENGRAM_LOG(WARNING).With("error", s.message()) << "persisting statistics failed";
    }
  }
}

absl::Status TierServer::FlushStats() {
  absl::MutexLock lock(&flush_mu_);
  if (!tables_) return absl::OkStatus();
  for (auto& t : tables_->tables()) {
    if (t->serving) t->store->Flush();
  }
  const double now = SteadySeconds();
  absl::Status s = tables_->FlushStats(*catalog_, now - last_flush_);
  last_flush_ = now;
  return s;
}

void TierServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_) {
    lifecycle_.Set(LifecycleState::kDraining);
    service_->StartDrain();
    // Streams end by themselves once their batches are answered; give them the drain timeout so
    // their final UNAVAILABLE reaches the clients before the transport closes.
    const absl::Time deadline = absl::Now() + absl::Seconds(config_.server.drain_timeout_s);
    if (!service_->WaitForStreams(deadline)) {
      ENGRAM_LOG(WARNING) << "drain timeout: cancelling the remaining streams";
    }
    server_->Shutdown(absl::ToChronoTime(deadline));
    server_->Wait();
  }
  if (stats_thread_.joinable()) {
    stop_stats_.Notify();
    stats_thread_.join();
  }
  if (tables_ && config_.placement.persist_stats) {
    absl::Status s = FlushStats();
    if (!s.ok()) {
      ENGRAM_LOG(WARNING).With("error", s.message()) << "persisting statistics failed";
    }
  }
  lifecycle_.Set(LifecycleState::kStopped);
  if (metrics_server_) metrics_server_->Stop();
  server_.reset();
  service_.reset();  // nothing is queued any more: stops the lookup threads
  if (tables_) tables_->Retire();
  tables_.reset();
  catalog_.reset();
}

}  // namespace engram
