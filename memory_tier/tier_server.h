// File: memory_tier/tier_server.h
//
// The engram-memory process minus main(): /metrics, the catalog, the gRPC server
// (engram.v1.MemoryTier + grpc.health.v1 + reflection), the tables and the statistics flusher,
// with the lifecycle loading -> ready -> draining -> stopped (docs/architecture.md pattern 9).
// Tests and the benchmark run it in-process; memory_tier/main.cc adds flags and signals.
//
//   ENGRAM_ASSIGN_OR_RETURN(auto server, TierServer::Start(config));   // blocks while loading
//   ... server->port() ...
//   server->Shutdown();   // drain: health NOT_SERVING, finish in-flight work, persist statistics
#ifndef ENGRAM_MEMORY_TIER_TIER_SERVER_H_
#define ENGRAM_MEMORY_TIER_TIER_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/notification.h"
#include "common/lifecycle.h"
#include "memory_tier/tier_config.h"

namespace grpc {
class Server;
}

namespace engram {

class Catalog;
class MemoryTierService;
class MetricsServer;
class TableSet;
class TierMetrics;

// The grpc.health.v1 service name of one table: "engram.v1.MemoryTier/<model>/<layer>".
std::string TableHealthServiceName(absl::string_view model, uint32_t layer);

class TierServer {
 public:
  // Starts serving health (NOT_SERVING) and /metrics, loads the tables, then reports SERVING.
  // Errors: an invalid config, a catalog that cannot be opened (e.g. held by an import), an
  // address that cannot be bound.
  static absl::StatusOr<std::unique_ptr<TierServer>> Start(const TierConfig& config);
  ~TierServer();

  int port() const { return port_; }
  int metrics_port() const;
  TableSet* tables() const { return tables_.get(); }

  // Drains and stops: NOT_SERVING, new work refused, open streams end after their batches,
  // in-flight calls get up to server.drain_timeout_s, statistics are persisted, arenas retired.
  // Idempotent; also run by the destructor.
  void Shutdown();
  // Persists the access statistics now (also done every stats_flush_interval_s).
  absl::Status FlushStats();

 private:
  TierServer() = default;
  void StatsLoop();

  TierConfig config_;
  Lifecycle lifecycle_;
  std::unique_ptr<TierMetrics> metrics_;
  std::unique_ptr<MetricsServer> metrics_server_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<MemoryTierService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<TableSet> tables_;
  int port_ = 0;
  absl::Notification stop_stats_;
  std::thread stats_thread_;
  absl::Mutex flush_mu_;
  double last_flush_ = 0;  // steady seconds
  bool shut_down_ = false;
};

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_TIER_SERVER_H_
