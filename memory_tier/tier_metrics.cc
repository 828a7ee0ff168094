#include "memory_tier/tier_metrics.h"

#include "absl/status/status.h"
#include "common/metrics_server.h"
#include "common/process_metrics.h"

namespace engram {

absl::string_view TierKindName(TierKind kind) {
  switch (kind) {
    case TierKind::kDram:
      return "dram";
    case TierKind::kNvme:
      return "nvme";
    case TierKind::kArena:
      return "arena";
  }
  return "unknown";
}

TierMetrics::TierMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)) {
  using prometheus::BuildCounter;
  using prometheus::BuildGauge;
  using prometheus::BuildHistogram;
  prometheus::Registry& r = *registry_;
  auto& rows = BuildCounter()
                   .Name("engram_tier_rows_served_total")
                   .Help("Rows served, by the tier that finally served them")
                   .Register(r);
  auto& bytes = BuildCounter()
                    .Name("engram_tier_bytes_read_total")
                    .Help("Bytes of rows served, by tier")
                    .Register(r);
  auto& lookups = BuildCounter()
                      .Name("engram_tier_lookups_total")
                      .Help("Lookup batches that reached the tier")
                      .Register(r);
  auto& misses = BuildCounter()
                     .Name("engram_tier_misses_total")
                     .Help("Rows the tier did not hold (passed to the tier below)")
                     .Register(r);
  auto& latency = BuildHistogram()
                      .Name("engram_tier_lookup_latency_seconds")
                      .Help("Time of one tier's part of a lookup batch")
                      .Register(r);
  for (int k = 0; k < kNumTierKinds; ++k) {
    const std::map<std::string, std::string> labels = {
        {"tier", std::string(TierKindName(static_cast<TierKind>(k)))}};
    tiers_[k] = TierChildren{&rows.Add(labels), &bytes.Add(labels), &lookups.Add(labels),
                             &misses.Add(labels), &latency.Add(labels, LatencyBucketsSeconds())};
  }
  nvme_queue_depth = &AddGauge(r, "engram_nvme_queue_depth", "NVMe reads in flight");
  nvme_reads =
      &AddCounter(r, "engram_nvme_reads_total", "NVMe reads submitted, resubmissions included");
  nvme_short_reads =
      &AddCounter(r, "engram_nvme_short_reads_total", "NVMe reads resubmitted after a short read");
  nvme_retries =
      &AddCounter(r, "engram_nvme_retries_total", "NVMe reads resubmitted after EAGAIN/EINTR");
  nvme_uring_fallback_readers = &AddGauge(
      r, "engram_nvme_uring_fallback_readers",
      "NVMe readers using pread because io_uring was unavailable (a seccomp profile that blocks "
      "io_uring, e.g. the container runtime's default, or an old kernel): much slower cold reads");
  arenas_unlocked = &AddGauge(
      r, "engram_arena_unlocked",
      "Shared-memory arenas mlock could not pin (RLIMIT_MEMLOCK too low and no CAP_IPC_LOCK): they "
      "may be swapped out");
  AddBuildInfo(r, "memory");
  occupancy_family_ = &BuildGauge()
                           .Name("engram_arena_occupancy_ratio")
                           .Help("Rows held in the table's DRAM arena / rows it can hold")
                           .Register(r);
  arena_bytes_family_ = &BuildGauge()
                             .Name("engram_arena_bytes")
                             .Help("Size of the table's shared-memory arena")
                             .Register(r);
  auto& promo = BuildCounter()
                    .Name("engram_promotion_total")
                    .Help("Rows offered to a DRAM cache, by outcome")
                    .Register(r);
  promotions_admitted = &promo.Add({{"result", "admitted"}});
  promotions_rejected = &promo.Add({{"result", "rejected"}});
  promotions_dropped = &promo.Add({{"result", "dropped"}});
  prefetch_batches = &AddCounter(r, "engram_prefetch_batches_total", "Prefetch batches answered");
  prefetch_batch_errors = &AddCounter(r, "engram_prefetch_batch_errors_total",
                                      "Prefetch batches answered with an error");
  prefetch_batch_latency = &AddLatency(r, "engram_prefetch_batch_latency_seconds",
                                       "Prefetch batch: receipt to response");
  prefetch_queue =
      &AddLatency(r, "engram_prefetch_queue_seconds", "Time a batch waited for a lookup thread");
  prefetch_unsent_bytes = &AddGauge(r, "engram_prefetch_unsent_bytes",
                                    "Prefetch responses not yet taken by their clients, bytes");
  prefetch_paused_streams = &AddGauge(r, "engram_prefetch_paused_streams",
                                      "Prefetch streams not read because their client lags");
  batch_rows = &BuildHistogram()
                    .Name("engram_lookup_batch_rows")
                    .Help("Rows per Lookup or Prefetch batch")
                    .Register(r)
                    .Add({}, prometheus::Histogram::BucketBoundaries{1, 16, 48, 128, 768, 2048,
                                                                     12288, 65536, 262144});
  auto& rpc = BuildCounter()
                  .Name("engram_memory_rpc_total")
                  .Help("MemoryTier RPCs and Prefetch batches by method and gRPC code")
                  .Register(r);
  const char* methods[kNumRpcMethods] = {"Lookup", "Prefetch", "TableInfo", "Stats"};
  for (int m = 0; m < kNumRpcMethods; ++m) {
    for (int c = 0; c < 17; ++c) {
      rpc_[m][c] = &rpc.Add({{"method", methods[m]},
                             {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(c))}});
    }
  }
  auto& tables = BuildGauge().Name("engram_memory_tables").Help("Tables by state").Register(r);
  tables_serving = &tables.Add({{"state", "serving"}});
  tables_refused = &tables.Add({{"state", "refused"}});
  state =
      &AddGauge(r, "engram_memory_state", "Lifecycle: 0 loading, 1 ready, 2 draining, 3 stopped");
  stats_flushes =
      &AddCounter(r, "engram_stats_flushes_total", "Access statistics persisted to the catalog");
  arena_hits_dropped = &AddCounter(
      r, "engram_arena_hits_dropped_total",
      "Reported arena hits not credited to the access statistics (over the stream's budget)");
  corrupt_pages_family_ =
      &BuildCounter()
           .Name("engram_row_file_corrupt_pages_total")
           .Help("Row file pages found failing their checksum, each counted once, by where: read "
                 "(a lookup), scrub, load (a row file refused at load counts 1)")
           .Register(r);
  tables_reimport = &AddGauge(
      r, "engram_memory_tables_needing_reimport",
      "Tables whose live version is marked for re-import (a page failed its checksum)");
  scrub_bytes =
      &AddCounter(r, "engram_scrub_bytes_total", "Row file bytes read and checked by the scrub");
  scrub_passes = &AddCounter(r, "engram_scrub_passes_total",
                             "Scrub passes completed over every served table");
}

std::array<prometheus::Counter*, 3> TierMetrics::AddCorruptPageCounters(
    const std::string& table_label) {
  std::array<prometheus::Counter*, 3> c{};
  const char* sources[3] = {"load", "read", "scrub"};
  for (int i = 0; i < 3; ++i) {
    c[i] = &corrupt_pages_family_->Add({{"table", table_label}, {"source", sources[i]}});
  }
  return c;
}

TierMetrics::TableChildren TierMetrics::AddTable(const std::string& table_label) {
  return TableChildren{&occupancy_family_->Add({{"table", table_label}}),
                       &arena_bytes_family_->Add({{"table", table_label}})};
}

}  // namespace engram
