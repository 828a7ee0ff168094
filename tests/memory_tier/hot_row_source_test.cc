// The HBM hot-row cache's start-up hot list (server/hot_row_source.h) over real gRPC loopback: a
// tier started on a store whose catalog holds access statistics (what a restarted tier persisted,
// or what `engram table profile` wrote) reports them through Stats, they merge into global row
// ids hottest first, and HotRowCache::Fill caches exactly the hottest.
#include "server/hot_row_source.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "engram/v1/memory_tier.pb.h"
#include "gtest/gtest.h"
#include "memory_tier/catalog.h"
#include "memory_tier/importer.h"
#include "memory_tier/tier_server.h"
#include "tests/memory_tier/test_model.h"

namespace engram {
namespace {

TEST(HotRowSourceTest, TierStatisticsFillTheCacheHottestFirst) {
  testing::TempDir tmp;
  const std::string model = tmp.path() + "/model", store = tmp.path() + "/store";
  testing::TestModelSpec spec;  // layers 1 and 3
  ASSERT_TRUE(testing::WriteTestModel(model, spec).ok());
  const std::vector<int64_t> rows = testing::TestModelRows(spec);
  {
    auto catalog = Catalog::Open(store, Catalog::Mode::kReadWrite);
    ASSERT_TRUE(catalog.ok());
    ASSERT_TRUE(ImportModel(**catalog, {.model_dir = model}).ok());
    ASSERT_TRUE((*catalog)->SaveStats("testmodel", 1, {{7, 50}, {8, 20}, {9, 5}}).ok());
    ASSERT_TRUE((*catalog)->SaveStats("testmodel", 3, {{7, 40}, {0, 30}, {1, 10}}).ok());
  }
  TierConfig c;
  c.store.dir = store;
  c.server.listen = "127.0.0.1:0";
  c.server.metrics_port = -1;
  c.dram.bytes = 48 * 1024;
  c.dram.lock = false;
  c.dram.shm_prefix = absl::StrCat("engram-hot-", getpid());
  auto server = TierServer::Start(c);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = TierClient::Connect({.address = absl::StrCat("127.0.0.1:", (*server)->port())});
  ASSERT_TRUE(client.ok()) << client.status();

  const GlobalRowIds ids(rows);
  const std::vector<int> layer_ids = spec.layer_ids;
  auto hot = FetchTierHotList(**client, "testmodel", layer_ids, ids, 100);
  ASSERT_TRUE(hot.ok()) << hot.status();
  const uint64_t l3 = static_cast<uint64_t>(rows[0]);  // layer 3's rows follow layer 1's
  std::vector<std::pair<uint64_t, double>> got;
  for (const HotKeyCount& h : *hot) got.push_back({h.key, h.count});
  const std::vector<std::pair<uint64_t, double>> want = {{7, 50}, {l3 + 7, 40}, {l3 + 0, 30},
                                                         {8, 20}, {l3 + 1, 10}, {9, 5}};
  EXPECT_EQ(got, want);
  // top_rows bounds each table.
  auto top1 = FetchTierHotList(**client, "testmodel", layer_ids, ids, 1);
  ASSERT_TRUE(top1.ok());
  ASSERT_EQ(top1->size(), 2u);
  EXPECT_EQ((*top1)[1].key, l3 + 7);
  // Another model's name, or layers the model does not list, give nothing.
  EXPECT_TRUE(FetchTierHotList(**client, "other", layer_ids, ids, 100)->empty());
  EXPECT_TRUE(FetchTierHotList(**client, "testmodel", std::vector<int>{2}, ids, 100)->empty());

  // The fill: a 5-slot cache (the window's share, 20%, stays free) holds the four hottest keys.
  HotRowCache::Options o;
  o.row_bytes = 64;
  o.window_fraction = 0.2;
  auto cache = HotRowCache::CreateWithSlots(o, 5);
  ASSERT_TRUE(cache.ok());
  const HotCachePlan plan = (*cache)->Fill(*hot);
  EXPECT_EQ(plan.loads.size(), 4u);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ((*cache)->Lookup(want[i].first) != kHotSlotMiss, i < 4) << want[i].first;
  }

  // A tier that is gone: the RPC's error passes through.
  (*server)->Shutdown();
  auto gone = FetchTierHotList(**client, "testmodel", layer_ids, ids, 100);
  EXPECT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kUnavailable) << gone.status();
}

TEST(HotRowSourceTest, RowsOutsideTheirTableAreIgnored) {
  v1::StatsResponse stats;
  auto* t = stats.add_tables();
  t->mutable_table()->set_model("m");
  t->mutable_table()->set_layer(2);
  auto* h = t->add_hottest();
  h->set_row_id(10);  // == the table's row count
  h->set_count(9);
  h = t->add_hottest();
  h->set_row_id(3);
  h->set_count(1);
  const int64_t rows[] = {5, 10};
  const std::vector<HotKeyCount> hot =
      HotListFromStats(stats, "m", std::vector<int>{1, 2}, GlobalRowIds(rows));
  ASSERT_EQ(hot.size(), 1u);
  EXPECT_EQ(hot[0].key, 8u);
}

}  // namespace
}  // namespace engram
