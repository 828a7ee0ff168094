// File: memory_tier/table_set.h
//
// The tables engram-memory serves: for every table in the catalog, its live version with its
// tiers (DRAM arena + NVMe row file) behind a TieredStore. Loading a version checks its row file
// first; a missing or corrupt file means the server refuses that version (the table is listed with
// serving = false and the reason, and requests for it get FAILED_PRECONDITION), while every other
// table is served normally.
//
// DRAM budget: tables become resident in order of Engram layer (earliest first: layer 1 has the
// least time to hide a miss), while their whole table fits the remaining budget; the tables left
// share the rest as cache arenas in proportion to their size.
#ifndef ENGRAM_MEMORY_TIER_TABLE_SET_H_
#define ENGRAM_MEMORY_TIER_TABLE_SET_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "memory_tier/catalog.h"
#include "memory_tier/dram_tier.h"
#include "memory_tier/nvme_tier.h"
#include "memory_tier/tier_config.h"
#include "memory_tier/tier_metrics.h"
#include "memory_tier/tiered_store.h"

namespace engram {

// One table and its live version.
struct ServedTable {
  TableRecord record;
  Manifest manifest;  // of the live version
  std::string label;  // "model/layer", the metrics label
  bool serving = false;
  std::string unavailable_reason;
  std::unique_ptr<DramTier> dram;  // null when the table got no DRAM
  std::unique_ptr<NvmeTier> nvme;
  std::unique_ptr<StoreObserver> observer;
  std::unique_ptr<TieredStore> store;
  TierMetrics::TableChildren metrics{};
};

class TableSet {
 public:
  // Loads every table of the catalog (blocking: verification, resident loads, warm start).
  // Individual tables may be refused; only a catalog failure is an error.
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
  // Refreshes gauges sampled from the tiers (queue depth, occupancy, I/O counters).
  void UpdateGauges();
  // Marks every arena retired (shutdown).
  void Retire();

 private:
  TableSet() = default;
  TierConfig config_;
  TierMetrics* metrics_ = nullptr;
  std::vector<std::unique_ptr<ServedTable>> tables_;
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
