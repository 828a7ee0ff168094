// File: memory_tier/tiered_store.h
//
// One table version served by a cascade of tiers (docs/architecture.md pattern 2): tier 0 gets
// every row id, tier k+1 only what tier k missed; every row is counted by the tier that finally
// served it. The last tier (NVMe) holds every row, so a row missing everywhere is an internal
// error.
//
// Off the request path, one promoter thread per table consumes a bounded queue of access records:
// it updates the access statistics (access_stats.h) and offers rows served below the cache tier
// to the DRAM cache, admitting a row only when its frequency estimate beats the least frequent
// row of its set (TinyLFU). A full queue drops records (counted), never blocks a lookup.
//
//   TieredStore store({dram.get(), nvme.get()}, dram.get(), options);
//   std::vector<uint64_t> served;          // rows per tier
//   ENGRAM_RETURN_IF_ERROR(store.Lookup(ids, out, &served));
#ifndef ENGRAM_MEMORY_TIER_TIERED_STORE_H_
#define ENGRAM_MEMORY_TIER_TIERED_STORE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "memory_tier/access_stats.h"
#include "memory_tier/dram_tier.h"
#include "memory_tier/tier.h"

namespace engram {

// Receives what the cascade did (e.g. to update Prometheus metrics). Called on request threads.
class StoreObserver {
 public:
  virtual ~StoreObserver() = default;
  // Tier `tier` was asked for `asked` rows and served `served` of them in `seconds`.
  virtual void OnTierLookup(size_t tier, uint64_t asked, uint64_t served, uint64_t bytes,
                            double seconds) = 0;
};

// Plain counters per tier, for the Stats RPC.
struct TierCounters {
  std::atomic<uint64_t> lookups{0};  // batches that reached the tier
  std::atomic<uint64_t> hits{0};     // rows served
  std::atomic<uint64_t> misses{0};   // rows passed down
  std::atomic<uint64_t> bytes{0};    // bytes served
};

class TieredStore {
 public:
  struct Options {
    // Rows of access records waiting for the promoter; more are dropped. Default 1 Mi rows.
    size_t queue_rows = 1 << 20;
    // Offer rows served below the cache to the DRAM cache.
    bool promote = true;
    AccessStats::Options stats;
  };

  // `tiers` fastest first, not owned, the last one complete. `cache` (not owned, may be null) is
  // the cache-layout DramTier promotions go into; it must be one of `tiers`.
  TieredStore(std::vector<Tier*> tiers, DramTier* cache, uint64_t rows, const Options& options,
              StoreObserver* observer = nullptr);
  ~TieredStore();
  TieredStore(const TieredStore&) = delete;
  TieredStore& operator=(const TieredStore&) = delete;

  size_t row_bytes() const { return row_bytes_; }
  uint64_t rows() const { return rows_; }
  const std::vector<Tier*>& tiers() const { return tiers_; }

  // The cascade. Writes row_ids[i] to out + i * row_bytes(); `served` gets one count per tier.
  // INVALID_ARGUMENT for an id >= rows(); a tier's failure otherwise. Thread-safe.
  absl::Status Lookup(absl::Span<const uint64_t> row_ids, uint8_t* out,
                      std::vector<uint64_t>* served);
  // Accesses served outside the store (a co-located client's arena reads): statistics only.
  void RecordExternalHits(absl::Span<const uint64_t> row_ids);
  // Blocks until every record queued before the call has been processed.
  void Flush();

  // Loads rows into the cache tier before serving: the given rows (hottest first) are read from
  // the tiers below and offered to the cache through the admission filter. Call before traffic.
  // Rows of a page that fails its checksum are skipped (every other row is loaded) and the first
  // such DATA_LOSS is returned.
  absl::Status WarmUp(absl::Span<const RowCount> hottest);

  // Statistics (thread-safe).
  std::vector<RowCount> Hottest(size_t n);
  void SeedStats(absl::Span<const RowCount> counts);
  void DecayStats(double factor);
  const TierCounters& counters(size_t tier) const { return counters_[tier]; }
  uint64_t promotions() const { return promotions_.load(); }
  uint64_t rejections() const { return rejections_.load(); }
  uint64_t dropped() const { return dropped_.load(); }

 private:
  struct Record {
    std::vector<uint64_t> accessed;       // every row id looked up (or hit externally)
    std::vector<uint64_t> candidates;     // rows served below the cache tier ...
    std::vector<uint8_t> candidate_data;  // ... and their bytes
    uint64_t seq = 0;
  };
  void Enqueue(Record record);
  void PromoterLoop();
  // Admission (TinyLFU) and write; promoter thread or WarmUp only. Requires stats_mu_.
  void Offer(uint64_t row, const uint8_t* data) ABSL_EXCLUSIVE_LOCKS_REQUIRED(stats_mu_);

  std::vector<Tier*> tiers_;
  DramTier* cache_ = nullptr;
  size_t cache_index_ = 0;  // tiers_ index of cache_
  uint64_t rows_ = 0;
  size_t row_bytes_ = 0;
  Options options_;
  StoreObserver* observer_ = nullptr;
  std::vector<TierCounters> counters_;

  absl::Mutex queue_mu_;
  std::deque<Record> queue_ ABSL_GUARDED_BY(queue_mu_);
  size_t queued_rows_ ABSL_GUARDED_BY(queue_mu_) = 0;
  uint64_t enqueued_seq_ ABSL_GUARDED_BY(queue_mu_) = 0;
  uint64_t done_seq_ ABSL_GUARDED_BY(queue_mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(queue_mu_) = false;

  absl::Mutex stats_mu_;
  AccessStats stats_ ABSL_GUARDED_BY(stats_mu_);
  std::vector<uint64_t> set_rows_ ABSL_GUARDED_BY(stats_mu_);

  std::atomic<uint64_t> promotions_{0};
  std::atomic<uint64_t> rejections_{0};
  std::atomic<uint64_t> dropped_{0};
  std::thread promoter_;
};

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_TIERED_STORE_H_
