// File: memory_tier/memory_tier_service.h
//
// engram.v1.MemoryTier on the gRPC callback API (no hand-written completion-queue state
// machines). Requests are validated on the gRPC thread and executed by the BatchScheduler's lookup
// threads, earliest Engram layer first; responses go back from there. This file and the worker's
// inference service are the only places that convert absl::Status to grpc::Status.
//
// Prefetch streams: each request is one batch answered by one response with the same batch_id;
// responses leave in completion order. A failed batch carries its error in the response and the
// stream goes on. More than max_pending_per_stream unanswered batches: the extra batch is answered
// RESOURCE_EXHAUSTED. Responses the client has not taken yet are capped per stream
// (max_unsent_bytes_per_stream): at the cap the server stops reading that stream until they
// drain. When the server drains, streams end with UNAVAILABLE once their queued batches are
// answered.
//
// Every method takes its request as bytes and parses it here (common/grpc_message.h): a request
// that is not the method's message is INVALID_ARGUMENT naming the message (on a Prefetch stream,
// the stream ends with it once the batches before it are answered), where gRPC's own handlers
// would answer a bare UNIMPLEMENTED.
#ifndef ENGRAM_MEMORY_TIER_MEMORY_TIER_SERVICE_H_
#define ENGRAM_MEMORY_TIER_MEMORY_TIER_SERVICE_H_

#include <atomic>
#include <memory>
#include <set>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "engram/v1/memory_tier.grpc.pb.h"
#include "memory_tier/batch_scheduler.h"
#include "memory_tier/table_set.h"
#include "memory_tier/tier_metrics.h"

namespace engram {

class PrefetchReactor;
class MemoryTierServicePeer;

// engram.v1.MemoryTier with every method taking and returning serialized messages.
using RawMemoryTierService = v1::MemoryTier::WithRawCallbackMethod_Lookup<
    v1::MemoryTier::WithRawCallbackMethod_Prefetch<v1::MemoryTier::WithRawCallbackMethod_TableInfo<
        v1::MemoryTier::WithRawCallbackMethod_Stats<v1::MemoryTier::Service>>>>;

class MemoryTierService final : public RawMemoryTierService {
 public:
  struct Options {
    uint32_t max_batch_rows = 262144;
    // The rows of one response must fit a gRPC message (server.max_message_bytes); a larger
    // batch is INVALID_ARGUMENT up front instead of a failed send that breaks its stream.
    uint64_t max_response_row_bytes = (256ull << 20) - 4096;
    // Bytes of responses a Prefetch stream may hold unsent (rows of running batches included)
    // before it stops reading its client until writes drain.
    uint64_t max_unsent_bytes_per_stream = 256ull << 20;
    int lookup_threads = 4;
    int max_pending_per_stream = 4096;
  };
  // The arena-hit budget of a Prefetch stream (docs/memory-tier.md, "Arena hits"): a new stream
  // may credit kArenaHitAllowance hits (the worker reports every 4096 hits); each row id it asks
  // for in a batch adds kArenaHitsPerAskedRow more; the balance never exceeds kArenaHitCreditMax.
  // One message credits one row at most kArenaHitsPerRow times.
  static constexpr uint64_t kArenaHitAllowance = 4096;
  static constexpr uint64_t kArenaHitsPerAskedRow = 16;
  static constexpr uint64_t kArenaHitCreditMax = 1u << 22;
  static constexpr uint32_t kArenaHitsPerRow = 256;
  MemoryTierService(const Options& options, TierMetrics* metrics);
  // Runs the queued batches, then stops the lookup threads (destroy after the gRPC server).
  ~MemoryTierService() override;

  // Until this is called every request gets UNAVAILABLE ("loading"). Not owned.
  void SetTables(TableSet* tables);
  // From now on new work gets UNAVAILABLE; open Prefetch streams end once their batches are done.
  void StartDrain();
  // Waits until every Prefetch stream has finished (its final status sent), or `deadline`.
  // Returns whether all did.
  bool WaitForStreams(absl::Time deadline);

  // The unary methods: their engram.v1 request in `request`, the response into `response`.
  grpc::ServerUnaryReactor* Lookup(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* TableInfo(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  // engram.v1.PrefetchRequest messages in, engram.v1.PrefetchResponse messages out.
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Prefetch(
      grpc::CallbackServerContext* context) override;

 private:
  friend class PrefetchReactor;
  // tests/fuzz/tier_request_fuzz.cc: the request checks below, driven without a gRPC call.
  friend class MemoryTierServicePeer;
class MemoryTierServicePeer;

  // The table of a request, or why it cannot be served (loading, draining, unknown, refused,
  // a batch too large for one response).
  absl::StatusOr<ServedTable*> Admit(const v1::TableRef& table, size_t rows);
  // The tables, or nullptr after finishing `reactor` with UNAVAILABLE while they load.
  TableSet* LoadedTables(RpcMethod method, grpc::ServerUnaryReactor* reactor);
  // Finishes `reactor` with `status` (an error), counted for `method`.
  void Fail(RpcMethod method, grpc::ServerUnaryReactor* reactor, const absl::Status& status);
  // Looks up `ids` into `rows` and fills the version, row size and per-tier counts.
  absl::Status RunBatch(ServedTable* table, const google::protobuf::RepeatedField<uint64_t>& ids,
                        std::string* rows, uint64_t* version, uint32_t* row_bytes,
                        google::protobuf::RepeatedPtrField<v1::TierCount>* served_by);
  // Counts a client's arena reads (best effort: an unknown table or id is ignored).
  // Validates a Prefetch message's arena_hits (INVALID_ARGUMENT naming the first row id out of
  // range for its table, or too many ids) and credits them to the statistics within the stream's
  // budget `*credit` (docs/memory-tier.md, "Arena hits"): each row at most kArenaHitsPerRow times
  // per message, and no more hits in all than the budget holds; the rest are dropped and counted.
  absl::Status RecordArenaHits(const v1::PrefetchRequest& request, uint64_t* credit);
  void Register(PrefetchReactor* reactor);
  void Unregister(PrefetchReactor* reactor);

  Options options_;
  TierMetrics* metrics_;
  std::atomic<TableSet*> tables_{nullptr};
  std::atomic<bool> draining_{false};
  std::unique_ptr<BatchScheduler> scheduler_;
  std::string host_id_;
  absl::Mutex streams_mu_;
  std::set<PrefetchReactor*> streams_ ABSL_GUARDED_BY(streams_mu_);
};

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_MEMORY_TIER_SERVICE_H_
