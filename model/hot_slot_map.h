// The HBM hot-row cache's slot map: which device slot holds a table row. The host builds and edits
// it (model/hot_row_cache.h) and the GPU row gather (model/kernels/row_gather.cuh) probes the device
// copy itself, so this header is the layout both sides agree on; it compiles as C++ and CUDA.
//
// Vocabulary:
//   key    the cached row's key: the row id within its Engram table plus the table's key offset
//          (one map may serve several tables);
//   slot   a row-sized place in the device pool; slot s holds its row at pool + s * row_bytes;
//   entry  one HotSlot of the map: {key, slot}, or empty (key == kEmptyHotKey).
//
// The map is a power-of-two array of entries, at most half full. A key is looked up by linear
// probing from its home entry, HotSlotHome(key, mask) = SplitMix64Mix(key) & mask, up to the first
// empty entry; deletion shifts later entries of the chain back (no tombstones), so a chain never
// holds an empty entry and the lookup rule stays this simple.
#ifndef ENGRAM_MODEL_HOT_SLOT_MAP_H_
#define ENGRAM_MODEL_HOT_SLOT_MAP_H_

#include <cstdint>

#if defined(__CUDACC__)
#define ENGRAM_HOST_DEVICE __host__ __device__
#else
#define ENGRAM_HOST_DEVICE
#endif

namespace engram {

inline constexpr uint64_t kEmptyHotKey = ~uint64_t{0};

struct HotSlot {
  uint64_t key = kEmptyHotKey;
  uint32_t slot = 0;
  uint32_t probe = 0;  // distance from the key's home entry (host bookkeeping; the GPU ignores it)
};
static_assert(sizeof(HotSlot) == 16, "the GPU reads entries as 16-byte words");

// The home entry of `key` in a map of mask + 1 entries: splitmix64's finaliser (common/splitmix64.h).
ENGRAM_HOST_DEVICE inline uint64_t HotSlotHome(uint64_t key, uint64_t mask) {
  uint64_t z = key;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (z ^ (z >> 31)) & mask;
}

// The slot of `key`, or -1 when the map does not hold it. The lookup rule the GPU follows.
ENGRAM_HOST_DEVICE inline int64_t HotSlotFind(const HotSlot* map, uint64_t mask, uint64_t key) {
  for (uint64_t i = HotSlotHome(key, mask), n = 0; n <= mask; i = (i + 1) & mask, ++n) {
    if (map[i].key == key) return map[i].slot;
    if (map[i].key == kEmptyHotKey) return -1;
  }
  return -1;
}

// Host side: inserts `key` -> `slot` into a map that does not hold `key` and has an empty entry.
inline void HotSlotInsert(HotSlot* map, uint64_t mask, uint64_t key, uint32_t slot) {
  uint64_t i = HotSlotHome(key, mask);
  uint32_t probe = 0;
  while (map[i].key != kEmptyHotKey) i = (i + 1) & mask, ++probe;
  map[i] = HotSlot{key, slot, probe};
}

}  // namespace engram

#endif  // ENGRAM_MODEL_HOT_SLOT_MAP_H_
