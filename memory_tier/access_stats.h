// File: memory_tier/access_stats.h
//
// Per-table access statistics, the input of placement (docs/architecture.md contract 3: Zipf-aware
// placement seeded by an offline profile, refined online):
//   - a count-min sketch of 16-bit counters (4 hash rows) estimating how often any row was read
//     recently; all counters halve every `window` recorded accesses, so old popularity fades
//     (TinyLFU's reset). The admission filter compares these estimates;
//   - the hottest rows with decayed counts: a map of at most 2 x tracked_rows entries, pruned to
//     the top tracked_rows when full. A row enters it only when its sketch estimate reaches the
//     smallest count kept at the last prune, so one-off reads do not churn it. These counts are
//     what the catalog persists (a restarted tier starts warm), what Stats reports and what
//     `engram table profile` seeds.
// Not thread-safe: the promoter thread owns it; readers take the owner's lock.
#ifndef ENGRAM_MEMORY_TIER_ACCESS_STATS_H_
#define ENGRAM_MEMORY_TIER_ACCESS_STATS_H_

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "memory_tier/catalog.h"

namespace engram {

class AccessStats {
 public:
  struct Options {
    // Counters per sketch row (rounded up to a power of two, at least 1024). Size it near the
    // number of rows the DRAM cache holds; memory = 4 * 2 bytes * width.
    uint64_t sketch_width = 1 << 16;
    // Hottest rows kept with exact decayed counts.
    size_t tracked_rows = 1 << 16;
  };
  explicit AccessStats(const Options& options);

  // Counts `n` accesses of `row`.
  void Record(uint64_t row, uint32_t n = 1);
  // The sketch's estimate of recent accesses of `row` (never below the true recent count).
  uint32_t Estimate(uint64_t row) const;
  // Multiplies every tracked count by `factor` in (0, 1] (time decay, e.g. 0.5 per half-life).
  void Decay(double factor);
  // The `n` hottest tracked rows, hottest first (ties by row id).
  std::vector<RowCount> Hottest(size_t n) const;
  // Adds persisted or profiled counts (e.g. from the catalog at start).
  void Seed(absl::Span<const RowCount> counts);
  uint64_t accesses() const { return accesses_; }

 private:
  void Prune();
  // Index in sketch_ of the row's counter in sketch row i.
  size_t Slot(uint64_t row, int i) const;
  // Adds n (saturating) to the row's counters; returns the new estimate (their minimum).
  uint32_t AddToSketch(uint64_t row, uint32_t n);

  uint64_t mask_ = 0;
  uint64_t window_ = 0;
  uint64_t since_reset_ = 0;
  uint64_t accesses_ = 0;
  size_t tracked_rows_ = 0;
  double threshold_ = 0;          // smallest count kept at the last prune
  std::vector<uint16_t> sketch_;  // 4 rows of width counters
  absl::flat_hash_map<uint64_t, double> hot_;
};

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_ACCESS_STATS_H_
