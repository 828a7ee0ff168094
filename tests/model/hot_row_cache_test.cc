// The HBM hot-row cache's host side (model/hot_row_cache.h, model/hot_slot_map.h): slot-map
// invariants under random operations against a plain map, every lookup implementation agreeing,
// plans applied in the documented order never exposing a wrong row, admission on Zipf traffic and
// under scans, eviction, protection, the fill from a hot list, sizes.
#include "model/hot_row_cache.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "common/splitmix64.h"
#include "gtest/gtest.h"

namespace engram {
namespace {

// ---- Helpers ------------------------------------------------------------------------------------

// Keys drawn from a Zipf(s) law over [0, n), deterministic for a seed.
class Zipf {
 public:
  Zipf(uint64_t n, double s, uint64_t seed) : cdf_(n), rng_(seed) {
    double sum = 0;
    for (uint64_t i = 0; i < n; ++i) cdf_[i] = (sum += 1.0 / std::pow(i + 1.0, s));
    for (double& c : cdf_) c /= sum;
  }
  // Rank r (0 = hottest) is scrambled to a key, so hot keys are not neighbours.
  uint64_t Next() {
    const double u = UnitInterval(SplitMix64Next(&rng_));
    const uint64_t rank = std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin();
    return KeyOfRank(std::min<uint64_t>(rank, cdf_.size() - 1));
  }
  static uint64_t KeyOfRank(uint64_t rank) { return SplitMix64Mix(rank) >> 24; }
  // Share of draws that fall on the `k` hottest ranks.
  double TopShare(uint64_t k) const { return k == 0 ? 0 : cdf_[std::min(k, cdf_.size()) - 1]; }

 private:
  std::vector<double> cdf_;
  uint64_t rng_;
};

// The device side of the cache as the ordering contract describes it: a copy of the map and a pool
// whose "bytes" are the key written into each slot.
struct FakeDevice {
  FakeDevice(uint64_t entries, uint64_t slots)
      : map(entries, HotSlot{kEmptyRow, 0, 0}), pool(slots, kEmptyRow) {}
  void Scatter(const std::vector<HotMapWrite>& writes) {
    for (const HotMapWrite& w : writes) map[w.index] = w.value;
  }
  // Every key the device map holds is in its slot.
  ::testing::AssertionResult Consistent(const char* phase) const {
    for (size_t i = 0; i < map.size(); ++i) {
      if (map[i].row == kEmptyRow) continue;
      if (pool[map[i].slot] != map[i].row) {
        return ::testing::AssertionFailure()
               << "after " << phase << ": entry " << i << " maps key " << map[i].row << " to slot "
               << map[i].slot << ", which holds " << pool[map[i].slot];
      }
    }
    return ::testing::AssertionSuccess();
  }
  // Applies a plan phase by phase, checking consistency after each.
  ::testing::AssertionResult Apply(const HotCachePlan& plan) {
    Scatter(plan.unmap);
    if (auto r = Consistent("unmap"); !r) return r;
    for (const HotRowLoad& load : plan.loads) pool[load.slot] = load.key;
    if (auto r = Consistent("loads"); !r) return r;
    Scatter(plan.map);
    return Consistent("map");
  }
  std::vector<HotSlot> map;
  std::vector<uint64_t> pool;
};

bool SameEntries(const std::vector<HotSlot>& a, const std::vector<HotSlot>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(HotSlot)) == 0;
}

// ---- Hash and sizes -----------------------------------------------------------------------------

TEST(HotSlotMapTest, HashIsSplitMix64) {
  uint64_t s = 7;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t x = SplitMix64Next(&s);
    ASSERT_EQ(HotSlotMix(x), SplitMix64Mix(x));
    ASSERT_EQ(HotSlotHome(x, 1023), SplitMix64Mix(x) & 1023);
  }
  static_assert(sizeof(HotSlot) == 16 && offsetof(HotSlot, row) == 0 &&
                offsetof(HotSlot, slot) == 8 && offsetof(HotSlot, probe) == 12);
}

