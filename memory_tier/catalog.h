// File: memory_tier/catalog.h
//
// The memory tier's catalog in RocksDB (STORE/catalog): which tables exist, their versions and
// manifests, which version is live, and the persistent access statistics (decayed per-row counts
// of the hottest rows) so a restarted tier starts warm. RocksDB is never on the row read path.
//
// Schema (docs/memory-tier.md has the full description):
//   column family "default"
//     "T" 0x00 <model> 0x00 <layer: u32 BE>                   -> TableRecord JSON
//                                                               {live_version, versions: [...],
//                                                                reimport: {version, reason}}
//     "V" 0x00 <model> 0x00 <layer: u32 BE> <version: u64 BE> -> Manifest JSON (row_file.h)
//   column family "stats"
//     <model> 0x00 <layer: u32 BE> <row: u64 BE>              -> decayed count, f64 LE
//
// Only one process may open the catalog read-write (RocksDB's lock): engram-memory while it runs,
// or an `engram table import|profile`. Read-only opens (inspect, verify) work beside either.
#ifndef ENGRAM_MEMORY_TIER_CATALOG_H_
#define ENGRAM_MEMORY_TIER_CATALOG_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "memory_tier/row_file.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace engram {

// One table: its versions and which one is live.
struct TableRecord {
  std::string model;
  uint32_t layer = 0;
  uint64_t live_version = 0;       // 0 = none
  std::vector<uint64_t> versions;  // ascending
  // Set by engram-memory when a page of version reimport_version failed its checksum (or the file
  // was refused as corrupt at load): that version needs `engram table import` again, which
  // writes a new version even when the source is unchanged. 0 = no mark.
  uint64_t reimport_version = 0;
  std::string reimport_reason;
  bool live_needs_reimport() const { return live_version != 0 && reimport_version == live_version; }
};

// Which version of a table should be live (Catalog::SetLive).
struct LiveVersion {
  std::string model;
  uint32_t layer = 0;
  uint64_t version = 0;
};

// One row's decayed access count.
struct RowCount {
  uint64_t row = 0;
  double count = 0;
};
// The hottest-first order: higher count first, then lower row id.
inline bool Hotter(const RowCount& a, const RowCount& b) {
  return a.count != b.count ? a.count > b.count : a.row < b.row;
}

class Catalog {
 public:
  enum class Mode { kReadWrite, kReadOnly };

  // Opens STORE/catalog. kReadWrite creates it when absent; FAILED_PRECONDITION naming the
  // directory when another process holds it. kReadOnly: NOT_FOUND when there is no catalog.
  static absl::StatusOr<std::unique_ptr<Catalog>> Open(const std::string& store_dir, Mode mode);
  ~Catalog();
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;

  const std::string& store_dir() const { return store_dir_; }
  bool read_only() const { return read_only_; }

  // Every table, ordered by (model, layer).
  absl::StatusOr<std::vector<TableRecord>> ListTables() const;
  // nullopt when the table is unknown.
  absl::StatusOr<std::optional<TableRecord>> GetTable(absl::string_view model,
                                                      uint32_t layer) const;
  // NOT_FOUND naming the table and version when absent.
  absl::StatusOr<Manifest> GetManifest(absl::string_view model, uint32_t layer,
                                       uint64_t version) const;
  // Adds every manifest as a new version of its table and makes it live, in one synced
  // WriteBatch: either all become live or none does.
  absl::Status CommitVersions(absl::Span<const Manifest> manifests);
  // Makes existing versions live (rollback), all in one synced WriteBatch: either every table
  // switches or none does. NOT_FOUND naming the first table or version that does not exist.
  absl::Status SetLive(absl::Span<const LiveVersion> tables);
  absl::Status SetLive(absl::string_view model, uint32_t layer, uint64_t version) {
    return SetLive({LiveVersion{std::string(model), layer, version}});
  }

  // Marks `version` of a table for re-import with a reason (one synced write); a later
  // CommitVersions of the table clears the mark. NOT_FOUND for an unknown table.
  absl::Status MarkForReimport(absl::string_view model, uint32_t layer, uint64_t version,
                               absl::string_view reason);

  // Replaces the stored statistics of a table with `counts`.
  absl::Status SaveStats(absl::string_view model, uint32_t layer,
                         absl::Span<const RowCount> counts);
  // The stored statistics, hottest first; at most `limit` (0 = all).
  absl::StatusOr<std::vector<RowCount>> LoadStats(absl::string_view model, uint32_t layer,
                                                  size_t limit = 0) const;

 private:
  Catalog() = default;
  absl::Status PutTableRecord(void* batch, const TableRecord& record);

  std::string store_dir_;
  bool read_only_ = false;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // default, stats
};

// At most the first 64 characters of `model`, with every character other than a letter, digit,
// '.' or '-' replaced by '_': a model name safe inside file and shared-memory names.
std::string SanitizedModelName(absl::string_view model);

// STORE/tables/<model dir>/layer-<L>: where a table's row files and manifests live. The model
// name is kept when it is a safe file name, otherwise sanitised and suffixed with its CRC-32C.
std::string TableDir(const std::string& store_dir, absl::string_view model, uint32_t layer);
// The file names of a version inside TableDir: "v<V>.rows" and "v<V>.manifest.json".
std::string RowFileName(uint64_t version);
std::string ManifestFileName(uint64_t version);

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_CATALOG_H_
