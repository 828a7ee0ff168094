#include "server/hot_row_source.h"

#include <algorithm>

#include "engram/v1/memory_tier.pb.h"

namespace engram {

std::vector<HotKeyCount> HotListFromStats(const v1::StatsResponse& stats, const std::string& model,
                                          absl::Span<const int> layer_ids,
                                          const GlobalRowIds& ids) {
  std::vector<HotKeyCount> out;
  for (const v1::TableStats& t : stats.tables()) {
    if (t.table().model() != model) continue;
    auto it = std::find(layer_ids.begin(), layer_ids.end(), static_cast<int>(t.table().layer()));
    if (it == layer_ids.end()) continue;
    const int li = static_cast<int>(it - layer_ids.begin());
    if (li >= ids.num_layers()) continue;
    const uint64_t end = li + 1 < ids.num_layers() ? ids.bases()[li + 1] : ids.total_rows();
    const uint64_t rows = end - ids.bases()[li];
    for (const v1::HotRow& h : t.hottest()) {
      if (h.row_id() < rows) out.push_back({ids.Key(li, h.row_id()), h.count()});
    }
  }
  // Counts of different layers are comparable: each token position reads the same number of rows
  // in every Engram layer.
  std::sort(out.begin(), out.end(), [](const HotKeyCount& a, const HotKeyCount& b) {
    return a.count != b.count ? a.count > b.count : a.key < b.key;
  });
  return out;
}

absl::StatusOr<std::vector<HotKeyCount>> FetchTierHotList(TierClient& client,
                                                          const std::string& model,
                                                          absl::Span<const int> layer_ids,
                                                          const GlobalRowIds& ids,
                                                          uint32_t top_rows) {
  auto stats = client.Stats(top_rows);
  if (!stats.ok()) return stats.status();
  return HotListFromStats(*stats, model, layer_ids, ids);
}

}  // namespace engram
