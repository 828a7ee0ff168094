// File: memory_tier/table_set.h
//
// The tables engram-memory serves: for every table in the catalog, its live version with its
// tiers (DRAM arena + NVMe row file) behind a TieredStore. Loading a version checks its row file
// first; a missing or corrupt file means the server refuses that version (the table is listed with
// serving = false and the reason, and requests for it get FAILED_PRECONDITION), while every other
// table is served normally.
//
// Integrity: every page read from a row file is checked (nvme_tier.h, dram_tier.h); a bad page
// fails its rows with DATA_LOSS, is counted once in engram_row_file_corrupt_pages_total and marks
// the table's live version for re-import in the catalog (TableIntegrity). A maintenance thread
// persists those marks and scrubs every served row file at store.scrub_bytes_per_s.
//
// DRAM budget: tables become resident in order of Engram layer (earliest first: layer 1 has the
// least time to hide a miss), while their whole table fits the remaining budget; the tables left
// share the rest as cache arenas in proportion to their size.
#ifndef ENGRAM_MEMORY_TIER_TABLE_SET_H_
#define ENGRAM_MEMORY_TIER_TABLE_SET_H_

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "memory_tier/catalog.h"
#include "memory_tier/dram_tier.h"
#include "memory_tier/nvme_tier.h"
#include "memory_tier/tier_config.h"
#include "memory_tier/tier_metrics.h"
#include "memory_tier/tiered_store.h"

namespace engram {

// What is known of one table's row-file integrity: the bad pages found (each counted once) and
// whether its live version is marked for re-import. Told from lookup threads, the scrub and the
// load; read by TableInfo; the mark is persisted to the catalog by the maintenance thread.
class TableIntegrity : public CorruptionObserver {
 public:
  // `counters`: engram_row_file_corrupt_pages_total{table, source} by CorruptionSource.
  // `on_new_mark` runs (without locks held) when the table is newly marked.
  TableIntegrity(std::string label, std::array<prometheus::Counter*, 3> counters,
                 std::function<void()> on_new_mark);

  void OnCorruptPage(uint64_t page, CorruptionSource source, const absl::Status& error) override;
  // The row file was refused at load as corrupt (DATA_LOSS): counted as one page, source load.
  void OnLoadFailure(const absl::Status& error);
  // The catalog already marks the live version (found at load): nothing to persist.
  void SetPersistedMark(const std::string& reason);

  bool needs_reimport() const;
  std::string reimport_reason() const;
  uint64_t corrupt_pages() const;
  // When the mark is not yet in the catalog: its reason, once (true).
  bool TakeUnpersisted(std::string* reason);

 private:
  // Returns true when this is the table's first mark.
  bool MarkLocked(const absl::Status& error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string label_;
  const std::array<prometheus::Counter*, 3> counters_;
  const std::function<void()> on_new_mark_;
  mutable absl::Mutex mu_;
  absl::flat_hash_set<uint64_t> bad_pages_ ABSL_GUARDED_BY(mu_);
  uint64_t load_failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::string reason_ ABSL_GUARDED_BY(mu_);  // non-empty = marked
  bool persisted_ ABSL_GUARDED_BY(mu_) = false;
};

// One table and its live version.
struct ServedTable {
  TableRecord record;
  Manifest manifest;  // of the live version
  std::string label;  // "model/layer", the metrics label
  bool serving = false;
  std::string unavailable_reason;
  std::unique_ptr<DramTier> dram;  // null when the table got no DRAM
  std::unique_ptr<NvmeTier> nvme;
  std::unique_ptr<TableIntegrity> integrity;  // every table, refused ones included
  std::unique_ptr<StoreObserver> observer;
  std::unique_ptr<TieredStore> store;
  TierMetrics::TableChildren metrics{};
};

class TableSet {
 public:
  // Loads every table of the catalog (blocking: verification, resident loads, warm start), then
  // starts the maintenance thread (re-import marks, scrub). Individual tables may be refused;
  // only a catalog failure is an error. `catalog` must outlive the TableSet.
  static absl::StatusOr<std::unique_ptr<TableSet>> Load(Catalog& catalog, const TierConfig& config,
                                                        TierMetrics* metrics);
  ~TableSet();

  // The table for a request. INVALID_ARGUMENT for an unknown table (naming the tables served);
  // FAILED_PRECONDITION for a refused table (with its reason) or a version other than the one
  // served.
  absl::StatusOr<ServedTable*> Resolve(absl::string_view model, uint32_t layer, uint64_t version);
  const std::vector<std::unique_ptr<ServedTable>>& tables() const { return tables_; }

  // Decays every table's statistics by the time elapsed and persists them to the catalog.
  absl::Status FlushStats(Catalog& catalog, double elapsed_s);
  // Refreshes gauges sampled from the tiers (queue depth, occupancy, I/O counters, tables
  // needing re-import).
  void UpdateGauges();
  // Marks every arena retired (shutdown).
  void Retire();
  // Stops the maintenance thread after persisting the pending re-import marks (idempotent; the
  // destructor calls it).
  void StopMaintenance();

 private:
  TableSet() = default;
  void Wake();
  void MaintenanceLoop();
  // Writes the re-import marks not yet in the catalog.
  void PersistMarks();
  // Scrubs the next pages after the cursor; returns the bytes read (0: nothing to scrub).
  uint64_t ScrubStep();

  TierConfig config_;
  TierMetrics* metrics_ = nullptr;
  Catalog* catalog_ = nullptr;
  std::vector<std::unique_ptr<ServedTable>> tables_;
  absl::Mutex maintenance_mu_;
  bool stop_ ABSL_GUARDED_BY(maintenance_mu_) = false;
  bool wake_ ABSL_GUARDED_BY(maintenance_mu_) = false;
  std::thread maintenance_;
  size_t scrub_table_ = 0;  // the scrub's cursor (maintenance thread only)
  uint64_t scrub_page_ = 0;
  bool scrub_pass_read_ = false;  // this pass has read something
  bool scrub_error_logged_ = false;
  // Last I/O counter values exported, so counters advance by the difference.
  absl::Mutex gauges_mu_;
  uint64_t exported_reads_ = 0, exported_short_ = 0, exported_retries_ = 0;
  uint64_t exported_admitted_ = 0, exported_rejected_ = 0, exported_dropped_ = 0;
};

// The shared-memory name of a table version's arena (see TierConfig::Dram::shm_prefix):
// "/<prefix>-<CRC-32C of the canonical store path, 8 hex digits>-<model>-L<layer>-v<version>".
std::string ArenaShmName(const std::string& prefix, const std::string& store_dir,
                         const std::string& model, uint32_t layer, uint64_t version);

// Unlinks every arena of `store_dir` under `prefix` listed in `shm_dir` (the objects an earlier,
// killed run left behind); returns how many. Called by Load before it creates arenas; only the
// store's one writer (which holds the catalog open read-write) may call it. Workers that still
// map an unlinked arena keep their mapping until they drop it.
int RemoveStaleArenas(const std::string& prefix, const std::string& store_dir,
                      const std::string& shm_dir = "/dev/shm");

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_TABLE_SET_H_
