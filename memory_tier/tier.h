// File: memory_tier/tier.h
//
// The one interface every tier of the memory tier implements (docs/architecture.md pattern 1): the
// server's DRAM arena (DramTier), the NVMe row files (NvmeTier) and a co-located client's read-only
// view of the arena (ArenaReader). A tier answers a batch of row ids of one table: it writes the
// rows it has at their input positions and lists the positions it does not have. Its Status is
// reserved for failure of the tier itself (an I/O error, a bad id), never for a miss.
//
// Example (a cascade is a loop over tiers, see tiered_store.h):
//   std::vector<uint32_t> missing;
//   ENGRAM_RETURN_IF_ERROR(tier.Lookup(ids, out.data(), &missing));
//   // out[i * row_bytes ...] holds row ids[i] for every i not in `missing`.
#ifndef ENGRAM_MEMORY_TIER_TIER_H_
#define ENGRAM_MEMORY_TIER_TIER_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace engram {

class Tier {
 public:
  virtual ~Tier() = default;

  // Short name used in metrics and TierCount: "dram", "nvme", "arena".
  virtual absl::string_view name() const = 0;
  // Bytes of one row of the table this tier serves.
  virtual size_t row_bytes() const = 0;

  // Tier::Lookup()
  //
  // For each i, writes row row_ids[i] to out[i * row_bytes(), (i + 1) * row_bytes()) when the
  // tier holds it; otherwise appends i to `*missing` (ascending, not cleared first) and leaves
  // that part of `out` unspecified. Ids must be < the table's row count (INVALID_ARGUMENT
  // otherwise). Thread-safe: any number of concurrent calls.
  virtual absl::Status Lookup(absl::Span<const uint64_t> row_ids, uint8_t* out,
                              std::vector<uint32_t>* missing) = 0;
};

// The id check every Lookup starts with: INVALID_ARGUMENT naming the first id >= `rows`.
absl::Status CheckRowIds(absl::Span<const uint64_t> row_ids, uint64_t rows);

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_TIER_H_
