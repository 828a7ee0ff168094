#include "memory_tier/tier.h"

#include "absl/strings/str_cat.h"

namespace engram {

absl::Status CheckRowIds(absl::Span<const uint64_t> row_ids, uint64_t rows) {
  for (uint64_t id : row_ids) {
    if (id >= rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("row id ", id, " is out of range (table has ", rows, " rows)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace engram
