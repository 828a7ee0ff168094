// File: model/hot_row_cache.h
//
// The host side of the HBM hot-row cache (docs/memory-tier.md, "The HBM hot-row cache"). The
// worker keeps the hottest Engram rows of every layer in a pool of row-sized slots in GPU memory;
// the gather kernel finds a row's slot itself through the slot map (model/hot_slot_map.h), which
// this class builds and keeps current. No CUDA here: the class decides, the caller moves bytes.
//
//   HotRowCache (one per worker, all Engram layers; keys are global row ids, hot_slot_map.h)
//     Fill(hot list)        at start: the tier's hottest rows (its persisted, decayed access
//                           counts, or an `engram table profile` of a corpus) take the free slots
//     Record(keys)          every step: the keys the step looked up (hits and misses counted,
//                           the frequency sketch fed, missed keys become candidates)
//     PlanUpdates(max)      between steps, off the critical path: which candidates replace which
//                           residents (admission below), as a HotCachePlan the device applies
//
// Admission (W-TinyLFU): a count-min sketch (4 x width 16-bit counters, all halved after 10 x width
// recorded accesses) estimates each key's recent frequency. The slots are split into an
// admission window (window_fraction, FIFO) and the main part. A missed key takes a free slot if
// there is one; otherwise it enters the window, whose oldest key then either moves to the main
// part, replacing the main victim, if its estimate is strictly higher than the victim's, or
// leaves. The main victim is the least frequent of `victim_samples` main residents drawn at random
// (sampled LFU). Rows read again soon after a first read (n-grams of the text at hand) are hits
// in the window; a scan of one-off keys only passes through the window and never displaces the
// hot set in the main part (docs/decisions.md). window_fraction = 0 is plain TinyLFU.
//
// Applying a plan on the device (the ordering contract; all on one stream, between steps, no
// gather of the map in between):
//   1. scatter plan.unmap   (entry index -> HotSlot): removes the evicted keys; afterwards no
//                            entry refers to a slot that step 2 overwrites;
//   2. copy plan.loads      row bytes of each key into pool + slot * row_bytes (from the arena or
//                            a staging buffer);
//   3. scatter plan.map     (entry index -> HotSlot): inserts the loaded keys.
// After each step the map is consistent: every key it holds is in its slot with its bytes.
// The host map (map()) already reflects the whole plan when PlanUpdates returns.
//
// Not thread-safe: one owner (the worker's step loop) calls everything.
#ifndef ENGRAM_MODEL_HOT_ROW_CACHE_H_
#define ENGRAM_MODEL_HOT_ROW_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/hot_slot_map.h"

namespace engram {

// ---- Keys
// -----------------------------------------------------------------------------------------

// Global row ids: each Engram layer's table, in layer index order, concatenated.
class GlobalRowIds {
 public:
  // `rows_per_layer`: EngramHashConstants::rows_per_layer (or the tier's table row counts).
  explicit GlobalRowIds(absl::Span<const int64_t> rows_per_layer);
  // The key of row `row` of Engram layer index `layer_index` (both in range).
  uint64_t Key(int layer_index, uint64_t row) const { return bases_[layer_index] + row; }
  // Exclusive prefix sums: bases()[i] = rows of layers 0 .. i-1 (what the kernel adds).
  const std::vector<uint64_t>& bases() const { return bases_; }
  uint64_t total_rows() const { return total_; }
  int num_layers() const { return static_cast<int>(bases_.size()); }

