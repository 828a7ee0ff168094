// File: memory_tier/tier_client.h
//
// The worker's client library for engram-memory (target engram_tier_client). It wraps the
// engram.v1.MemoryTier gRPC API (proto/engram/v1/memory_tier.proto):
//
//   TierClient      connect to an address; TableInfo, Lookup, Stats, health.
//   PrefetchStream  the bidirectional Prefetch stream: Send() queues a batch of row ids and never
//                   waits for the network; each batch's rows (or its error) come back through a
//                   callback or a future, matched by batch_id; a broken stream fails every
//                   pending batch with UNAVAILABLE and says so.
//   ArenaReader     a Tier (memory_tier/tier.h) over the server's shared-memory DRAM arena, for a
//                   worker on the same host: warm rows are read in-process without any RPC; only
//                   the misses go over the stream, and the worker reports its arena hits in later
//                   requests (PrefetchBatch::arena_hits) so the server's statistics stay complete.
//
// What this library does not do (the worker builds it on top): choose when to prefetch,
// reconnect after an outage, per-request deadlines across batches.
//
// Example:
//   ENGRAM_ASSIGN_OR_RETURN(auto client, TierClient::Connect({.address = "127.0.0.1:50052"}));
//   ENGRAM_ASSIGN_OR_RETURN(TableDescription table, client->FindTable("demo", 1));
//   std::unique_ptr<ArenaReader> arena;                       // nullptr when not co-located
//   if (auto a = ArenaReader::Open(table); a.ok()) arena = *std::move(a);
//   auto stream = client->OpenPrefetchStream([](PrefetchResult r) { ... r.rows ... });
//   ENGRAM_RETURN_IF_ERROR(stream->Send({.batch_id = 7, .table = table.key, .row_ids = ids}));
//   ...
//   ENGRAM_RETURN_IF_ERROR(stream->Finish());
#ifndef ENGRAM_MEMORY_TIER_TIER_CLIENT_H_
#define ENGRAM_MEMORY_TIER_TIER_CLIENT_H_

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/grpc_tls.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/row_format.h"
#include "memory_tier/tier.h"

namespace grpc {
class Channel;
}
namespace engram::v1 {
class StatsResponse;
}

