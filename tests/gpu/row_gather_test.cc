// LaunchRowGather against its CPU reference (RowGatherReference): every row, whether found in an
// HBM cache slot, in pinned staging or in a mapped arena, must equal the stored table row decoded to
// bf16, bit for bit; rows no source holds are zeros, and the per-source counters match the host's
// own classification (HotSlotLookup, the staging index, the arena bound). Awkward shapes: 1, 19 and
// 4099 rows; f32 rows of 3 values (4-byte words only), bf16 of 8 and 40 values, FP8 V4.1 rows of 32,
// 96 and 256 values (+ scales: 33, 99, 264 bytes); arena strides equal to and above the row; tiny
// slot maps (fewer entries than a warp's lanes) and a crowded one whose probe chains wrap the map's
// end and span more than one 32-entry window.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/row_format.h"
#include "gtest/gtest.h"
#include "model/hot_slot_map.h"
#include "model/kernels/reference.h"
#include "model/kernels/row_gather.cuh"
#include "tests/gpu/cuda_ok.h"

namespace engram::kernels {
namespace {

struct Case {
  RowDType dtype;
  int head_dim;
  uint32_t n;
  uint64_t arena_pad;   // arena stride - row bytes
  uint32_t cached;      // rows in the HBM cache
  bool crowded;         // cached rows all share one home entry
};

std::string Name(const testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return std::string(RowDTypeName(c.dtype)) + "_d" + std::to_string(c.head_dim) + "_n" +
         std::to_string(c.n) + "_pad" + std::to_string(c.arena_pad) + "_cached" +
         std::to_string(c.cached) + (c.crowded ? "_crowded" : "");
}

// Inserts `key` -> `slot` into a map that does not hold `key` and has an empty entry.
void HotSlotInsert(HotSlot* map, uint64_t mask, uint64_t key, uint32_t slot) {
  uint64_t i = HotSlotHome(key, mask);
  uint32_t probe = 0;
  while (map[i].row != kEmptyRow) i = (i + 1) & mask, ++probe;
  map[i] = HotSlot{key, slot, probe};
}

// Random stored rows with finite values, so that decoding and rounding have one answer.
void FillRows(RowDType dtype, int D, size_t rows, size_t row_bytes, std::mt19937_64& rng,
              uint8_t* out) {
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (size_t r = 0; r < rows; ++r) {
    uint8_t* row = out + r * row_bytes;
    for (int j = 0; j < D; ++j) {
      if (dtype == RowDType::kF32) {
        const float v = normal(rng);
        std::memcpy(row + 4 * j, &v, 4);
      } else if (dtype == RowDType::kBF16) {
        uint16_t bits = static_cast<uint16_t>(rng());
        if (((bits >> 7) & 0xff) == 0xff) bits &= 0xbfff;  // no infinity or NaN
        std::memcpy(row + 2 * j, &bits, 2);
      } else {
        uint8_t bits = static_cast<uint8_t>(rng());
        if ((bits & 0x7f) == 0x7f) bits ^= 1;  // no NaN
        row[j] = bits;
      }
    }
    if (dtype == RowDType::kFp8E4M3E8M0) {
      // Scales around 2^0, some far from it (tiny and huge values).
      for (int b = 0; b < D / kFp8BlockSize; ++b) {
        row[D + b] = static_cast<uint8_t>(b % 3 == 2 ? (rng() % 2 ? 3 : 250) : 110 + rng() % 30);
      }
    }
  }
}

class RowGatherTest : public testing::TestWithParam<Case> {};

TEST_P(RowGatherTest, EverySourceGivesTheStoredRow) {
  const Case c = GetParam();
  const size_t row_bytes = *RowBytes(c.dtype, c.head_dim);
  const int D = c.head_dim;
  const uint64_t table_rows = 3001, arena_rows = 2000;  // rows >= 2000 only in staging or HBM
  std::mt19937_64 rng(c.n * 7919 + D * 31 + static_cast<int>(c.dtype));
  std::vector<uint8_t> table(table_rows * row_bytes);
  FillRows(c.dtype, D, table_rows, row_bytes, rng, table.data());

  // HBM: `cached` distinct rows in shuffled slots, the map at most half full.
  std::vector<uint64_t> cached;
  const uint64_t key_offset = 1000003;  // as if the map also served another table
  if (c.crowded) {
    for (uint64_t r = 0; r < table_rows && cached.size() < c.cached; ++r) {
      if (HotSlotHome(key_offset + r, 63) == 60) cached.push_back(r);
    }
    ASSERT_EQ(cached.size(), c.cached) << "too few rows share a home entry";
  } else {
    std::vector<uint64_t> all(table_rows);
    for (uint64_t r = 0; r < table_rows; ++r) all[r] = r;
    std::shuffle(all.begin(), all.end(), rng);
    cached.assign(all.begin(), all.begin() + c.cached);
  }
  size_t entries = 1;
  while (entries < 2 * cached.size()) entries *= 2;
  if (c.crowded) entries = 64;
  std::vector<HotSlot> map(entries, HotSlot{kEmptyRow, 0, 0});
  std::vector<uint8_t> pool(std::max<size_t>(1, cached.size()) * row_bytes);
  std::vector<uint32_t> slots(cached.size());
  for (uint32_t s = 0; s < slots.size(); ++s) slots[s] = s;
  std::shuffle(slots.begin(), slots.end(), rng);
  for (size_t k = 0; k < cached.size(); ++k) {
    HotSlotInsert(map.data(), map.size() - 1, key_offset + cached[k], slots[k]);
    std::memcpy(pool.data() + slots[k] * row_bytes, table.data() + cached[k] * row_bytes, row_bytes);
  }

  // Row ids: random, plus ids past the table (no source holds them) and every cached row.
  std::vector<uint64_t> ids(c.n);
  for (auto& id : ids) id = rng() % (table_rows + 50);
  for (size_t k = 0; k < cached.size() && k < ids.size(); ++k) ids[ids.size() - 1 - k] = cached[k];
  if (c.n > 3) ids[0] = 0, ids[1] = arena_rows - 1, ids[2] = arena_rows;

  // Staging: the rows the arena lacks, except every fifth (left missing); not-cached rows only
  // need it, but staging a cached row is allowed (HBM wins).
  std::vector<uint32_t> staging_index(c.n, kNotStaged);
  std::vector<uint8_t> staging;
  for (uint32_t i = 0; i < c.n; ++i) {
    if (ids[i] >= arena_rows && ids[i] < table_rows && i % 5 != 4) {
      staging_index[i] = static_cast<uint32_t>(staging.size() / row_bytes);
      staging.insert(staging.end(), table.begin() + ids[i] * row_bytes,
                     table.begin() + (ids[i] + 1) * row_bytes);
    }
  }
  staging.resize(std::max<size_t>(staging.size(), row_bytes));

  // The arena: pinned, mapped host memory with the table's first arena_rows rows.
  const uint64_t stride = row_bytes + c.arena_pad;
  uint8_t* arena = nullptr;
  CUDA_OK(cudaHostAlloc(&arena, arena_rows * stride, cudaHostAllocMapped));
  for (uint64_t r = 0; r < arena_rows; ++r) {
    std::memcpy(arena + r * stride, table.data() + r * row_bytes, row_bytes);
  }
  uint8_t* arena_device = nullptr;
  CUDA_OK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&arena_device), arena, 0));
  uint8_t* staging_pinned = nullptr;
  CUDA_OK(cudaHostAlloc(&staging_pinned, staging.size(), cudaHostAllocMapped));
  std::memcpy(staging_pinned, staging.data(), staging.size());
  uint8_t* staging_device = nullptr;
  CUDA_OK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&staging_device), staging_pinned, 0));

  HotSlot* d_map = nullptr;
  uint8_t* d_pool = nullptr;
  uint64_t* d_ids = nullptr;
  uint32_t* d_staging_index = nullptr;
  bf16* d_out = nullptr;
  unsigned int* d_counters = nullptr;
  CUDA_OK(cudaMalloc(&d_map, map.size() * sizeof(HotSlot)));
  CUDA_OK(cudaMalloc(&d_pool, pool.size()));
  CUDA_OK(cudaMalloc(&d_ids, ids.size() * 8));
  CUDA_OK(cudaMalloc(&d_staging_index, staging_index.size() * 4));
  CUDA_OK(cudaMalloc(&d_out, size_t{c.n} * D * 2));
  CUDA_OK(cudaMalloc(&d_counters, kRowSources * sizeof(unsigned int)));
  CUDA_OK(cudaMemcpy(d_map, map.data(), map.size() * sizeof(HotSlot), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_pool, pool.data(), pool.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_ids, ids.data(), ids.size() * 8, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(d_staging_index, staging_index.data(), staging_index.size() * 4,
                     cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(d_out, 0xab, size_t{c.n} * D * 2));
  CUDA_OK(cudaMemset(d_counters, 0, kRowSources * sizeof(unsigned int)));

  RowGatherArgs args;
  args.row_ids = d_ids;
  args.n = c.n;
  args.dtype = c.dtype;
  args.head_dim = D;
  args.slot_map = d_map;
  args.slot_mask = map.size() - 1;
  args.pool = d_pool;
  args.key_offset = key_offset;
  args.staging_index = d_staging_index;
  args.staging = staging_device;
  args.arena = arena_device;
  args.arena_rows = arena_rows;
  args.arena_stride = stride;
  args.out = d_out;
  args.counters = d_counters;
  const absl::Status launched = LaunchRowGather(args, nullptr);
  ASSERT_TRUE(launched.ok()) << launched;
  CUDA_OK(cudaDeviceSynchronize());

  std::vector<uint16_t> got(size_t{c.n} * D), want(got.size());
  unsigned int counters[kRowSources];
  CUDA_OK(cudaMemcpy(got.data(), d_out, got.size() * 2, cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(counters, d_counters, sizeof(counters), cudaMemcpyDeviceToHost));
  unsigned int want_counters[kRowSources] = {};
  for (uint32_t i = 0; i < c.n; ++i) {
    int source = kRowMissing;
    if (HotSlotLookup(map.data(), map.size() - 1, key_offset + ids[i]) != kHotSlotMiss) {
      source = kRowFromHbm;
    } else if (staging_index[i] != kNotStaged) {
      source = kRowFromStaging;
    } else if (ids[i] < arena_rows) {
      source = kRowFromArena;
    }
    ++want_counters[source];
    const uint8_t* row = source == kRowMissing ? nullptr : table.data() + ids[i] * row_bytes;
    RowGatherReference(c.dtype, D, row, want.data() + size_t{i} * D);
  }
  for (int s = 0; s < kRowSources; ++s) EXPECT_EQ(counters[s], want_counters[s]) << "source " << s;
  if (c.cached > 0 && c.n >= c.cached) {
    EXPECT_GE(counters[kRowFromHbm], c.cached);
  }
  int printed = 0;
  for (size_t k = 0; k < got.size() && printed < 8; ++k) {
    if (got[k] != want[k]) {
      ADD_FAILURE() << "row " << k / D << " (id " << ids[k / D] << ") value " << k % D
                    << ": got bf16 0x" << std::hex << got[k] << " want 0x" << want[k] << std::dec;
      ++printed;
    }
  }

  cudaFree(d_map);
  cudaFree(d_pool);
  cudaFree(d_ids);
  cudaFree(d_staging_index);
  cudaFree(d_out);
  cudaFree(d_counters);
  cudaFreeHost(arena);
  cudaFreeHost(staging_pinned);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, RowGatherTest,
    testing::Values(Case{RowDType::kBF16, 64, 4099, 0, 700, false},
                    Case{RowDType::kBF16, 8, 19, 0, 3, false},
                    Case{RowDType::kBF16, 40, 111, 24, 1, false},
                    Case{RowDType::kBF16, 64, 1, 0, 0, false},
                    Case{RowDType::kF32, 3, 111, 4, 20, false},
                    Case{RowDType::kF32, 64, 4099, 0, 900, false},
                    Case{RowDType::kFp8E4M3E8M0, 256, 4099, 0, 1000, false},
                    Case{RowDType::kFp8E4M3E8M0, 256, 19, 8, 5, false},
                    Case{RowDType::kFp8E4M3E8M0, 32, 111, 0, 16, false},
                    Case{RowDType::kFp8E4M3E8M0, 96, 111, 3, 30, false},
                    Case{RowDType::kBF16, 64, 4099, 0, 32, true},
                    Case{RowDType::kFp8E4M3E8M0, 256, 111, 0, 31, true}),
    Name);

TEST(RowGatherArgsTest, RejectsBadArguments) {
  RowGatherArgs args;
  args.n = 1;
  EXPECT_FALSE(LaunchRowGather(args, nullptr).ok());  // null ids and output
  EXPECT_TRUE(LaunchRowGather(RowGatherArgs{}, nullptr).ok());  // n = 0 is a no-op
  uint64_t* ids = nullptr;
  bf16* out = nullptr;
  CUDA_OK(cudaMalloc(&ids, 8));
  CUDA_OK(cudaMalloc(&out, 1024));
  args.row_ids = ids;
  args.out = out;
  args.head_dim = 48;  // not a multiple of 32
  args.dtype = RowDType::kFp8E4M3E8M0;
  EXPECT_FALSE(LaunchRowGather(args, nullptr).ok());
  args.dtype = RowDType::kF16;
  EXPECT_FALSE(LaunchRowGather(args, nullptr).ok());
  args.dtype = RowDType::kBF16;
  args.slot_map = reinterpret_cast<const HotSlot*>(out);
  args.slot_mask = 5;  // 6 entries: not a power of two
  args.pool = reinterpret_cast<const uint8_t*>(out);
  EXPECT_FALSE(LaunchRowGather(args, nullptr).ok());
  cudaFree(ids);
  cudaFree(out);
}

}  // namespace
}  // namespace engram::kernels
