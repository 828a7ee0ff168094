// File: memory_tier/table_mrc.h
//
// `engram table mrc`: the hit-rate curves (1 - the miss-ratio curves) of the HBM and DRAM tiers
// for a model's Engram tables over a text corpus, which operators size both tiers from
// (docs/memory-tier.md, "Sizing the tiers"). The corpus goes through the profile's path
// (table_profile.h: documents, tokenizer, compressed ids, row ids from a sequence start) into one
// trace of lookups: position by position, each Engram layer's columns. Each cache size then
// replays the trace through:
//
//   hbm  tinylfu   the worker's HotRowCache (model/hot_row_cache.h, W-TinyLFU) with `slots`
//                  slots, keyed by global row id (all layers in one cache), starting empty: every
//                  `step_positions` positions are one step (Record), then PlanUpdates(update_rows)
//   hbm  static    the oracle: the `slots` rows most read by this very trace, loaded in advance
//   hbm  belady    the optimal demand cache (Belady's MIN: on a miss, drop the row read furthest in
//                  the future, or bypass); an upper bound for any online policy of that size
//   dram tier      engram-memory's DRAM plan and cache: tables resident in layer order while whole
//                  tables fit, the rest sharing the budget as set-associative caches
//                  (arena.h CacheGeometry) with the promoter's TinyLFU admission (AccessStats,
//                  sketch width = the cache's rows), lookups batched per step and layer
//   dram static    per table, its capacity's most read rows in advance
//
// A size is a share of the tables' rows ("5%": the cache that holds that many rows, 100% = every
// row) or bytes ("64M", "2G"): for HBM the pool plus the slot map (HotCacheGeometryFor), for DRAM
// the arenas' budget (dram.bytes: headers, 16-byte slot headers and rows, arena.h). Each point
// reports the rows the cache actually holds.
#ifndef ENGRAM_MEMORY_TIER_TABLE_MRC_H_
#define ENGRAM_MEMORY_TIER_TABLE_MRC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace engram {

// One cache size: a share of the rows (fraction > 0) or a number of bytes.
struct MrcSize {
  double fraction = 0;  // of the tables' rows, in (0, 1]
  uint64_t bytes = 0;
};
// "5%", "0.1%", "4096", "64K", "64M", "2G" (K/M/G are powers of 1024, an optional "iB"/"B").
absl::StatusOr<MrcSize> ParseMrcSize(absl::string_view text);

struct MrcOptions {
  std::string model_dir;    // config.json + tokenizer.json (+ engram_constants.json)
  std::string corpus_path;  // UTF-8 text
  uint64_t max_bytes = 0;   // read at most this much of the corpus (0 = all)
  std::vector<MrcSize> sizes;
  uint32_t row_bytes = 0;         // bytes per row; 0 = the model's own tables' (bf16 without them)
  uint32_t step_positions = 32;   // positions per simulated step
  uint32_t update_rows = 1024;    // HotRowCache::PlanUpdates max_rows per step
  double hbm_window = -1;         // HotRowCache window_fraction; < 0 = its default
  uint32_t dram_ways = 8;         // dram.ways
  uint64_t tracked_rows = 65536;  // placement.tracked_rows
  bool belady = true;
};

struct MrcPoint {
  std::string tier;          // "hbm" | "dram"
  std::string policy;        // "tinylfu" | "static" | "belady" | "tier"
  double size_fraction = 0;  // cache rows / table rows
  uint64_t size_bytes = 0;
  uint64_t rows = 0;  // rows the cache holds
  double hit_rate = 0;
};

struct MrcResult {
  std::string model;
  std::string corpus;
  uint64_t tokens = 0;
  uint64_t lookups = 0;        // trace length
  uint64_t distinct_rows = 0;  // rows read at least once
  uint64_t table_rows = 0;     // all Engram layers
  uint32_t row_bytes = 0;
  std::vector<MrcPoint> points;  // by tier, policy, then size
};

// Errors name the file that is wrong (like the profile) or the size that cannot be used.
absl::StatusOr<MrcResult> ComputeMrc(const MrcOptions& options);

// "tier,policy,size_percent,size_bytes,rows,hit_rate" and one line per point.
std::string MrcCsv(const MrcResult& result);
// A self-contained SVG plot: hit rate (%) against cache size (% of the table's rows, log scale).
std::string MrcSvg(const MrcResult& result);

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_TABLE_MRC_H_
