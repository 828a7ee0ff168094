// The unified Engram row gather: each row read from wherever it is (an HBM cache slot, the memory
// tier's arena in pinned host memory, or a pinned staging buffer the tier client filled) and decoded
// into the Engram module's bf16 input, in one kernel.
//
// Per row id, the sources are tried in this order:
//   1. HBM   the hot-row cache: the slot map (model/hot_slot_map.h) is probed on the device; a hit
//            reads pool + slot * row_bytes;
//   2. stage staging_index[i] != kNotStaged: the host put the row in staging at that index (rows the
//            arena cannot serve: cold rows read from NVMe, rows of a remote tier);
//   3. arena a resident arena (docs/memory-tier.md) mapped into the GPU's address space: row r at
//            arena + r * arena_stride, for r < arena_rows;
//   otherwise the row is written as zeros and counted as missing (the caller fails the step).
// Each source is optional (null pointer = absent). Every source holds the same stored bytes, so the
// output does not depend on where a row was found.
//
// Stored rows are f32, bf16 or fp8_e4m3_e8m0 (common/row_format.h); the output is bf16, [n,
// head_dim], row i at out + i * head_dim, rounded to nearest even from the f32 value DecodeRows
// gives.
#ifndef ENGRAM_MODEL_KERNELS_ROW_GATHER_CUH_
#define ENGRAM_MODEL_KERNELS_ROW_GATHER_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "common/row_format.h"
#include "model/hot_slot_map.h"
#include "model/kernels/common.cuh"

namespace engram::kernels {

inline constexpr uint32_t kNotStaged = ~uint32_t{0};

// Counters of where the rows were found, in this order (atomically added to).
enum RowSource { kRowFromHbm = 0, kRowFromStaging = 1, kRowFromArena = 2, kRowMissing = 3 };
inline constexpr int kRowSources = 4;

struct RowGatherArgs {
  const uint64_t* row_ids = nullptr;  // [n] device
  uint32_t n = 0;
  RowDType dtype = RowDType::kBF16;  // f32, bf16 or fp8_e4m3_e8m0 (not f16)
  int head_dim = 0;                   // values per row
  // 1. HBM cache (absent when slot_map is null): the key of row r is key_offset + r.
  const HotSlot* slot_map = nullptr;
  uint64_t slot_mask = 0;
  const uint8_t* pool = nullptr;
  uint64_t key_offset = 0;
  // 2. Staging (absent when staging_index is null): [n] indices into staging rows of row_bytes.
  const uint32_t* staging_index = nullptr;
  const uint8_t* staging = nullptr;
  // 3. Resident arena (absent when null), device-mapped.
  const uint8_t* arena = nullptr;
  uint64_t arena_rows = 0;
  uint64_t arena_stride = 0;  // >= row bytes
  bf16* out = nullptr;        // [n, head_dim]
  unsigned int* counters = nullptr;  // optional [kRowSources]
};

absl::Status LaunchRowGather(const RowGatherArgs& args, cudaStream_t stream);

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_ROW_GATHER_CUH_