TEST(HotSlotMapTest, GeometryFitsTheCapacityAndIsTheLargestThatDoes) {
  for (uint32_t row_bytes : {1u, 19u, 32u, 111u, 264u}) {
    for (uint64_t cap : {uint64_t{0}, uint64_t{31}, uint64_t{33}, uint64_t{1000}, uint64_t{4099},
                         uint64_t{1} << 20, uint64_t{3} << 30}) {
      auto g = HotCacheGeometryFor(cap, row_bytes);
      ASSERT_TRUE(g.ok());
      EXPECT_LE(g->slots == 0 ? 0 : g->pool_bytes + g->map_bytes, cap) << row_bytes << " " << cap;
      const HotCacheGeometry more = HotCacheGeometryForSlots(g->slots + 1, row_bytes);
      EXPECT_GT(more.pool_bytes + more.map_bytes, cap) << row_bytes << " " << cap;
      EXPECT_GE(g->map_entries, 2 * g->slots);
      EXPECT_EQ(g->map_entries & (g->map_entries - 1), 0u);
      EXPECT_EQ(g->pool_bytes, g->slots * row_bytes);
    }
  }
  // 1 GiB of 264-byte rows: the map costs 32-64 bytes per slot.
  auto g = HotCacheGeometryFor(uint64_t{1} << 30, 264);
  ASSERT_TRUE(g.ok());
  EXPECT_GT(g->slots, (uint64_t{1} << 30) / (264 + 64));
  EXPECT_FALSE(HotCacheGeometryFor(1000, 0).ok());
}

TEST(HotSlotMapTest, GlobalRowIdsConcatenateTheLayers) {
  const int64_t rows[] = {401 + 409, 503 + 509, 7};
  GlobalRowIds ids(rows);
  EXPECT_EQ(ids.bases(), (std::vector<uint64_t>{0, 810, 1822}));
  EXPECT_EQ(ids.total_rows(), 1829u);
  EXPECT_EQ(ids.Key(1, 5), 815u);
  EXPECT_EQ(ids.Key(2, 6), 1828u);
}

// ---- The map against a plain map ----------------------------------------------------------------

// Every way of answering a lookup from the map: the host class, and the free function over a byte
// copy of the entries as they are uploaded (the code the kernel runs).
enum class LookupKind { kHostMap, kUploadedBytes };

class HotSlotMapContractTest : public ::testing::TestWithParam<LookupKind> {};

