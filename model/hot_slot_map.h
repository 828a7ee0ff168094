// File: model/hot_slot_map.h
//
// The slot map of the HBM hot-row cache, in the exact layout the GPU reads: the host builds it
// (model/hot_row_cache.h), uploads it to device memory as it is and scatters changes to it between
// steps; the gather kernel resolves a row to its HBM slot with HotSlotLookup below. This header
// needs only <cstdint>, so a .cu file includes it unchanged (the functions are __host__ __device__
// under nvcc), and the host and device lookups are the same code.
//
// Vocabulary:
//   key (global row id)  the row of one Engram layer's table, offset by the rows of the Engram
//                        layers before it: key = layer_base[layer index] + row id, with
//                        layer_base the exclusive prefix sums of EngramHashConstants::
//                        rows_per_layer (row id = hash id + offset of its (order, head) sub-table,
//                        common/ngram_hash.h). One cache and one map serve every Engram layer.
//   slot                 the index of a row-sized place in the HBM pool: row bytes at
//                        pool + slot * row_bytes.
//   entry                one HotSlot of the map; the map has a power-of-two number of entries,
//                        mask = entries - 1, and at least twice as many entries as slots, so at
//                        most half of it is occupied and probe chains stay short.
//
// Layout: HotSlot[entries], 16 bytes each, 16-byte aligned (one 128-bit load per entry):
//   row    the key held, or kEmptyRow (~0) for an empty entry;
//   slot   the pool slot holding that row's bytes (meaningless when empty);
//   probe  distance from the key's home entry: (index - home) & mask (0 when empty). Informative
//          (the host's deletion and tests use it); a lookup does not need it.
// Lookup: start at home = SplitMix64Mix(key) & mask, step +1 (wrapping), stop at the entry whose
// row is the key (a hit: its slot) or at an empty entry (a miss). Deletion shifts later entries of
// the chain back (no tombstones), so "stop at empty" stays correct.
#ifndef ENGRAM_MODEL_HOT_SLOT_MAP_H_
#define ENGRAM_MODEL_HOT_SLOT_MAP_H_

#include <cstdint>

#if defined(__CUDACC__)
#define ENGRAM_HOT_SLOT_FN __host__ __device__ inline
#else
#define ENGRAM_HOT_SLOT_FN inline
#endif

namespace engram {

// The row value of an empty entry. Keys must be below it.
inline constexpr uint64_t kEmptyRow = ~uint64_t{0};
// What HotSlotLookup returns for a key that is not cached.
inline constexpr uint32_t kHotSlotMiss = ~uint32_t{0};

struct alignas(16) HotSlot {
  uint64_t row;    // key, or kEmptyRow
  uint32_t slot;   // pool slot of the row's bytes
  uint32_t probe;  // (index - home) & mask
};
static_assert(sizeof(HotSlot) == 16, "the device reads 16-byte entries");
static_assert(alignof(HotSlot) == 16, "the device reads 16-byte entries");

// SplitMix64's finaliser (common/splitmix64.h SplitMix64Mix; equal by test), repeated here
// because that header is not device code.
ENGRAM_HOT_SLOT_FN uint64_t HotSlotMix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The entry where the search for `key` starts.
ENGRAM_HOT_SLOT_FN uint64_t HotSlotHome(uint64_t key, uint64_t mask) {
  return HotSlotMix(key) & mask;
}

// The pool slot of `key`, or kHotSlotMiss. `map` has mask + 1 entries, at least one empty.
ENGRAM_HOT_SLOT_FN uint32_t HotSlotLookup(const HotSlot* map, uint64_t mask, uint64_t key) {
  for (uint64_t i = HotSlotHome(key, mask);; i = (i + 1) & mask) {
    const uint64_t row = map[i].row;
    if (row == key) return map[i].slot;
    if (row == kEmptyRow) return kHotSlotMiss;
  }
}

}  // namespace engram

#undef ENGRAM_HOT_SLOT_FN

#endif  // ENGRAM_MODEL_HOT_SLOT_MAP_H_
