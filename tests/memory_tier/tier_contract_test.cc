// The Tier contract (memory_tier/tier.h), one typed suite run against every implementation:
// DRAM resident, DRAM cache, NVMe via io_uring, NVMe via pread, and a co-located client's
// ArenaReader over a resident and over a cache arena (docs/architecture.md pattern 10).
#include <unistd.h>

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

// A real row file of random rows and the rows it must serve (the fixture: 5003 FP8 rows of 264 B).
using Table = testing::RandomRowFile;

std::string ShmName(absl::string_view what) {
  return absl::StrCat("/engram-test-", getpid(), "-", what);
}

// The DRAM cache holds every third row (those whose set still has a free way).
void FillCache(DramTier* dram, const Table& t) {
  std::vector<uint64_t> set_rows;
  for (uint64_t r = 0; r < t.manifest.layout.rows; r += 3) {
    dram->SetRows(dram->SetOf(r), &set_rows);
    for (uint32_t w = 0; w < set_rows.size(); ++w) {
      if (set_rows[w] == ~uint64_t{0}) {
        dram->WriteSlot(w, r, t.Row(r));
        break;
      }
    }
  }
}

std::unique_ptr<DramTier> MakeDram(const Table& t, bool resident, absl::string_view name) {
  DramTier::Options o;
  o.shm_name = ShmName(name);
  o.budget_bytes = resident ? uint64_t{1} << 30 : 256 * 1024;
  o.ways = 4;
  o.lock = false;
  o.model = t.manifest.model;
  o.layer = t.manifest.layer;
  o.version = t.manifest.version;
  auto d = DramTier::Create(o, t.manifest.layout.rows, t.manifest.layout.row_bytes);
  EXPECT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->resident(), resident);
  if (resident) {
    EXPECT_TRUE((*d)->LoadResident(t.manifest, t.path).ok());
  } else {
    FillCache(d->get(), t);
    (*d)->MarkReady();
  }
  return std::move(*d);
}

// Owns whatever a tier under test needs (e.g. the server-side arena of an ArenaReader).
struct TierUnderTest {
  std::unique_ptr<DramTier> dram;
  std::unique_ptr<Tier> tier;
  Tier* get() { return tier ? tier.get() : dram.get(); }
};

struct DramResident {
  static constexpr bool kComplete = true;
  static constexpr bool kNeedsUring = false;
  static TierUnderTest Make(const Table& t) { return {MakeDram(t, true, "res"), nullptr}; }
};
struct DramCache {
  static constexpr bool kComplete = false;
  static constexpr bool kNeedsUring = false;
  static TierUnderTest Make(const Table& t) { return {MakeDram(t, false, "cache"), nullptr}; }
};
template <IoBackend kBackend>
struct Nvme {
  static constexpr bool kComplete = true;
  static constexpr bool kNeedsUring = kBackend == IoBackend::kUring;
  static TierUnderTest Make(const Table& t) {
    NvmeTier::Options o;
    o.io.backend = kBackend;
    o.io.depth = 8;
    auto n = NvmeTier::Open(t.manifest, t.path, o);
    EXPECT_TRUE(n.ok()) << n.status();
    EXPECT_EQ((*n)->backend(), kBackend);
    return {nullptr, std::move(*n)};
  }
};
template <bool kResident>
struct Arena {
  static constexpr bool kComplete = kResident;
  static constexpr bool kNeedsUring = false;
  static TierUnderTest Make(const Table& t) {
    TierUnderTest u{MakeDram(t, kResident, kResident ? "ares" : "acache"), nullptr};
    auto reader = ArenaReader::Open(testing::ArenaTableDescription(
        *u.dram, TableKey{t.manifest.model, t.manifest.layer, t.manifest.version},
        t.manifest.layout.rows));
    EXPECT_TRUE(reader.ok()) << reader.status();
    u.tier = std::move(*reader);
    return u;
  }
};