TEST_P(HotSlotMapContractTest, RandomOperationsMatchAPlainMap) {
  // (map entries, slots): awkward slot counts, including tables at exactly half load.
  const std::pair<uint64_t, uint64_t> shapes[] = {
      {2, 1}, {4, 2}, {64, 19}, {256, 111}, {2048, 1024}};
  for (const auto& [entries, max_keys] : shapes) {
    SCOPED_TRACE(::testing::Message() << "entries " << entries << ", keys " << max_keys);
    HotSlotMap map(entries);
    std::unordered_map<uint64_t, uint32_t> model;
    // Keys forced into collisions: half of the pool shares three home entries.
    std::vector<uint64_t> pool;
    for (uint64_t k = 0; pool.size() < 4 * max_keys + 8; ++k) {
      const uint64_t home = HotSlotHome(k, map.mask());
      if (pool.size() % 2 == 0 || home <= 2 || home == map.mask()) pool.push_back(k);
    }
    pool.push_back(kEmptyRow - 1);  // the largest key
    uint64_t rng = entries;
    uint32_t next_slot = 0;
    std::vector<uint64_t> changed;
    for (int op = 0; op < (entries >= 2048 ? 2500 : 4000); ++op) {
      const uint64_t key = pool[SplitMix64Next(&rng) % pool.size()];
      const std::vector<HotSlot> before = map.entries();
      changed.clear();
      const bool present = model.contains(key);
      if (!present && model.size() < max_keys && SplitMix64Next(&rng) % 3 != 0) {
        map.Insert(key, next_slot, &changed);
        model[key] = next_slot++;
      } else {
        ASSERT_EQ(map.Erase(key, &changed), present);
        model.erase(key);
      }
      // Every entry that changed is reported.
      for (size_t i = 0; i < before.size(); ++i) {
        if (std::memcmp(&before[i], &map.entries()[i], sizeof(HotSlot)) != 0) {
          ASSERT_NE(std::find(changed.begin(), changed.end(), i), changed.end()) << "entry " << i;
        }
      }
      if (entries < 2048 || op % 50 == 0) {
        ASSERT_TRUE(map.CheckInvariants().ok()) << map.CheckInvariants() << " after op " << op;
      }
      ASSERT_EQ(map.size(), model.size());
      if (op % 7 == 0 || entries <= 64) {
        std::vector<HotSlot> uploaded(map.entries().size());
        std::memcpy(uploaded.data(), map.entries().data(), uploaded.size() * sizeof(HotSlot));
        for (uint64_t k : pool) {
          auto it = model.find(k);
          const uint32_t got = GetParam() == LookupKind::kHostMap
                                   ? map.Find(k)
                                   : HotSlotLookup(uploaded.data(), map.mask(), k);
          ASSERT_EQ(got, it == model.end() ? kHotSlotMiss : it->second) << "key " << k;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Lookups, HotSlotMapContractTest,
                         ::testing::Values(LookupKind::kHostMap, LookupKind::kUploadedBytes),
                         [](const auto& info) {
                           return info.index == 0 ? std::string("HostMap")
                                                  : std::string("UploadedBytes");
                         });

TEST(HotSlotMapTest, CheckInvariantsCatchesABrokenChain) {
  HotSlotMap map(8);
  std::vector<uint64_t> changed;
  // Two keys with the same home: the second sits one entry later.
  uint64_t a = 0, b = 1;
  while (HotSlotHome(b, 7) != HotSlotHome(a, 7)) ++b;
  map.Insert(a, 0, &changed);
  map.Insert(b, 1, &changed);
  ASSERT_TRUE(map.CheckInvariants().ok());
  EXPECT_EQ(map.entries()[(HotSlotHome(b, 7) + 1) & 7].probe, 1u);
  ASSERT_TRUE(map.Erase(a, &changed));
  // Backward shift moved b into its home: probe 0, still found.
  EXPECT_EQ(map.entries()[HotSlotHome(b, 7)].row, b);
  EXPECT_EQ(map.entries()[HotSlotHome(b, 7)].probe, 0u);
  EXPECT_EQ(map.Find(b), 1u);
  EXPECT_EQ(map.Find(a), kHotSlotMiss);
  EXPECT_TRUE(map.CheckInvariants().ok());
}

// ---- The cache ----------------------------------------------------------------------------------

// window = HotRowCache::Options::window_fraction; 0 = plain TinyLFU.
std::unique_ptr<HotRowCache> MakeCache(uint64_t slots, uint64_t seed = 1, double window = 0.2) {
  HotRowCache::Options o;
  o.row_bytes = 264;
  o.seed = seed;
  o.window_fraction = window;
  auto c = HotRowCache::CreateWithSlots(o, slots);
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(*c);
}

TEST(HotRowCacheTest, CapacityInBytesGivesTheSlotCount) {
  HotRowCache::Options o;
  o.capacity_bytes = 1 << 20;
  o.row_bytes = 264;
  auto c = HotRowCache::Create(o);
  ASSERT_TRUE(c.ok());
  const HotCacheGeometry& g = (*c)->geometry();
  EXPECT_EQ(g.slots, HotCacheGeometryFor(1 << 20, 264)->slots);
  EXPECT_EQ((*c)->map().entries().size(), g.map_entries);
  EXPECT_EQ((*c)->counters().slots, g.slots);
  o.row_bytes = 0;
  EXPECT_FALSE(HotRowCache::Create(o).ok());
  o.row_bytes = 264;
  o.victim_samples = 0;
  EXPECT_FALSE(HotRowCache::Create(o).ok());
  // Below one row: a cache that misses everything.
  o.victim_samples = 8;
  o.capacity_bytes = 100;
  auto tiny = HotRowCache::Create(o);
  ASSERT_TRUE(tiny.ok());
  (*tiny)->Record(std::vector<uint64_t>{1, 1, 1});
  EXPECT_TRUE((*tiny)->PlanUpdates(10).empty());
  EXPECT_EQ((*tiny)->counters().misses, 3u);
}

TEST(HotRowCacheTest, FillTakesTheHottestKeysAndSeedsTheSketch) {
  auto cache = MakeCache(19, 1, /*window=*/0);
  std::vector<HotKeyCount> hot;
  for (uint64_t k = 0; k < 40; ++k) {
    hot.push_back({1000 + k, 100.0 - k});
    if (k == 3) hot.push_back({1000, 5});        // a duplicate
    if (k == 5) hot.push_back({kEmptyRow, 50});  // never a key
  }
  FakeDevice device(cache->geometry().map_entries, cache->geometry().slots);
  const HotCachePlan plan = cache->Fill(hot);
  EXPECT_TRUE(plan.unmap.empty());
  ASSERT_EQ(plan.loads.size(), 19u);
  ASSERT_TRUE(device.Apply(plan));
  EXPECT_TRUE(SameEntries(device.map, cache->map().entries()));
  for (uint64_t k = 0; k < 40; ++k) {
    EXPECT_EQ(cache->Lookup(1000 + k) != kHotSlotMiss, k < 19) << k;
    EXPECT_GE(cache->Estimate(1000 + k), 60u) << k;
  }
  EXPECT_TRUE(cache->map().CheckInvariants().ok());
  EXPECT_EQ(cache->counters().filled, 19u);
  EXPECT_EQ(cache->counters().occupied_slots, 19u);
  // The filled keys hit; a seeded key that did not fit beats a cold resident when it misses.
  cache->Record(std::vector<uint64_t>{1000, 1018, 1019});
  EXPECT_EQ(cache->counters().hits, 2u);
  EXPECT_EQ(cache->counters().misses, 1u);
  EXPECT_DOUBLE_EQ(cache->counters().hit_rate(), 2.0 / 3.0);
  // A second fill only uses free slots (there are none).
  EXPECT_TRUE(cache->Fill(hot).loads.empty());
}

TEST(HotRowCacheTest, WithoutWindowMissedKeysFillFreeSlotsThenReplaceLessFrequentOnes) {
  auto cache = MakeCache(4, 1, /*window=*/0);
  FakeDevice device(cache->geometry().map_entries, 4);
  cache->Record(std::vector<uint64_t>{1, 2, 3, 4, 5, 6});
  // Free slots admit without comparison; max_rows cuts the plan and keeps the rest.
  HotCachePlan plan = cache->PlanUpdates(3);
  EXPECT_EQ(plan.loads.size(), 3u);
  EXPECT_TRUE(plan.unmap.empty());
  ASSERT_TRUE(device.Apply(plan));
  plan = cache->PlanUpdates(10);
  EXPECT_EQ(plan.loads.size(), 1u);  // one free slot left; the two others lose the tie
  ASSERT_TRUE(device.Apply(plan));
  EXPECT_EQ(cache->counters().admissions, 4u);
  EXPECT_EQ(cache->counters().rejections, 2u);
  EXPECT_EQ(cache->counters().occupied_slots, 4u);

  // A key seen many times replaces one seen once.
  std::vector<uint64_t> hot(10, 77);
  cache->Record(hot);
  plan = cache->PlanUpdates(10);
  ASSERT_EQ(plan.loads.size(), 1u);
  EXPECT_EQ(plan.loads[0].key, 77u);
  EXPECT_FALSE(plan.unmap.empty());
  ASSERT_TRUE(device.Apply(plan));
  EXPECT_TRUE(SameEntries(device.map, cache->map().entries()));
  EXPECT_EQ(cache->counters().evictions, 1u);
  EXPECT_NE(cache->Lookup(77), kHotSlotMiss);
  // The slot it took held the victim, which is gone from the map.
  const uint32_t slot = cache->Lookup(77);
  EXPECT_EQ(cache->slot_keys()[slot], 77u);
  uint64_t still = 0;
  for (uint64_t k = 1; k <= 6; ++k) still += cache->Lookup(k) != kHotSlotMiss;
  EXPECT_EQ(still, 3u);

  // Protected keys are never victims: with every resident protected nothing is admitted.
  std::vector<uint64_t> residents;
  for (uint64_t k : cache->slot_keys()) residents.push_back(k);
  cache->Record(std::vector<uint64_t>(20, 88));
  plan = cache->PlanUpdates(10, residents);
  EXPECT_TRUE(plan.loads.empty());
  EXPECT_EQ(cache->Lookup(88), kHotSlotMiss);
  for (uint64_t k : residents) EXPECT_NE(cache->Lookup(k), kHotSlotMiss);
}

// W-TinyLFU: every miss enters the window (Fill leaves it free); the window's oldest row moves to
// the main part only when it is more frequent than the main victim, else it leaves.
TEST(HotRowCacheTest, WindowAdmitsEveryMissAndPromotesOnlyTheFrequent) {
  auto cache = MakeCache(10, 1, /*window=*/0.2);  // 2 window slots, 8 main
  FakeDevice device(cache->geometry().map_entries, 10);
  std::vector<HotKeyCount> hot;
  for (uint64_t k = 0; k < 20; ++k) hot.push_back({100 + k, 5});
  ASSERT_TRUE(device.Apply(cache->Fill(hot)));
  EXPECT_EQ(cache->counters().filled, 8u);
  for (uint64_t k = 0; k < 8; ++k) EXPECT_NE(cache->Lookup(100 + k), kHotSlotMiss);
  // Three one-off misses: two take the free window slots; the third would push out a row this
  // plan loads, so it waits for the next plan, and then pushes the oldest (1) out.
  cache->Record(std::vector<uint64_t>{1, 2, 3});
  ASSERT_TRUE(device.Apply(cache->PlanUpdates(10)));
  EXPECT_NE(cache->Lookup(1), kHotSlotMiss);
  EXPECT_NE(cache->Lookup(2), kHotSlotMiss);
  EXPECT_EQ(cache->Lookup(3), kHotSlotMiss);
  EXPECT_EQ(cache->counters().evictions, 0u);
  ASSERT_TRUE(device.Apply(cache->PlanUpdates(10)));
  EXPECT_EQ(cache->Lookup(1), kHotSlotMiss);
  EXPECT_NE(cache->Lookup(2), kHotSlotMiss);
  EXPECT_NE(cache->Lookup(3), kHotSlotMiss);
  for (uint64_t k = 0; k < 8; ++k) EXPECT_NE(cache->Lookup(100 + k), kHotSlotMiss) << k;
  EXPECT_EQ(cache->counters().evictions, 1u);
  // 2 is read again and again while in the window (hits); when it leaves the window it beats a
  // main resident (estimate 5) and stays; 3 does not.
  cache->Record(std::vector<uint64_t>(30, 2));
  EXPECT_EQ(cache->counters().hits, 30u);
  cache->Record(std::vector<uint64_t>{4, 5});
  ASSERT_TRUE(device.Apply(cache->PlanUpdates(10)));
  EXPECT_TRUE(SameEntries(device.map, cache->map().entries()));
  EXPECT_NE(cache->Lookup(2), kHotSlotMiss);
  EXPECT_EQ(cache->Lookup(3), kHotSlotMiss);
  EXPECT_NE(cache->Lookup(4), kHotSlotMiss);
  EXPECT_NE(cache->Lookup(5), kHotSlotMiss);
  uint64_t main_left = 0;
  for (uint64_t k = 0; k < 8; ++k) main_left += cache->Lookup(100 + k) != kHotSlotMiss;
  EXPECT_EQ(main_left, 7u);
  EXPECT_EQ(cache->counters().evictions, 3u);
  EXPECT_TRUE(cache->map().CheckInvariants().ok());
}

// A protected key at the front of the window is passed over (it stays), not a dead end.
TEST(HotRowCacheTest, ProtectedWindowKeysStayAndDoNotBlockTheWindow) {
  auto cache = MakeCache(10, 1, /*window=*/0.2);  // 2 window slots, 8 main
  std::vector<HotKeyCount> hot;
  for (uint64_t k = 0; k < 8; ++k) hot.push_back({100 + k, 5});
  cache->Fill(hot);
  cache->Record(std::vector<uint64_t>{1, 2});
  cache->PlanUpdates(10);  // window: 1, 2
  cache->Record(std::vector<uint64_t>{3});
  const std::vector<uint64_t> protect = {1};
  const HotCachePlan plan = cache->PlanUpdates(10, protect);
  EXPECT_EQ(plan.loads.size(), 1u);
  EXPECT_NE(cache->Lookup(1), kHotSlotMiss);
  EXPECT_EQ(cache->Lookup(2), kHotSlotMiss);
  EXPECT_NE(cache->Lookup(3), kHotSlotMiss);
  // With every window key protected, nothing is admitted and nothing leaves.
  cache->Record(std::vector<uint64_t>{4});
  const std::vector<uint64_t> both = {1, 3};
  EXPECT_TRUE(cache->PlanUpdates(10, both).loads.empty());
  EXPECT_NE(cache->Lookup(1), kHotSlotMiss);
  EXPECT_NE(cache->Lookup(3), kHotSlotMiss);
}

// Random traffic (Zipf, scans, bursts, protected sets, small and large plans): every plan applied
// in the contract's order keeps the device consistent after each phase and equal to the host map
// at the end; the host map stays valid.
TEST(HotRowCacheTest, PlansAppliedInOrderNeverExposeAWrongRow) {
  for (uint64_t slots : {1ull, 19ull, 111ull, 1000ull}) {
    SCOPED_TRACE(::testing::Message() << "slots " << slots);
    auto cache = MakeCache(slots, slots);
    FakeDevice device(cache->geometry().map_entries, slots);
    Zipf zipf(20 * slots + 50, 1.0, slots);
    uint64_t rng = 99, scan = uint64_t{1} << 40;
    ASSERT_TRUE(device.Apply(cache->Fill({{Zipf::KeyOfRank(0), 10}, {Zipf::KeyOfRank(1), 9}})));
    for (int step = 0; step < 300; ++step) {
      std::vector<uint64_t> keys;
      const int n = 1 + static_cast<int>(SplitMix64Next(&rng) % 200);
      for (int i = 0; i < n; ++i) {
        keys.push_back(SplitMix64Next(&rng) % 5 == 0 ? scan++ : zipf.Next());
      }
      cache->Record(keys);
      std::vector<uint64_t> protect;
      if (step % 3 == 0) protect.assign(keys.begin(), keys.begin() + n / 2);
      const size_t max_rows = 1 + SplitMix64Next(&rng) % (2 * slots + 1);
      const HotCachePlan plan = cache->PlanUpdates(max_rows, protect);
      ASSERT_LE(plan.loads.size(), max_rows);
      ASSERT_TRUE(device.Apply(plan)) << "step " << step;
      ASSERT_TRUE(SameEntries(device.map, cache->map().entries())) << "step " << step;
      ASSERT_TRUE(cache->map().CheckInvariants().ok()) << cache->map().CheckInvariants();
      // Each list names an entry once; loads use distinct slots.
      absl::flat_hash_set<uint64_t> seen;
      for (const auto& w : plan.unmap) ASSERT_TRUE(seen.insert(w.index).second);
      seen.clear();
      for (const auto& w : plan.map) ASSERT_TRUE(seen.insert(w.index).second);
      seen.clear();
      for (const auto& l : plan.loads) ASSERT_TRUE(seen.insert(l.slot).second);
    }
    const HotRowCacheCounters c = cache->counters();
    EXPECT_EQ(c.admissions, c.evictions + c.occupied_slots - c.filled);
    EXPECT_GT(c.hits, 0u);
  }
}

TEST(HotRowCacheTest, ProtectedResidentsSurviveThePlan) {
  auto cache = MakeCache(8, 1, /*window=*/0);
  for (uint64_t k = 0; k < 8; ++k) cache->Record(std::vector<uint64_t>{k});
  cache->PlanUpdates(100);
  std::vector<uint64_t> protect = {0, 1, 2, 3, 4, 5, 6};
  cache->Record(std::vector<uint64_t>(50, 500));
  cache->Record(std::vector<uint64_t>(50, 501));
  const HotCachePlan plan = cache->PlanUpdates(100, protect);
  // Only key 7's slot could be taken: one of 500/501 is admitted, the other rejected.
  EXPECT_EQ(plan.loads.size(), 1u);
  for (uint64_t k : protect) EXPECT_NE(cache->Lookup(k), kHotSlotMiss) << k;
  EXPECT_EQ(cache->Lookup(7), kHotSlotMiss);
}

// On a stationary Zipf stream the cache gets close to the static oracle (the `slots` most frequent
// keys, known in advance).
TEST(HotRowCacheTest, ZipfHitRateApproachesTheStaticOracle) {
  const uint64_t slots = 2000;
  auto cache = MakeCache(slots);
  Zipf zipf(200000, 0.9, 5);
  std::vector<uint64_t> step;
  auto run = [&](int steps) {
    for (int s = 0; s < steps; ++s) {
      step.clear();
      for (int i = 0; i < 512; ++i) step.push_back(zipf.Next());
      cache->Record(step);
      cache->PlanUpdates(256);
    }
  };
  run(400);  // warm-up
  const HotRowCacheCounters warm = cache->counters();
  run(400);
  const HotRowCacheCounters end = cache->counters();
  const double rate = static_cast<double>(end.hits - warm.hits) /
                      static_cast<double>(end.hits - warm.hits + end.misses - warm.misses);
  const double oracle = zipf.TopShare(slots);
  EXPECT_GT(rate, oracle - 0.05) << "policy " << rate << ", oracle " << oracle;
  EXPECT_LE(rate, oracle + 0.02);
}

// A long scan of one-off keys does not flush the hot set: without a window the hot keys'
// estimates beat the scanned keys', so the scan is rejected; with a window the scan passes through
// the window only. Either way the hit rate on the hot traffic after the scan is what it was.
TEST(HotRowCacheTest, ScanResistance) {
  for (double window : {0.0, 0.2}) {
    SCOPED_TRACE(::testing::Message() << "window " << window);
    const uint64_t slots = 1000;
    auto cache = MakeCache(slots, 1, window);
    Zipf zipf(100000, 1.0, 11);
    std::vector<uint64_t> step;
    auto zipf_steps = [&](int steps) {
      const HotRowCacheCounters before = cache->counters();
      for (int s = 0; s < steps; ++s) {
        step.clear();
        for (int i = 0; i < 256; ++i) step.push_back(zipf.Next());
        cache->Record(step);
        cache->PlanUpdates(128);
      }
      const HotRowCacheCounters after = cache->counters();
      return static_cast<double>(after.hits - before.hits) /
             static_cast<double>(after.hits - before.hits + after.misses - before.misses);
    };
    zipf_steps(400);
    const double before_scan = zipf_steps(200);
    std::vector<uint64_t> hot_before;
    for (uint64_t r = 0; r < 200; ++r) hot_before.push_back(Zipf::KeyOfRank(r));
    // 50 x the cache size of distinct keys, each read once, in steps like the traffic.
    const uint64_t first_scanned = uint64_t{1} << 50;
    uint64_t key = first_scanned;
    for (int s = 0; s < 200; ++s) {
      step.clear();
      for (int i = 0; i < 256; ++i) step.push_back(key++);
      cache->Record(step);
      cache->PlanUpdates(128);
    }
    // A policy that admits every miss into the whole cache would now hold nothing but scanned
    // keys; here they hold the window and at most a few of the coldest main slots (scanned keys
    // that collide in the sketch with busy keys).
    uint64_t scanned = 0;
    for (uint64_t k : cache->slot_keys()) scanned += k >= first_scanned && k != kEmptyRow;
    EXPECT_LT(scanned, static_cast<uint64_t>(window * slots) + slots / 4);
    size_t kept = 0;
    for (uint64_t k : hot_before) kept += cache->Lookup(k) != kHotSlotMiss;
    EXPECT_GE(kept, 195u);
    const double after_scan = zipf_steps(200);
    EXPECT_GT(after_scan, before_scan - 0.02) << before_scan << " -> " << after_scan;
  }
}

// Popularity moves: after the hot set changes, the new hot keys win their slots within a few
// sketch windows (the halving ages the old counts).
TEST(HotRowCacheTest, AdaptsWhenTheHotSetMoves) {
  const uint64_t slots = 500;
  auto cache = MakeCache(slots);
  std::vector<uint64_t> step;
  auto run = [&](uint64_t offset, int steps) {
    uint64_t rng = offset + 1;
    for (int s = 0; s < steps; ++s) {
      step.clear();
      for (int i = 0; i < 256; ++i) step.push_back(offset + SplitMix64Next(&rng) % 400);
      cache->Record(step);
      cache->PlanUpdates(128);
    }
  };
  run(0, 200);
  run(1000000, 400);
  size_t cached = 0;
  for (uint64_t k = 0; k < 400; ++k) cached += cache->Lookup(1000000 + k) != kHotSlotMiss;
  EXPECT_EQ(cached, 400u);
}

}  // namespace
}  // namespace engram
