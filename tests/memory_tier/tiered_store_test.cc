// The tiered store: a randomised run against a plain map of the expected rows, promotion into the
// DRAM cache through the admission filter, warm start from statistics, bounded queues, and
// lock-free arena readers racing the promoter.
#include "memory_tier/tiered_store.h"

#include <unistd.h>

#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "memory_tier/dram_tier.h"
#include "memory_tier/nvme_tier.h"
#include "memory_tier/row_file.h"
#include "memory_tier/tier_client.h"
#include "tests/memory_tier/test_model.h"

namespace engram {
namespace {

constexpr uint32_t kRowBytes = 66;  // fp8_e4m3_e8m0 rows of head_dim 64: 64 values + 2 scales

struct Fixture {
  testing::RandomRowFile file;
  const Manifest& manifest = file.manifest;
  std::map<uint64_t, std::vector<uint8_t>> model;  // the plain map the store is checked against
  std::unique_ptr<DramTier> dram;
  std::unique_ptr<NvmeTier> nvme;

  Fixture(uint64_t rows, uint64_t dram_budget, uint32_t ways = 4)
      : file(rows, "fp8_e4m3_e8m0", 64, /*seed=*/rows) {
    for (uint64_t r = 0; r < rows; ++r) {
      model[r] = std::vector<uint8_t>(file.Row(r), file.Row(r) + kRowBytes);
    }
    DramTier::Options o;
    o.shm_name = absl::StrCat("/engram-test-", getpid(), "-store-", rows);
    o.budget_bytes = dram_budget;
    o.ways = ways;
    o.lock = false;
    o.model = manifest.model;
    o.layer = manifest.layer;
    o.version = 1;
    auto d = DramTier::Create(o, rows, kRowBytes);
    EXPECT_TRUE(d.ok()) << d.status();
    dram = std::move(*d);
    if (dram->resident()) {
      EXPECT_TRUE(dram->LoadResident(manifest, file.path).ok());
    }
    auto n = NvmeTier::Open(manifest, file.path, NvmeTier::Options());
    EXPECT_TRUE(n.ok()) << n.status();
    nvme = std::move(*n);
  }