template <typename T>
class TierContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (T::kNeedsUring && !testing::UringAvailable()) {
      GTEST_SKIP() << "io_uring is not available to this process";
    }
    under_test_ = T::Make(table_);
  }
  Tier* tier() { return under_test_.get(); }

  // Looks up `ids` and checks every served row byte for byte; returns the missing positions.
  std::vector<uint32_t> CheckedLookup(const std::vector<uint64_t>& ids) {
    const size_t rb = tier()->row_bytes();
    std::vector<uint8_t> out(ids.size() * rb);
    std::vector<uint32_t> missing;
    absl::Status s = tier()->Lookup(ids, out.data(), &missing);
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_TRUE(std::is_sorted(missing.begin(), missing.end()));
    for (size_t i = 0, m = 0; i < ids.size(); ++i) {
      if (m < missing.size() && missing[m] == i) {
        ++m;
        continue;
      }
      EXPECT_EQ(0, std::memcmp(&out[i * rb], table_.Row(ids[i]), rb))
          << tier()->name() << ": row " << ids[i] << " at position " << i;
    }
    if (T::kComplete) {
      EXPECT_TRUE(missing.empty()) << tier()->name();
    }
    return missing;
  }

  Table table_{5003, "fp8_e4m3_e8m0", 256, /*seed=*/42};
  TierUnderTest under_test_;
};

using Implementations = ::testing::Types<DramResident, DramCache, Nvme<IoBackend::kUring>,
                                         Nvme<IoBackend::kPread>, Arena<true>, Arena<false>>;
TYPED_TEST_SUITE(TierContractTest, Implementations);

TYPED_TEST(TierContractTest, ServesRowsAtTheirInputPositions) {
  EXPECT_EQ(this->tier()->row_bytes(), 264u);
  std::mt19937_64 rng(7);
  for (size_t n : {1, 19, 111, 768, 4099}) {
    std::vector<uint64_t> ids(n);
    for (auto& id : ids) id = rng() % this->table_.manifest.layout.rows;
    const size_t served = n - this->CheckedLookup(ids).size();
    // A cache holds only part of the table, but a tier that serves nothing would pass the
    // byte checks above vacuously.
    if (n >= 111) {
      EXPECT_GT(served, 0u) << this->tier()->name() << ": batch of " << n;
    }
  }
}

TYPED_TEST(TierContractTest, HandlesDuplicatesNeighboursAndEdges) {
  const uint64_t last = this->table_.manifest.layout.rows - 1;
  // Same row twice, rows sharing a page, the first and last rows, a descending run.
  std::vector<uint64_t> ids = {5, 5, 6, 0, last, 15, 14, 13, 12, last, 0, 3000, 2999};
  auto missing = this->CheckedLookup(ids);
  // A cache reports duplicates consistently.
  for (uint32_t m : missing) {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] == ids[m]) {
        EXPECT_TRUE(std::count(missing.begin(), missing.end(), i));
      }
    }
  }
}

TYPED_TEST(TierContractTest, EmptyBatchAndAppendOnlyMissingList) {
  std::vector<uint32_t> missing = {99};
  EXPECT_TRUE(this->tier()->Lookup({}, nullptr, &missing).ok());
  EXPECT_EQ(missing, std::vector<uint32_t>{99});
  std::vector<uint64_t> ids = {1, 2, 3, 4, 5, 6};
  std::vector<uint8_t> out(ids.size() * 264);
  ASSERT_TRUE(this->tier()->Lookup(ids, out.data(), &missing).ok());
  EXPECT_EQ(missing.front(), 99u);  // kept, new positions appended
}

TYPED_TEST(TierContractTest, OutOfRangeIdIsInvalidArgumentNamingTheId) {
  std::vector<uint64_t> ids = {1, this->table_.manifest.layout.rows + 7};
  std::vector<uint8_t> out(ids.size() * 264);
  std::vector<uint32_t> missing;
  absl::Status s = this->tier()->Lookup(ids, out.data(), &missing);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(absl::StrCat(this->table_.manifest.layout.rows + 7)),
            absl::string_view::npos)
      << s;
}

TYPED_TEST(TierContractTest, ConcurrentLookupsAreCorrect) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      std::mt19937_64 rng(100 + t);
      for (int round = 0; round < 20; ++round) {
        std::vector<uint64_t> ids(200);
        for (auto& id : ids) id = rng() % this->table_.manifest.layout.rows;
        this->CheckedLookup(ids);
      }
    });
  }
  for (auto& th : threads) th.join();
}

}  // namespace
}  // namespace engram
