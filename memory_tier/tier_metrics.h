// File: memory_tier/tier_metrics.h
//
// Every Prometheus metric of engram-memory, declared in one place (docs/architecture.md pattern 8).
// Names are engram_<subsystem>_<what>_<unit>; label children are resolved once (per tier at
// construction, per table when the table loads), never looked up by string on a request path.
//
//   engram_tier_rows_served_total{tier}          rows served, by the tier that finally served them
//                                                (dram, nvme; arena = read by co-located clients)
//   engram_tier_bytes_read_total{tier}           bytes of those rows
//   engram_tier_lookups_total{tier}              batches that reached the tier
//   engram_tier_misses_total{tier}               rows the tier did not have (passed down)
//   engram_tier_lookup_latency_seconds{tier}     time of one tier's part of a batch (histogram)
//   engram_nvme_queue_depth                      reads in flight now (gauge)
//   engram_nvme_reads_total                      reads submitted, resubmissions included
//   engram_nvme_short_reads_total                reads resubmitted after a short read
//   engram_nvme_retries_total                    reads resubmitted after EAGAIN/EINTR
//   engram_nvme_uring_fallback_readers           NVMe readers on pread because io_uring was
//                                                unavailable (seccomp, kernel) (gauge)
//   engram_arena_unlocked                        arenas that mlock could not pin (gauge)
//   engram_arena_occupancy_ratio{table}          rows held / rows the arena can hold
//   engram_arena_bytes{table}                    size of the table's shared-memory arena
//   engram_promotion_total{result}               admitted | rejected | dropped
//   engram_prefetch_batches_total                Prefetch batches answered
//   engram_prefetch_batch_errors_total           ... of which failed
//   engram_prefetch_batch_latency_seconds        receipt to response, per batch (histogram)
//   engram_prefetch_queue_seconds                time a batch waited for a lookup thread
//   engram_prefetch_unsent_bytes                 responses not yet taken by their clients (gauge)
//   engram_prefetch_paused_streams               streams not read: their client lags (gauge)
//   engram_lookup_batch_rows                     rows per Lookup / Prefetch batch (histogram)
//   engram_memory_rpc_total{method,code}         RPCs (and Prefetch batches) by gRPC code
//   engram_memory_tables{state}                  tables serving | refused
//   engram_memory_state                          0 loading, 1 ready, 2 draining, 3 stopped
//   engram_stats_flushes_total                   statistics persisted to the catalog
//   engram_arena_hits_dropped_total              reported arena hits not credited to the
//                                                statistics (over the stream's budget)
//   engram_row_file_corrupt_pages_total{table,source}  row-file pages that failed their
//                                                checksum, each once: source = read (a lookup),
//                                                scrub, load (a file refused at load counts 1)
//   engram_memory_tables_needing_reimport        tables whose live version is marked for
//                                                re-import (gauge)
//   engram_scrub_bytes_total                     row-file bytes checked by the scrub
//   engram_scrub_passes_total                    scrub passes over every served table
//   engram_build_info{component="memory",...}    1 (common/process_metrics.h)
#ifndef ENGRAM_MEMORY_TIER_TIER_METRICS_H_
#define ENGRAM_MEMORY_TIER_TIER_METRICS_H_

#include <array>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace engram {

// The tiers metrics are labelled with.
enum class TierKind { kDram = 0, kNvme = 1, kArena = 2 };
inline constexpr int kNumTierKinds = 3;
absl::string_view TierKindName(TierKind kind);

// The RPCs counted in engram_memory_rpc_total.
enum class RpcMethod { kLookup = 0, kPrefetch = 1, kTableInfo = 2, kStats = 3 };
inline constexpr int kNumRpcMethods = 4;

class TierMetrics {
 public:
  struct TierChildren {
    prometheus::Counter* rows_served;
    prometheus::Counter* bytes_read;
    prometheus::Counter* lookups;
    prometheus::Counter* misses;
    prometheus::Histogram* latency;
  };
  struct TableChildren {
    prometheus::Gauge* occupancy;
    prometheus::Gauge* arena_bytes;
  };

  explicit TierMetrics(std::shared_ptr<prometheus::Registry> registry);

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  TierChildren& tier(TierKind kind) { return tiers_[static_cast<int>(kind)]; }
  // Resolves the per-table children (call once per table, at load).
  TableChildren AddTable(const std::string& table_label);
  // engram_row_file_corrupt_pages_total{table, source} for one table, indexed by
  // CorruptionSource (load, read, scrub); call once per table.
  std::array<prometheus::Counter*, 3> AddCorruptPageCounters(const std::string& table_label);
  // engram_memory_rpc_total{method, code}; all 4 x 17 children exist from the start.
  void CountRpc(RpcMethod method, absl::StatusCode code) {
    rpc_[static_cast<int>(method)][static_cast<int>(code) % 17]->Increment();
  }

  prometheus::Gauge* nvme_queue_depth;
  prometheus::Counter* nvme_reads;
  prometheus::Counter* nvme_short_reads;
  prometheus::Counter* nvme_retries;
  prometheus::Gauge* nvme_uring_fallback_readers;
  prometheus::Gauge* arenas_unlocked;
  prometheus::Counter* promotions_admitted;
  prometheus::Counter* promotions_rejected;
  prometheus::Counter* promotions_dropped;
  prometheus::Counter* prefetch_batches;
  prometheus::Counter* prefetch_batch_errors;
  prometheus::Histogram* prefetch_batch_latency;
  prometheus::Histogram* prefetch_queue;
  prometheus::Gauge* prefetch_unsent_bytes;
  prometheus::Gauge* prefetch_paused_streams;
  prometheus::Histogram* batch_rows;
  prometheus::Gauge* tables_serving;
  prometheus::Gauge* tables_refused;
  prometheus::Gauge* state;
  prometheus::Counter* stats_flushes;
  prometheus::Counter* arena_hits_dropped;
  prometheus::Gauge* tables_reimport;
  prometheus::Counter* scrub_bytes;
  prometheus::Counter* scrub_passes;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::array<TierChildren, kNumTierKinds> tiers_;
  std::array<std::array<prometheus::Counter*, 17>, kNumRpcMethods> rpc_;
  prometheus::Family<prometheus::Gauge>* occupancy_family_;
  prometheus::Family<prometheus::Gauge>* arena_bytes_family_;
  prometheus::Family<prometheus::Counter>* corrupt_pages_family_;
};

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_TIER_METRICS_H_
