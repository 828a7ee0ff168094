#include "memory_tier/dram_tier.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace engram {

absl::StatusOr<std::unique_ptr<DramTier>> DramTier::Create(const Options& o, uint64_t rows,
                                                           uint32_t row_bytes) {
  ArenaGeometry g = ResidentGeometry(rows, row_bytes);
  if (g.size_bytes > o.budget_bytes) {
    g = CacheGeometry(rows, row_bytes, o.ways, o.budget_bytes);
    if (g.slots == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("DRAM budget of ", o.budget_bytes, " bytes cannot hold one cache set of ",
                       o.ways, " rows of ", row_bytes, " bytes for ", o.model, " layer ", o.layer));
    }
  }
  SharedArena::CreateOptions co;
  co.shm_name = o.shm_name;
  co.geometry = g;
  co.table_version = o.version;
  co.layer = o.layer;
  co.model = o.model;
  co.huge_pages = o.huge_pages;
  co.mode = o.shm_mode;
  co.lock = o.lock;
  ENGRAM_ASSIGN_OR_RETURN(auto arena, SharedArena::Create(co));
  auto tier = std::unique_ptr<DramTier>(new DramTier());
  tier->arena_ = std::move(arena);
  tier->row_bytes_ = row_bytes;
  tier->rows_ = rows;
  tier->resident_ = g.layout == ArenaLayout::kResident;
  return tier;
}

DramTier::~DramTier() {
  if (arena_) Retire();
}

absl::Status DramTier::Lookup(absl::Span<const uint64_t> row_ids, uint8_t* out,
                              std::vector<uint32_t>* missing) {
  ENGRAM_RETURN_IF_ERROR(CheckRowIds(row_ids, rows_));
  ArenaLookup(*arena_, row_ids, out, missing);
  return absl::OkStatus();
}

absl::Status DramTier::LoadResident(const Manifest& m, const std::string& row_file) {
  if (!resident_) return absl::FailedPreconditionError("arena is not resident");
  if (m.layout.rows != rows_ || m.layout.row_bytes != row_bytes_) {
    return absl::FailedPreconditionError("manifest does not match the arena");
  }
  uint8_t* data = arena_->base() + arena_->header().data_offset;
  const RowLayout& l = m.layout;
  // Pages are dense in the file but rows are dense in the arena: unpack page by page. Each chunk
  // arrives checked against the manifest and its pages against their page checksums.
  ENGRAM_RETURN_IF_ERROR(ReadVerifiedChunks(
      m, row_file, [&](uint64_t, uint64_t offset, const uint8_t* chunk, size_t size) {
        for (size_t p = 0; p < size; p += l.page_bytes) {
          const uint64_t page = (offset + p - l.header_bytes) / l.page_bytes;
          const uint64_t first = page * l.rows_per_page;
          if (first >= rows_) break;
          const uint64_t n = std::min<uint64_t>(l.rows_per_page, rows_ - first);
          std::memcpy(data + first * row_bytes_, chunk + p, n * row_bytes_);
        }
        return absl::OkStatus();
      }));
  occupied_.store(rows_);
  MarkReady();
  return absl::OkStatus();
}

void DramTier::MarkReady() {
  arena_->mutable_header()->state.store(static_cast<uint32_t>(ArenaState::kReady),
                                        std::memory_order_release);
}

void DramTier::Retire() {
  arena_->mutable_header()->state.store(static_cast<uint32_t>(ArenaState::kRetired),
                                        std::memory_order_release);
}

void DramTier::SetRows(uint64_t set, std::vector<uint64_t>* rows) const {
  rows->clear();
  const SlotHeader* h = arena_->slot_headers();
  for (uint32_t w = 0; w < ways(); ++w) {
    const uint64_t key = h[set * ways() + w].key.load(std::memory_order_relaxed);
    rows->push_back(key == 0 ? ~uint64_t{0} : key - 1);
  }
}

void DramTier::WriteSlot(uint32_t way, uint64_t row, const uint8_t* data) {
  const uint64_t slot = SetOf(row) * ways() + way;
  SlotHeader& h = arena_->slot_headers()[slot];
  const uint64_t seq = h.seq.load(std::memory_order_relaxed);
  const bool was_empty = h.key.load(std::memory_order_relaxed) == 0;
  h.seq.store(seq + 1, std::memory_order_relaxed);  // odd: readers treat the slot as a miss
  std::atomic_thread_fence(std::memory_order_release);
  h.key.store(row + 1, std::memory_order_relaxed);
  std::memcpy(arena_->slot_data(slot), data, row_bytes_);
  h.seq.store(seq + 2, std::memory_order_release);
  if (was_empty) occupied_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace engram
