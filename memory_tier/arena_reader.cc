// ArenaReader (tier_client.h): a co-located client's read-only view of a DRAM arena.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "memory_tier/arena.h"
#include "memory_tier/tier_client.h"

namespace engram {

absl::StatusOr<std::unique_ptr<ArenaReader>> ArenaReader::Open(const TableDescription& table) {
  const ArenaDescription& a = table.arena;
  const std::string name = absl::StrCat(table.key.model, " layer ", table.key.layer);
  if (a.shm_name.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(name, " has no shared DRAM arena"));
  }
  if (a.host_id != LocalHostId()) {
    return absl::FailedPreconditionError(absl::StrCat(
        name, ": the server runs on another host (host id ", a.host_id, "), not co-located"));
  }
  ENGRAM_ASSIGN_OR_RETURN(auto arena, SharedArena::Open(a.shm_name));
  const ArenaHeader& h = arena->header();
  auto mismatch = [&](absl::string_view what) {
    return absl::FailedPreconditionError(
        absl::StrCat(a.shm_name, " does not match the server's description of ", name, ": ", what,
                     " differs (another server's arena, or a new version: query TableInfo again)"));
  };
  if (h.arena_id != a.arena_id) return mismatch("arena id");
  if (h.table_version != table.key.version) return mismatch("table version");
  if (h.table_rows != table.rows || h.row_bytes != table.row_bytes) return mismatch("geometry");
  if (ArenaLayoutName(static_cast<ArenaLayout>(h.layout)) != a.layout) return mismatch("layout");
  if (h.state.load(std::memory_order_acquire) != static_cast<uint32_t>(ArenaState::kReady)) {
    return absl::FailedPreconditionError(
        absl::StrCat(a.shm_name, " is not ready (loading or retired)"));
  }
  auto reader = std::unique_ptr<ArenaReader>(new ArenaReader());
  reader->row_bytes_ = h.row_bytes;
  reader->rows_ = h.table_rows;
  reader->resident_ = h.layout == static_cast<uint32_t>(ArenaLayout::kResident);
  reader->arena_ = std::move(arena);
  return reader;
}

ArenaReader::~ArenaReader() = default;

bool ArenaReader::valid() const {
  return arena_->header().state.load(std::memory_order_acquire) ==
         static_cast<uint32_t>(ArenaState::kReady);
}

const uint8_t* ArenaReader::base() const { return arena_->base(); }
size_t ArenaReader::size() const { return arena_->size(); }
uint64_t ArenaReader::data_offset() const { return arena_->header().data_offset; }
uint64_t ArenaReader::stride() const { return arena_->header().slot_bytes; }

absl::Status ArenaReader::Lookup(absl::Span<const uint64_t> row_ids, uint8_t* out,
                                 std::vector<uint32_t>* missing) {
  ENGRAM_RETURN_IF_ERROR(CheckRowIds(row_ids, rows_));
  if (!valid()) {  // retired: nothing refreshes it any more, let the server answer
    for (uint32_t i = 0; i < row_ids.size(); ++i) missing->push_back(i);
    return absl::OkStatus();
  }
  ArenaLookup(*arena_, row_ids, out, missing);
  return absl::OkStatus();
}

}  // namespace engram