 private:
  std::vector<uint64_t> bases_;
  uint64_t total_ = 0;
};

// A key and its access count (decayed or raw), as the tier reports its hottest rows.
struct HotKeyCount {
  uint64_t key = 0;
  double count = 0;
};

// ---- Sizes
// ----------------------------------------------------------------------------------------

// How a capacity in bytes divides into the pool and the map.
struct HotCacheGeometry {
  uint32_t row_bytes = 0;
  uint64_t slots = 0;        // rows the pool holds
  uint64_t map_entries = 0;  // power of two >= 2 x slots (at least 2)
  uint64_t pool_bytes = 0;   // slots * row_bytes
  uint64_t map_bytes = 0;    // map_entries * sizeof(HotSlot)
};

// Entries of the map for `slots` slots: the smallest power of two >= max(2, 2 x slots).
uint64_t HotMapEntries(uint64_t slots);
// The most slots whose pool and map together fit `capacity_bytes`. INVALID_ARGUMENT for
// row_bytes = 0; more than 2^32 - 2 slots are capped (slot indices are 32-bit).
absl::StatusOr<HotCacheGeometry> HotCacheGeometryFor(uint64_t capacity_bytes, uint32_t row_bytes);
// Geometry for exactly `slots` slots.
HotCacheGeometry HotCacheGeometryForSlots(uint64_t slots, uint32_t row_bytes);

// ---- The map ------------------------------------------------------------------------------------

// The host copy of the slot map: open addressing with linear probing and backward-shift deletion,
// the layout of hot_slot_map.h. Mutations report the entries they changed.
class HotSlotMap {
 public:
  // `entries` must be a power of two >= 2.
  explicit HotSlotMap(uint64_t entries);

  uint64_t mask() const { return mask_; }
  uint64_t size() const { return size_; }
  const std::vector<HotSlot>& entries() const { return entries_; }

  // The slot of `key`, or kHotSlotMiss (HotSlotLookup on entries()).
  uint32_t Find(uint64_t key) const { return HotSlotLookup(entries_.data(), mask_, key); }
  // Inserts `key` -> `slot`; `key` must be absent and the map below half full. Appends the entry
  // index written to `changed`.
  void Insert(uint64_t key, uint32_t slot, std::vector<uint64_t>* changed);
  // Removes `key` if present (false otherwise), shifting the rest of its chain back; appends every
  // entry index written to `changed`.
  bool Erase(uint64_t key, std::vector<uint64_t>* changed);
  // INTERNAL naming the first violation: a key not reachable from its home (an empty entry
  // between), a wrong probe, a duplicate key or slot, a wrong size. For tests.
  absl::Status CheckInvariants() const;

 private:
  std::vector<HotSlot> entries_;
  uint64_t mask_ = 0;
  uint64_t size_ = 0;
};

// ---- Plans --------------------------------------------------------------------------------------

// One map entry to write on the device: map[index] = value.
struct HotMapWrite {
  uint64_t index = 0;
  HotSlot value{kEmptyRow, 0, 0};
};
// One row to copy into the pool: the bytes of `key` go to slot `slot`.
struct HotRowLoad {
  uint64_t key = 0;
  uint32_t slot = 0;
};
// A batch of changes, applied on the device in the order of the header's contract: unmap, loads,
// map. Each list names an entry at most once.
struct HotCachePlan {
  std::vector<HotMapWrite> unmap;
  std::vector<HotRowLoad> loads;
  std::vector<HotMapWrite> map;
  bool empty() const { return unmap.empty() && loads.empty() && map.empty(); }
};

// ---- The cache ----------------------------------------------------------------------------------

struct HotRowCacheCounters {
  uint64_t hits = 0;        // recorded keys found in the map
  uint64_t misses = 0;      // recorded keys not in the map
  uint64_t admissions = 0;  // keys given a slot by PlanUpdates (not Fill)
  uint64_t evictions = 0;   // residents removed to make room
  uint64_t rejections = 0;  // candidates not admitted (their estimate did not beat the victim's)
  uint64_t filled = 0;      // keys placed by Fill
  uint64_t dropped_candidates = 0;  // misses not kept as candidates (the candidate set was full)
  uint64_t occupied_slots = 0;
  uint64_t slots = 0;
  // hits / (hits + misses); 0 before any lookup.
  double hit_rate() const {
    return hits + misses == 0 ? 0.0
                              : static_cast<double>(hits) / static_cast<double>(hits + misses);
  }
};

class HotRowCache {
 public:
  struct Options {
    uint64_t capacity_bytes = 0;  // pool + map, bytes of GPU memory (config: GiB)
    uint32_t row_bytes = 0;       // bytes of one row (common/row_format.h RowBytes)
    // Counters per sketch row (rounded up to a power of two, at least 1024); 0 = 8 x the slots.
    uint64_t sketch_width = 0;
    // Residents sampled when choosing a victim.
    uint32_t victim_samples = 8;
    // Share of the slots that form the admission window (W-TinyLFU): every missed row enters it,
    // and the window's oldest row then moves on to the main part only if it beats a main victim.
    // 0 = no window (plain TinyLFU: a missed row must beat a victim to be cached at all).
    double window_fraction = 0.2;
    // Distinct missed keys kept until the next PlanUpdates; 0 = max(4096, slots / 4).
    size_t max_candidates = 0;
    // Seeds the victim sampling (plans are deterministic for a given seed and input).
    uint64_t seed = 1;
  };