namespace engram {

class SharedArena;

// One table as the client names it. version 0 = whatever version the server serves (live).
struct TableKey {
  std::string model;
  uint32_t layer = 0;
  uint64_t version = 0;
};

// The server's DRAM arena of a table (TableInfo.arena); shm_name empty = no DRAM tier.
struct ArenaDescription {
  std::string shm_name;
  uint64_t size_bytes = 0;
  std::string layout;  // "resident" or "cache"
  uint64_t data_offset = 0;
  uint32_t slot_bytes = 0;
  uint64_t slots = 0;
  uint32_t ways = 0;
  uint64_t slot_header_offset = 0;
  std::string host_id;  // the server's LocalHostId()
  uint64_t arena_id = 0;
  bool huge_pages = false;
  bool locked = false;
};

// One table served by engram-memory (TableInfo).
struct TableDescription {
  TableKey key;  // key.version = the version served
  uint64_t rows = 0;
  uint32_t row_bytes = 0;
  RowDType dtype = RowDType::kBF16;  // meaningless when rows == 0 (manifest unreadable)
  int head_dim = 0;
  uint32_t rows_per_page = 0;
  uint32_t page_bytes = 0;
  uint64_t header_bytes = 0;
  std::vector<uint64_t> versions;  // every version in the catalog, ascending
  bool serving = false;            // false: refused at load, see unavailable_reason
  std::string unavailable_reason;
  bool needs_reimport = false;  // a page failed its checksum: see reimport_reason
  std::string reimport_reason;
  uint64_t corrupt_pages = 0;
  ArenaDescription arena;
};

// Rows served per tier ("dram", "nvme", "arena").
struct TierCounts {
  uint64_t dram = 0;
  uint64_t nvme = 0;
  uint64_t arena = 0;
};

// Result of TierClient::Lookup.
struct LookupResult {
  uint64_t version = 0;
  uint32_t row_bytes = 0;
  std::string rows;  // row_ids.size() * row_bytes bytes, row i at i * row_bytes
  TierCounts served_by;
};

// One batch on the Prefetch stream.
struct PrefetchBatch {
  uint64_t batch_id = 0;  // unique among the stream's pending batches
  TableKey table;
  uint64_t sequence_id = 0;          // tracing only
  uint64_t step = 0;                 // tracing only
  std::vector<uint64_t> row_ids;     // may be empty (a pure arena-hit report)
  std::vector<uint64_t> arena_hits;  // rows read from the arena since the last report
  // The table of arena_hits when it is not `table` (model empty = same as `table`).
  TableKey arena_hits_table;
};

// The answer to one PrefetchBatch.
struct PrefetchResult {
  uint64_t batch_id = 0;
  // OK, the batch's own error (e.g. INVALID_ARGUMENT for an id out of range; the stream goes
  // on), UNAVAILABLE when the stream broke before the answer came, CANCELLED after Cancel().
  absl::Status status;
  uint64_t version = 0;
  uint32_t row_bytes = 0;
  std::string rows;  // row_ids.size() * row_bytes bytes in request order
  TierCounts served_by;
  uint64_t server_latency_us = 0;  // receipt to send on the server, queueing included
  uint64_t queue_us = 0;           // of which waiting in the server's queue
  absl::Duration round_trip;       // Send() to the result, measured by the client
};

struct PrefetchStreamOptions {
  // Called once per batch with its result, on a gRPC or library thread: keep it short, and do
  // not call Finish() or destroy the stream from it (both wait for the stream's own threads).
  // Send() from it is fine. When unset, use SendAsync() futures.
  std::function<void(PrefetchResult)> on_result;
  // Called once when the stream ends abnormally (server gone, draining, network), after every
  // pending batch got its UNAVAILABLE result. Not called after Finish() or Cancel(). Same
  // threading rules as on_result: hand the reconnect to another thread.
  std::function<void(const absl::Status&)> on_broken;
};

// The client side of one Prefetch stream. Thread-safe.
class PrefetchStream {
 public:
  virtual ~PrefetchStream() = default;

  // Queues a batch for sending and returns at once (the write happens on a gRPC thread).
  // FAILED_PRECONDITION after Finish()/Cancel(); UNAVAILABLE when the stream is broken;
  // INVALID_ARGUMENT for a batch_id that is already pending. The result goes to on_result.
  virtual absl::Status Send(PrefetchBatch batch) = 0;
  // Like Send, but the result is delivered through the returned future (on_result is not
  // called for it). A batch that cannot be queued yields a ready future with the error.
  virtual std::future<PrefetchResult> SendAsync(PrefetchBatch batch) = 0;
  // Half-closes the stream, waits until every pending batch has its result and the server
  // has finished, and returns the stream's final status (OK after a clean end).
  virtual absl::Status Finish() = 0;
  // Cancels the stream; pending batches complete with CANCELLED. Does not wait.
  virtual void Cancel() = 0;
  // Batches sent and not yet answered.
  virtual size_t pending() const = 0;
  // OK while the stream works; the error once it broke.
  virtual absl::Status status() const = 0;
};

struct TierClientOptions {
  // "host:port" of engram-memory.
  std::string address;
  // Connect() waits this long for the channel to become ready; UNAVAILABLE after. Default 5 s.
  absl::Duration connect_timeout = absl::Seconds(5);
  // Deadline of each unary call (TableInfo, Lookup, Stats). Default 10 s.
  absl::Duration rpc_timeout = absl::Seconds(10);
  // Largest message received (a 12,288-row batch of 264 B rows is 3.2 MB). Default 256 MiB.
  int max_receive_message_bytes = 256 << 20;
  // HTTP/2 keepalive: a ping every keepalive_time (also without calls); no answer within
  // keepalive_timeout closes the connection (streams fail UNAVAILABLE). Zero = off. The server
  // must permit pings this often (engram-memory accepts one every 5 s).
  absl::Duration keepalive_time = absl::ZeroDuration();
  absl::Duration keepalive_timeout = absl::Seconds(5);
  // TLS to the tier (common/grpc_tls.h): the CA that signed its certificate, and a client
  // certificate + key for a tier that requires mutual TLS. Empty = plaintext.
  ClientTlsFiles tls;
  // Name the tier's certificate is checked against, when it is not the address's host (e.g. a
  // test connecting to 127.0.0.1 with a certificate for "engram-memory"). Empty = the host.
  std::string tls_server_name;
};

// A connection to engram-memory. Thread-safe; one instance per process is enough.
class TierClient {
 public:
  // Creates the channel and waits for it to connect (UNAVAILABLE naming the address after
  // connect_timeout).
  static absl::StatusOr<std::unique_ptr<TierClient>> Connect(const TierClientOptions& options);
  virtual ~TierClient() = default;