  TableDescription Description() const {
    return testing::ArenaTableDescription(
        *dram, TableKey{manifest.model, manifest.layer, manifest.version}, manifest.layout.rows);
  }
};

// Looks up and compares every row with the model; returns rows served per tier.
std::vector<uint64_t> CheckedLookup(TieredStore& store, const Fixture& f,
                                    const std::vector<uint64_t>& ids) {
  std::vector<uint8_t> out(ids.size() * kRowBytes);
  std::vector<uint64_t> served;
  absl::Status s = store.Lookup(ids, out.data(), &served);
  EXPECT_TRUE(s.ok()) << s;
  uint64_t total = 0;
  for (uint64_t n : served) total += n;
  EXPECT_EQ(total, ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(0, std::memcmp(&out[i * kRowBytes], f.model.at(ids[i]).data(), kRowBytes))
        << "row " << ids[i];
  }
  return served;
}

// Zipf-like ids: a few rows take most lookups.
uint64_t ZipfId(std::mt19937_64& rng, uint64_t rows) {
  std::uniform_real_distribution<double> u(0, 1);
  return static_cast<uint64_t>(std::pow(static_cast<double>(rows), u(rng))) - 1;
}

TEST(TieredStoreTest, RandomisedOperationsMatchAPlainMap) {
  Fixture f(30011, 64 * 1024);
  ASSERT_FALSE(f.dram->resident());
  TieredStore store({f.dram.get(), f.nvme.get()}, f.dram.get(), f.manifest.layout.rows,
                    TieredStore::Options());
  std::mt19937_64 rng(1234);
  uint64_t served_dram = 0, served_nvme = 0;
  for (int op = 0; op < 300; ++op) {
    const int kind = static_cast<int>(rng() % 10);
    if (kind < 7) {
      std::vector<uint64_t> ids(1 + rng() % 700);
      for (auto& id : ids) id = ZipfId(rng, f.manifest.layout.rows);
      auto served = CheckedLookup(store, f, ids);
      served_dram += served[0];
      served_nvme += served[1];
    } else if (kind == 7) {
      std::vector<uint64_t> ids(1 + rng() % 50);
      for (auto& id : ids) id = ZipfId(rng, f.manifest.layout.rows);
      store.RecordExternalHits(ids);
    } else if (kind == 8) {
      store.Flush();
    } else {
      store.DecayStats(0.9);
    }
  }
  store.Flush();
  // The counters agree with what the lookups reported.
  EXPECT_EQ(store.counters(0).hits.load(), served_dram);
  EXPECT_EQ(store.counters(1).hits.load(), served_nvme);
  EXPECT_EQ(store.counters(0).misses.load(), served_nvme);
  EXPECT_GT(store.promotions(), 0u);
  // Zipf traffic with promotion: the DRAM cache serves a real share.
  EXPECT_GT(served_dram, (served_dram + served_nvme) / 5);
  // Out of range is an error, never a crash, and changes no counter.
  std::vector<uint8_t> out(kRowBytes);
  std::vector<uint64_t> served;
  std::vector<uint64_t> bad = {f.manifest.layout.rows};
  EXPECT_EQ(store.Lookup(bad, out.data(), &served).code(), absl::StatusCode::kInvalidArgument);
}

TEST(TieredStoreTest, HotRowsArePromotedAndOneOffRowsDoNotEvictThem) {
  Fixture f(20000, 32 * 1024, /*ways=*/2);
  TieredStore store({f.dram.get(), f.nvme.get()}, f.dram.get(), f.manifest.layout.rows,
                    TieredStore::Options());
  const std::vector<uint64_t> hot = {7, 700, 7000, 17000};
  for (int i = 0; i < 5; ++i) CheckedLookup(store, f, hot);
  store.Flush();
  auto served = CheckedLookup(store, f, hot);
  EXPECT_EQ(served[0], hot.size()) << "hot rows should be in DRAM now";
  // A scan of cold rows, each seen once, must not push the hot rows out (TinyLFU admission).
  std::vector<uint64_t> scan;
  for (uint64_t r = 10000; r < 14000; ++r) scan.push_back(r);
  CheckedLookup(store, f, scan);
  store.Flush();
  served = CheckedLookup(store, f, hot);
  EXPECT_EQ(served[0], hot.size());
  EXPECT_GT(store.rejections(), 0u);
  auto hottest = store.Hottest(4);
  ASSERT_EQ(hottest.size(), 4u);
  for (const RowCount& rc : hottest) {
    EXPECT_TRUE(std::count(hot.begin(), hot.end(), rc.row)) << rc.row;
  }
}

TEST(TieredStoreTest, WarmUpFromStatisticsFillsTheCacheBeforeTraffic) {
  Fixture f(20000, 64 * 1024);
  TieredStore store({f.dram.get(), f.nvme.get()}, f.dram.get(), f.manifest.layout.rows,
                    TieredStore::Options());
  std::vector<RowCount> saved;
  for (uint64_t r = 0; r < 50; ++r) saved.push_back({r * 397, 1000.0 - r});
  store.SeedStats(saved);
  ASSERT_TRUE(store.WarmUp(saved).ok());
  std::vector<uint64_t> ids;
  for (const auto& rc : saved) ids.push_back(rc.row);
  auto served = CheckedLookup(store, f, ids);
  EXPECT_EQ(served[0], ids.size());
  auto top = store.Hottest(1);
  ASSERT_EQ(top.size(), 1u);
  EXPECT_EQ(top[0].row, 0u);
  store.DecayStats(0.5);
  EXPECT_NEAR(store.Hottest(1)[0].count, 500.0, 1.0);
}

TEST(TieredStoreTest, ResidentDramServesEverything) {
  Fixture f(5000, uint64_t{1} << 30);
  ASSERT_TRUE(f.dram->resident());
  TieredStore store({f.dram.get(), f.nvme.get()}, f.dram.get(), f.manifest.layout.rows,
                    TieredStore::Options());
  std::mt19937_64 rng(5);
  for (int i = 0; i < 50; ++i) {
    std::vector<uint64_t> ids(100);
    for (auto& id : ids) id = rng() % 5000;
    auto served = CheckedLookup(store, f, ids);
    EXPECT_EQ(served[0], 100u);
    EXPECT_EQ(served[1], 0u);
  }
  store.Flush();
  EXPECT_EQ(store.counters(1).lookups.load(), 0u);  // NVMe never asked
  EXPECT_EQ(store.promotions(), 0u);                // nothing to promote into a resident arena
  EXPECT_EQ(store.Hottest(10).size(), 10u);         // but every access is counted
}

// Co-located readers race the promoter over a tiny cache that evicts constantly: every row a
// reader gets must be the right one (the seqlock discards torn copies as misses).
TEST(TieredStoreTest, ArenaReadersNeverSeeTornRowsWhileThePromoterWrites) {
  Fixture f(4000, 16 * 1024, /*ways=*/2);
  TieredStore store({f.dram.get(), f.nvme.get()}, f.dram.get(), f.manifest.layout.rows,
                    TieredStore::Options());
  f.dram->MarkReady();
  auto reader = ArenaReader::Open(f.Description());
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> hits{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      std::vector<uint8_t> out(64 * kRowBytes);
      while (!stop.load()) {
        std::vector<uint64_t> ids(64);
        for (auto& id : ids) id = rng() % 4000;
        std::vector<uint32_t> missing;
        ASSERT_TRUE((*reader)->Lookup(ids, out.data(), &missing).ok());
        for (size_t i = 0, m = 0; i < ids.size(); ++i) {
          if (m < missing.size() && missing[m] == i) {
            ++m;
            continue;
          }
          ASSERT_EQ(0, std::memcmp(&out[i * kRowBytes], f.model.at(ids[i]).data(), kRowBytes));
          hits.fetch_add(1);
        }
      }
    });
  }
  std::mt19937_64 rng(99);
  for (int round = 0; round < 200; ++round) {
    std::vector<uint64_t> ids(100);
    for (auto& id : ids) id = rng() % 4000;
    CheckedLookup(store, f, ids);
    CheckedLookup(store, f, ids);  // seen twice: admitted over colder residents
  }
  store.Flush();
  stop = true;
  for (auto& th : readers) th.join();
  EXPECT_GT(store.promotions(), 100u);
  EXPECT_GT(hits.load(), 0u);
}

}  // namespace
}  // namespace engram
