// TierRowBackend: Engram rows from engram-memory, the worker's RowBackend in production.
//
// Connection: a background thread connects to the tier (memory_tier/tier_client.h), checks that it
// serves a table for every Engram layer of the model with the right row count, width and dtype,
// opens the tables' shared-memory arenas when the tier runs on this host (ArenaReader) and opens
// one Prefetch stream. When the stream breaks (the tier died, drains or the network failed) the
// backend turns unavailable at once and reconnects with exponential backoff
// (reconnect_initial_backoff doubling up to reconnect_max_backoff) until the tier is back.
//
// Fetch, per RowFetch:
//   1. co-located: read the rows from the arena (a resident arena holds every row; a cache arena
//      what it has), decode them to f32 and count them as tier "dram_shm";
//   2. the rest goes on the Prefetch stream in batches of at most max_rows_per_batch ids (with the
//      arena hits read since the last report, so the tier's access statistics stay complete);
//   3. each answer is decoded into the fetch's rows on the gRPC thread that delivers it; the
//      fetch completes when its last batch is in.
// A fetch with rows on the stream is marked cold (RowFetch::MarkCold) unless the tier holds the
// table resident in DRAM: those rows come from the tier's NVMe (or may, for a worker on another
// host), and the scheduler lets the sequence sit out until they arrive.
// While the tier is away, fetches fail at once with UNAVAILABLE naming the tier and the reason:
// waiting would hold batch slots through an outage of unknown length, and UNAVAILABLE is the
// code clients retry on. Fetches in flight when the stream breaks fail the same way.
//
// A tier that hangs (stopped, wedged, a network that drops without a reset) is treated the same
// once it is noticed: rows overdue in a step (RowsOverdue, from StepRows) or a keepalive ping
// without an answer (the channel's keepalive closes the stream). The backend is then unavailable
// (Ready() fails, the worker turns NOT_SERVING), pending fetches and fetches that need the stream
// fail at once; rows found in the shared-memory arena are still served. The connect thread probes
// the tier's health until it answers, and any answer on the stream counts too.
//
// A tier that died (the stream broke) leaves its resident arenas mapped here, and their rows are
// immutable: the running sequences keep reading every row of a resident layer from that mapping
// until the backend reconnects (docs/decisions.md, "A worker outlives its tier's restart"). Ready()
// still fails meanwhile, so no new request is admitted, and fetches that need any other row fail
// with UNAVAILABLE as before. A tier that retires its arenas (a clean stop) ends this at once.
#ifndef ENGRAM_SERVER_TIER_ROWS_H_
#define ENGRAM_SERVER_TIER_ROWS_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/grpc_tls.h"
#include "common/row_format.h"
#include "server/engram_rows.h"

namespace engram {

class Model;
class WorkerMetrics;
struct PrefetchResult;

struct TierRowBackendOptions {
  // engram-memory's host:port.
  std::string address;
  // Read rows from the tier's shared-memory arena when co-located.
  bool shared_memory = true;
  absl::Duration reconnect_initial_backoff = absl::Milliseconds(100);
  absl::Duration reconnect_max_backoff = absl::Seconds(5);
  // Row ids per Prefetch message at most.
  int max_rows_per_batch = 8192;
  // TLS to the tier (empty = plaintext).
  ClientTlsFiles tls;
};

// A table resident in a co-located arena, as a GPU reads it in place (EngramDeviceTable).
struct ResidentTable {
  RowDType dtype = RowDType::kBF16;
  int head_dim = 0;
  uint64_t rows = 0;
  const uint8_t* data = nullptr;  // row r at data + r * stride
  uint64_t stride = 0;
  // Keeps the arena mapped while held (a tier that restarts leaves its old arena readable: rows
  // of a version never change).
  std::shared_ptr<const void> mapping;
};

class TierRowBackend : public RowBackend {
 public:
  // `model` and `metrics` must outlive the backend.
  TierRowBackend(const Model& model, TierRowBackendOptions options, WorkerMetrics& metrics);
  // Stops reconnecting, cancels the stream; pending fetches fail with UNAVAILABLE.
  ~TierRowBackend() override;

  // Called with true when the tier becomes usable and false when it goes away, on the backend's
  // threads. Set before Start().
  void SetListener(std::function<void(bool connected)> listener);
  // Starts connecting in the background (returns at once).
  void Start();

  void Fetch(const std::shared_ptr<RowFetch>& fetch, uint64_t sequence_id, uint64_t step) override;
  absl::Status Ready() const override;
  std::string Name() const override;
  void RowsOverdue(const absl::Status& why) override;

  // Every Engram layer's table, when each is resident in a shared-memory arena of this host (index
  // = Engram layer index); UNAVAILABLE before the tier is connected, FAILED_PRECONDITION naming
  // the first table that is not resident here (the tier only caches it, or is on another host).
  absl::StatusOr<std::vector<ResidentTable>> ResidentTables() const;
  // From now on a GPU backbone reads the resident arenas' rows itself, by id (ResidentTables,
  // StepRows rows_by_id): fetches of a table resident in a co-located arena complete at once
  // without copying or decoding rows on the host (their hits still reach the tier's statistics).
  // Rows of other tables are fetched and decoded as usual. Call before the first Fetch.
  void SetRowsReadByDevice(bool on) { rows_read_by_device_.store(on); }

 private:
  struct Connection;
  struct Pending;
  struct ResidentArenas;
  // Serves `fetch` from the resident arenas a dead tier left behind, or fails it with `reason`.
  void FetchResident(const ResidentArenas& resident, const std::shared_ptr<RowFetch>& fetch,
                     const absl::Status& reason);
  void ConnectLoop();
  absl::StatusOr<std::shared_ptr<Connection>> Connect(uint64_t generation);
  void OnResult(uint64_t generation, PrefetchResult result);
  void OnBroken(uint64_t generation, const absl::Status& status);
  void SetConnected(std::shared_ptr<Connection> connection);
  // The tier answered again after RowsOverdue (generation of the connection that answered).
  void Answered(uint64_t generation);
  void NotifyListener();

  const Model& model_;
  const TierRowBackendOptions options_;
  WorkerMetrics& metrics_;
  std::function<void(bool)> listener_;
  absl::Mutex listener_mu_;  // serialises listener calls (taken before mu_)
  std::thread thread_;
  std::atomic<uint64_t> next_batch_id_{1};
  std::atomic<bool> rows_read_by_device_{false};

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<Connection> connection_ ABSL_GUARDED_BY(mu_);
  absl::Status unavailable_reason_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool ever_connected_ ABSL_GUARDED_BY(mu_) = false;
  // connection_ is up but the tier stopped answering (rows overdue): unavailable until it answers.
  bool unresponsive_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<uint64_t, std::shared_ptr<Pending>> pending_ ABSL_GUARDED_BY(mu_);
  // Per Engram layer index: arena hits not yet reported to the tier.
  std::vector<std::vector<uint64_t>> arena_hits_ ABSL_GUARDED_BY(mu_);
  // Connections whose stream broke, released by the connect thread (not inside a callback).
  std::vector<std::shared_ptr<Connection>> retired_ ABSL_GUARDED_BY(mu_);
  // The resident arenas of the last connection while there is none (null when it had none).
  std::shared_ptr<const ResidentArenas> resident_while_away_ ABSL_GUARDED_BY(mu_);
};

}  // namespace engram

#endif  // ENGRAM_SERVER_TIER_ROWS_H_