  // Every table (model empty) or the tables of one model.
  virtual absl::StatusOr<std::vector<TableDescription>> TableInfo(absl::string_view model = "") = 0;
  // The table (model, layer); NOT_FOUND naming it when the server does not have it.
  virtual absl::StatusOr<TableDescription> FindTable(absl::string_view model, uint32_t layer) = 0;
  // Rows of `row_ids` through a unary call (errors as in the proto: INVALID_ARGUMENT,
  // FAILED_PRECONDITION, UNAVAILABLE, ...).
  virtual absl::StatusOr<LookupResult> Lookup(const TableKey& table,
                                              absl::Span<const uint64_t> row_ids) = 0;
  // Per-tier counters and the `top_rows` hottest rows per table.
  virtual absl::StatusOr<v1::StatsResponse> Stats(uint32_t top_rows) = 0;
  // grpc.health.v1 for the MemoryTier service: OK when SERVING, UNAVAILABLE otherwise.
  virtual absl::Status CheckHealth() = 0;
  // Opens a Prefetch stream.
  virtual absl::StatusOr<std::unique_ptr<PrefetchStream>> OpenPrefetchStream(
      PrefetchStreamOptions options) = 0;
  virtual std::shared_ptr<grpc::Channel> channel() const = 0;
};

// A read-only Tier over a table's shared-memory arena, for a client on the server's host.
// Resident arenas serve every row; cache arenas serve what they hold (lock-free seqlock reads)
// and report the rest as missing. Thread-safe.
class ArenaReader : public Tier {
 public:
  // Opens the arena of `table` when co-located: FAILED_PRECONDITION when the table has no arena
  // or its host_id differs from LocalHostId(); NOT_FOUND when the name does not open here (other
  // IPC namespace); FAILED_PRECONDITION when the mapped header disagrees with `table` (arena id,
  // version, geometry). Then use the Prefetch stream for every row instead.
  static absl::StatusOr<std::unique_ptr<ArenaReader>> Open(const TableDescription& table);
  ~ArenaReader() override;

  absl::string_view name() const override { return "arena"; }
  size_t row_bytes() const override { return row_bytes_; }
  absl::Status Lookup(absl::Span<const uint64_t> row_ids, uint8_t* out,
                      std::vector<uint32_t>* missing) override;

  // False once the server retired the arena (shutdown or new version): reopen via TableInfo.
  bool valid() const;
  bool resident() const { return resident_; }
  // The read-only mapping, e.g. for cudaHostRegister(base, size, cudaHostRegisterReadOnly) so
  // GPU kernels can gather resident rows directly: row r at base() + data_offset() + r * stride().
  const uint8_t* base() const;
  size_t size() const;
  uint64_t data_offset() const;
  uint64_t stride() const;

 private:
  ArenaReader() = default;
  std::unique_ptr<SharedArena> arena_;
  size_t row_bytes_ = 0;
  uint64_t rows_ = 0;
  bool resident_ = false;
};

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_TIER_CLIENT_H_