  // INVALID_ARGUMENT for row_bytes = 0 or victim_samples = 0. A capacity below one row gives a
  // cache of 0 slots that misses everything.
  static absl::StatusOr<std::unique_ptr<HotRowCache>> Create(const Options& options);
  // A cache of exactly `slots` slots (the sizing tool; capacity_bytes is ignored).
  static absl::StatusOr<std::unique_ptr<HotRowCache>> CreateWithSlots(Options options,
                                                                      uint64_t slots);

  const HotCacheGeometry& geometry() const { return geometry_; }
  const HotSlotMap& map() const { return map_; }
  // The key in each slot (kEmptyRow for a free slot).
  const std::vector<uint64_t>& slot_keys() const { return slot_keys_; }
  // The slot of `key` or kHotSlotMiss: the host's answer, equal to the device's once plans are
  // applied.
  uint32_t Lookup(uint64_t key) const { return map_.Find(key); }
  HotRowCacheCounters counters() const;

  // Places the keys of `hottest` (hottest first) in free slots of the main part until it is full
  // (the window's share stays free), and seeds the sketch with every count. Keys already cached and
  // kEmptyRow are skipped. Everything lands in plan.loads and plan.map (nothing is unmapped).
  HotCachePlan Fill(absl::Span<const HotKeyCount> hottest);
  // Counts the lookups of one step: hit or miss against the current map, the sketch fed with every
  // key, and missed keys kept as candidates for PlanUpdates.
  void Record(absl::Span<const uint64_t> keys);
  // Admits at most `max_rows` candidates, most frequent first (see the header). Keys in `protect`
  // (e.g. rows an in-flight step was told are in HBM) are never evicted (a protected key at the
  // front of the window is passed over). Candidates not reached
  // because of max_rows stay for the next call; the others are forgotten until they miss again.
  HotCachePlan PlanUpdates(size_t max_rows, absl::Span<const uint64_t> protect = {});
  // The sketch's estimate of the recent frequency of `key`.
  uint32_t Estimate(uint64_t key) const;

 private:
  HotRowCache(const Options& options, const HotCacheGeometry& geometry);
  // The least frequent of `victim_samples` random main-part residents not in `keep`; kHotSlotMiss
  // when none was found.
  uint32_t SampleMainVictim(const absl::flat_hash_set<uint64_t>& keep, uint32_t* estimate);
  // Adds n to the key's sketch counters (saturating) and ages the sketch when its window is full.
  void CountAccess(uint64_t key, uint32_t n);
  size_t SketchIndex(uint64_t key, int i) const;
  uint64_t NextRandom();

  Options options_;
  HotCacheGeometry geometry_;
  HotSlotMap map_;
  std::vector<uint64_t> slot_keys_;
  std::vector<uint32_t> free_slots_;  // a stack; lowest slot on top at start
  uint64_t window_slots_ = 0;
  std::deque<uint32_t> window_;     // slots of the admission window, oldest first
  std::vector<uint8_t> in_window_;  // per slot

  std::vector<uint16_t> sketch_;  // 4 rows of width counters
  uint64_t sketch_mask_ = 0;
  uint64_t sketch_window_ = 0;
  uint64_t since_halving_ = 0;

  absl::flat_hash_set<uint64_t> candidates_;
  uint64_t rng_ = 0;
  HotRowCacheCounters counters_;
};

}  // namespace engram

#endif  // ENGRAM_MODEL_HOT_ROW_CACHE_H_
