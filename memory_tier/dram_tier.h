// File: memory_tier/dram_tier.h
//
// The warm tier: one table's rows in a shared-memory arena (arena.h), owned by engram-memory.
// "resident" holds the whole table (loaded and checksum-verified at start, never evicted);
// "cache" is a set-associative cache filled off the request path by the promoter
// (tiered_store.h), which is the arena's only writer. Lookups here use the same lock-free
// seqlock read as a co-located client (ArenaReader), so server and clients see the same arena.
#ifndef ENGRAM_MEMORY_TIER_DRAM_TIER_H_
#define ENGRAM_MEMORY_TIER_DRAM_TIER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "memory_tier/arena.h"
#include "memory_tier/row_file.h"
#include "memory_tier/tier.h"

namespace engram {

class DramTier : public Tier {
 public:
  struct Options {
    std::string shm_name;       // "/engram-..."
    uint64_t budget_bytes = 0;  // the arena's size limit
    uint32_t ways = 8;          // cache associativity
    bool huge_pages = true;
    uint32_t shm_mode = 0640;  // permission bits of the arena (SharedArena::CreateOptions::mode)
    bool lock = true;
    std::string model;
    uint32_t layer = 0;
    uint64_t version = 0;
  };

  // Creates the arena for a table of `rows` x `row_bytes`: resident when the whole table fits
  // the budget, else the largest cache that does. INVALID_ARGUMENT when not even one set fits.
  static absl::StatusOr<std::unique_ptr<DramTier>> Create(const Options& options, uint64_t rows,
                                                          uint32_t row_bytes);
  ~DramTier() override;

  absl::string_view name() const override { return "dram"; }
  size_t row_bytes() const override { return row_bytes_; }
  absl::Status Lookup(absl::Span<const uint64_t> row_ids, uint8_t* out,
                      std::vector<uint32_t>* missing) override;

  bool resident() const { return resident_; }
  const SharedArena& arena() const { return *arena_; }
  uint64_t capacity_rows() const { return arena_->header().slots; }
  uint64_t occupied_rows() const { return occupied_.load(std::memory_order_relaxed); }

  // Resident layout: copies every row of the row file into the arena, verifying each chunk's
  // checksum and each page's (row_file.h) on the way: DATA_LOSS names the chunk or the page, and
  // no row of a bad page ever enters the arena. Then marks the arena ready. (A cache arena is
  // filled only with rows the NVMe tier read and checked.)
  absl::Status LoadResident(const Manifest& manifest, const std::string& row_file);
  // Marks the arena ready (cache layout, once warm-start rows are in) / retired (shutdown).
  void MarkReady();
  void Retire();

  // ---- Cache layout, single writer (the promoter thread) --------------------------------------
  uint64_t SetOf(uint64_t row) const { return ArenaSetOf(row, arena_->header().sets); }
  uint32_t ways() const { return arena_->header().ways; }
  // The row held by each way of `set`, or -1 (as uint64_t max) for an empty way.
  void SetRows(uint64_t set, std::vector<uint64_t>* rows) const;
  // Writes `row` into way `way` of its set with the seqlock protocol (arena.h).
  void WriteSlot(uint32_t way, uint64_t row, const uint8_t* data);

 private:
  DramTier() = default;

  std::unique_ptr<SharedArena> arena_;
  size_t row_bytes_ = 0;
  uint64_t rows_ = 0;
  bool resident_ = false;
  std::atomic<uint64_t> occupied_{0};
};

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_DRAM_TIER_H_
