// The HBM hot-row cache's metrics (WorkerMetrics::RecordHotCache): cumulative cache counts become
// Prometheus counter increments, and the gauges follow the cache.
#include <memory>

#include "gtest/gtest.h"
#include "model/hot_row_cache.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/worker_metrics.h"

namespace engram {
namespace {

std::string Scrape(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

TEST(HotCacheMetricsTest, CountsFollowTheCache) {
  auto registry = std::make_shared<prometheus::Registry>();
  WorkerMetrics metrics(registry, {1, 2}, "m");
  HotRowCache::Options o;
  o.row_bytes = 32;
  o.window_fraction = 0;
  auto cache = HotRowCache::CreateWithSlots(o, 2);
  ASSERT_TRUE(cache.ok());
  (*cache)->Fill({{7, 3}});
  (*cache)->Record(std::vector<uint64_t>{7, 7, 8, 9});
  (*cache)->PlanUpdates(10);  // 8 takes the free slot, 9 is rejected
  metrics.RecordHotCache((*cache)->counters());
  (*cache)->Record(std::vector<uint64_t>{7, 8});
  metrics.RecordHotCache((*cache)->counters());
  metrics.RecordHotCache((*cache)->counters());  // nothing new: nothing added
  const std::string text = Scrape(*registry);
  for (const char* line :
       {"engram_worker_hot_cache_lookups_total{result=\"hit\"} 4",
        "engram_worker_hot_cache_lookups_total{result=\"miss\"} 2",
        "engram_worker_hot_cache_admissions_total 1", "engram_worker_hot_cache_evictions_total 0",
        "engram_worker_hot_cache_rejections_total 1", "engram_worker_hot_cache_hit_ratio 0.666",
        "engram_worker_hot_cache_slots 2", "engram_worker_hot_cache_occupied_slots 2"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  }
}

}  // namespace
}  // namespace engram
