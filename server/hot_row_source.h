// File: server/hot_row_source.h
//
// Where the worker's HBM hot-row cache (model/hot_row_cache.h) gets its start-up hot list: the
// memory tier's hottest rows per table, from the Stats RPC. Those are the tier's persisted, decayed
// access counts (a restarted tier reports yesterday's traffic), or the counts `engram table
// profile` wrote from a corpus before the tier started; either way the same RPC. The tables of the
// model's Engram layers are merged into one list of global row ids (GlobalRowIds), hottest first,
// the order HotRowCache::Fill takes.
//
// Bounds: the tier keeps placement.tracked_rows rows per table (default 65,536) and Stats returns
// at most 100,000 per table, so an HBM cache larger than that starts partly empty and fills online.
//
//   ENGRAM_ASSIGN_OR_RETURN(std::vector<HotKeyCount> hot,
//                           FetchTierHotList(*client, model_name, layer_ids, ids, 65536));
//   HotCachePlan plan = cache->Fill(hot);   // then copy plan.loads' rows and upload the map
#ifndef ENGRAM_SERVER_HOT_ROW_SOURCE_H_
#define ENGRAM_SERVER_HOT_ROW_SOURCE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "memory_tier/tier_client.h"
#include "model/hot_row_cache.h"

namespace engram {

namespace v1 {
class StatsResponse;
}

// The hot list in a Stats response: rows of `model`'s tables whose layer is in `layer_ids`
// (index i = Engram layer index i of `ids`), as global keys, hottest first (ties by key). Rows
// outside their table and tables of other models or layers are ignored.
std::vector<HotKeyCount> HotListFromStats(const v1::StatsResponse& stats, const std::string& model,
                                          absl::Span<const int> layer_ids, const GlobalRowIds& ids);

// Asks the tier (Stats with top_rows) and converts as above. The RPC's errors pass through
// (UNAVAILABLE while the tier is loading or away).
absl::StatusOr<std::vector<HotKeyCount>> FetchTierHotList(TierClient& client,
                                                          const std::string& model,
                                                          absl::Span<const int> layer_ids,
                                                          const GlobalRowIds& ids,
                                                          uint32_t top_rows);

}  // namespace engram

#endif  // ENGRAM_SERVER_HOT_ROW_SOURCE_H_
