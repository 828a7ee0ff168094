#include "memory_tier/table_set.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/status.h"

namespace engram {
namespace {

// Maps the cascade's tier indices to the metric children of their kinds.
class MetricsObserver : public StoreObserver {
 public:
  MetricsObserver(TierMetrics* metrics, std::vector<TierKind> kinds) {
    for (TierKind k : kinds) children_.push_back(&metrics->tier(k));
  }
  void OnTierLookup(size_t tier, uint64_t asked, uint64_t served, uint64_t bytes,
                    double seconds) override {
    TierMetrics::TierChildren* c = children_[tier];
    c->lookups->Increment();
    c->rows_served->Increment(static_cast<double>(served));
    c->bytes_read->Increment(static_cast<double>(bytes));
    c->misses->Increment(static_cast<double>(asked - served));
    c->latency->Observe(seconds);
  }

 private:
  std::vector<TierMetrics::TierChildren*> children_;
};

IoReaderOptions IoOptions(const TierConfig& c) {
  IoReaderOptions o;
  o.backend = *ParseIoBackend(c.nvme.io_backend);
  o.depth = c.nvme.io_depth;
  o.max_read_bytes = c.nvme.max_read_bytes;
  o.register_buffers = c.nvme.register_buffers;
  o.register_files = c.nvme.register_buffers;
  o.fault_hook = c.nvme.fault_hook;
  return o;
}

// Opens the tiers of one table; an error here refuses the table.
absl::Status OpenTable(ServedTable& t, const TierConfig& config, uint64_t dram_budget) {
  const std::string path = config.store.dir + "/" + t.manifest.row_file;
  NvmeTier::Options no;
  no.io = IoOptions(config);
  no.direct_io = config.nvme.direct_io;
  no.max_readers = config.nvme.readers_per_table;
  no.corruption = t.integrity.get();
  ENGRAM_ASSIGN_OR_RETURN(t.nvme, NvmeTier::Open(t.manifest, path, no));
  const RowLayout& l = t.manifest.layout;
  const bool resident = dram_budget >= ResidentGeometry(l.rows, l.row_bytes).size_bytes;
  // Resident tables are verified while they load; the others here, when asked to.
  if (!resident && config.store.verify == "full") {
    ENGRAM_RETURN_IF_ERROR(VerifyRowFile(t.manifest, path));
  }
  if (dram_budget > 0) {
    DramTier::Options d;
    d.shm_name = ArenaShmName(config.dram.shm_prefix, config.store.dir, t.manifest.model,
                              t.manifest.layer, t.manifest.version);
    d.budget_bytes = dram_budget;
    d.ways = config.dram.ways;
    d.huge_pages = config.dram.huge_pages;
    d.shm_mode = config.dram.shm_mode == "0600" ? 0600 : 0640;
    d.lock = config.dram.lock;
    d.model = t.manifest.model;
    d.layer = t.manifest.layer;
    d.version = t.manifest.version;
    auto dram = DramTier::Create(d, l.rows, l.row_bytes);
    if (dram.ok()) {
      t.dram = std::move(*dram);
      if (t.dram->resident()) ENGRAM_RETURN_IF_ERROR(t.dram->LoadResident(t.manifest, path));
    } else if (dram.status().code() == absl::StatusCode::kInvalidArgument) {
      ENGRAM_LOG(WARNING).With("table", t.label)
          << "DRAM share too small for one cache set; NVMe only";
    } else {
      return dram.status();
    }
  }
  return absl::OkStatus();
}

}  // namespace

// ---- TableIntegrity ----------------------------------------------------------------------------

TableIntegrity::TableIntegrity(std::string label, std::array<prometheus::Counter*, 3> counters,
                               std::function<void()> on_new_mark)
    : label_(std::move(label)), counters_(counters), on_new_mark_(std::move(on_new_mark)) {}

bool TableIntegrity::MarkLocked(const absl::Status& error) {
  if (!reason_.empty()) return false;
  reason_ = std::string(error.message());
  return true;
}

void TableIntegrity::OnCorruptPage(uint64_t page, CorruptionSource source,
                                   const absl::Status& error) {
  bool new_mark = false;
  {
    absl::MutexLock lock(&mu_);
    if (!bad_pages_.insert(page).second) return;  // known: counted and logged already
    counters_[static_cast<int>(source)]->Increment();
    new_mark = MarkLocked(error);
  }
  ENGRAM_LOG(ERROR)
          .With("table", label_)
          .With("page", page)
          .With("source", CorruptionSourceName(source))
          .With("error", error.message())
      << "row file page failed its checksum; its rows fail with DATA_LOSS, the table is marked "
         "for re-import (engram table import)";
  if (new_mark && on_new_mark_) on_new_mark_();
}

void TableIntegrity::OnLoadFailure(const absl::Status& error) {
  bool new_mark = false;
  {
    absl::MutexLock lock(&mu_);
    ++load_failures_;
    counters_[static_cast<int>(CorruptionSource::kLoad)]->Increment();
    new_mark = MarkLocked(error);
  }
  if (new_mark && on_new_mark_) on_new_mark_();
}

void TableIntegrity::SetPersistedMark(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  reason_ = reason.empty() ? "marked for re-import in the catalog" : reason;
  persisted_ = true;
}

bool TableIntegrity::needs_reimport() const {
  absl::MutexLock lock(&mu_);
  return !reason_.empty();
}

std::string TableIntegrity::reimport_reason() const {
  absl::MutexLock lock(&mu_);
  return reason_;
}

uint64_t TableIntegrity::corrupt_pages() const {
  absl::MutexLock lock(&mu_);
  return bad_pages_.size() + load_failures_;
}

bool TableIntegrity::TakeUnpersisted(std::string* reason) {
  absl::MutexLock lock(&mu_);
  if (reason_.empty() || persisted_) return false;
  persisted_ = true;
  *reason = reason_;
  return true;
}

// ---- TableSet ----------------------------------------------------------------------------------

namespace {

// "<prefix>-<CRC-32C of the canonical store path>-": what every arena name of this store starts
// with (without the leading '/').
std::string StoreShmPrefix(const std::string& prefix, const std::string& store_dir) {
  std::error_code ec;
  const std::string canonical = std::filesystem::weakly_canonical(store_dir, ec).string();
  return absl::StrFormat("%s-%08x-", prefix, Crc32c(0, canonical.data(), canonical.size()));
}

}  // namespace

std::string ArenaShmName(const std::string& prefix, const std::string& store_dir,
                         const std::string& model, uint32_t layer, uint64_t version) {
  return absl::StrFormat("/%s%s-L%u-v%u", StoreShmPrefix(prefix, store_dir),
                         SanitizedModelName(model), layer, version);
}

int RemoveStaleArenas(const std::string& prefix, const std::string& store_dir,
                      const std::string& shm_dir) {
  const std::string start = StoreShmPrefix(prefix, store_dir);
  std::error_code ec;
  int removed = 0;
  for (const auto& entry : std::filesystem::directory_iterator(shm_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(start, 0) != 0) continue;
    if (shm_unlink(("/" + name).c_str()) == 0) {
      ++removed;
      ENGRAM_LOG(INFO).With("shm", name) << "removed the arena of an earlier run of this store";
    }
  }
  return removed;
}

absl::StatusOr<std::unique_ptr<TableSet>> TableSet::Load(Catalog& catalog, const TierConfig& config,
                                                         TierMetrics* metrics) {
  auto set = std::unique_ptr<TableSet>(new TableSet());
  set->config_ = config;
  set->metrics_ = metrics;
  set->catalog_ = &catalog;
  // A tier killed with SIGKILL leaves its arenas in /dev/shm. Same-named ones would be replaced
  // below, but a version, table or DRAM budget that changed since would leave the rest orphaned
  // for good. The catalog is open read-write here, so no other live tier serves this store: every
  // object of the store's prefix is an earlier run's.
  RemoveStaleArenas(config.dram.shm_prefix, config.store.dir);
  ENGRAM_ASSIGN_OR_RETURN(std::vector<TableRecord> records, catalog.ListTables());
  for (TableRecord& r : records) {
    if (r.live_version == 0) continue;
    auto t = std::make_unique<ServedTable>();
    t->label = absl::StrCat(r.model, "/", r.layer);
    t->integrity = std::make_unique<TableIntegrity>(
        t->label, metrics->AddCorruptPageCounters(t->label), [raw = set.get()] { raw->Wake(); });
    if (r.live_needs_reimport()) t->integrity->SetPersistedMark(r.reimport_reason);
    t->record = std::move(r);
    auto m = catalog.GetManifest(t->record.model, t->record.layer, t->record.live_version);
    if (m.ok()) {
      t->manifest = std::move(*m);
    } else {
      t->unavailable_reason = std::string(m.status().message());
    }
    set->tables_.push_back(std::move(t));
  }
  // The DRAM plan: resident by layer order while whole tables fit, then shares of the rest.
  std::vector<ServedTable*> order;
  for (auto& t : set->tables_) {
    if (t->unavailable_reason.empty()) order.push_back(t.get());
  }
  std::stable_sort(order.begin(), order.end(), [](const ServedTable* a, const ServedTable* b) {
    return a->manifest.layer != b->manifest.layer ? a->manifest.layer < b->manifest.layer
                                                  : a->manifest.model < b->manifest.model;
  });
  std::vector<uint64_t> budget(order.size(), 0);
  uint64_t remaining = config.dram.bytes, rest_bytes = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const RowLayout& l = order[i]->manifest.layout;
    const uint64_t size = ResidentGeometry(l.rows, l.row_bytes).size_bytes;
    if (size <= remaining) {
      budget[i] = size;
      remaining -= size;
    } else {
      rest_bytes += size;
    }
  }
  for (size_t i = 0; i < order.size(); ++i) {
    if (budget[i] > 0) continue;
    const RowLayout& l = order[i]->manifest.layout;
    const double share = static_cast<double>(ResidentGeometry(l.rows, l.row_bytes).size_bytes) /
                         static_cast<double>(rest_bytes);
    budget[i] = static_cast<uint64_t>(share * static_cast<double>(remaining));
  }
  for (size_t i = 0; i < order.size(); ++i) {
    ServedTable& t = *order[i];
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = OpenTable(t, config, budget[i]);
    if (s.code() == absl::StatusCode::kDataLoss) t.integrity->OnLoadFailure(s);
    if (!s.ok()) {
      t.unavailable_reason =
          absl::StrCat("version ", t.manifest.version, " refused: ", s.message());
      t.dram.reset();
      t.nvme.reset();
      continue;
    }
    std::vector<Tier*> tiers;
    std::vector<TierKind> kinds;
    if (t.dram) {
      tiers.push_back(t.dram.get());
      kinds.push_back(TierKind::kDram);
    }
    tiers.push_back(t.nvme.get());
    kinds.push_back(TierKind::kNvme);
    t.observer = std::make_unique<MetricsObserver>(metrics, kinds);
    TieredStore::Options so;
    so.queue_rows = config.placement.queue_rows;
    so.promote = config.placement.promote;
    so.stats.tracked_rows = config.placement.tracked_rows;
    so.stats.sketch_width = t.dram ? t.dram->capacity_rows() : config.placement.tracked_rows;
    t.store = std::make_unique<TieredStore>(tiers, t.dram.get(), t.manifest.layout.rows, so,
                                            t.observer.get());
    // Warm start: yesterday's hottest rows seed the statistics and fill the cache.
    ENGRAM_ASSIGN_OR_RETURN(
        std::vector<RowCount> saved,
        catalog.LoadStats(t.manifest.model, t.manifest.layer, config.placement.tracked_rows));
    t.store->SeedStats(saved);
    if (t.dram && !t.dram->resident()) {
      absl::Status w = t.store->WarmUp(saved);
      if (!w.ok()) {
        ENGRAM_LOG(WARNING).With("table", t.label).With("error", w.message()) << "warm-up failed";
      }
      t.dram->MarkReady();
    }
    t.metrics = metrics->AddTable(t.label);
    t.serving = true;
    ENGRAM_LOG(INFO)
            .With("table", t.label)
            .With("version", t.manifest.version)
            .With("rows", t.manifest.layout.rows)
            .With("row_bytes", t.manifest.layout.row_bytes)
            .With("dram",
                  t.dram ? std::string(ArenaLayoutName(t.dram->resident() ? ArenaLayout::kResident
                                                                          : ArenaLayout::kCache))
                         : std::string("none"))
            .With("dram_rows", t.dram ? t.dram->occupied_rows() : 0)
            .With("io_backend", IoBackendName(t.nvme->backend()))
            .With("direct_io", t.nvme->direct_io() ? "true" : "false")
            .With("warm_rows", saved.size())
            .With("seconds",
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count())
        << "table loaded";
  }
  int serving = 0, refused = 0;
  for (auto& t : set->tables_) {
    if (t->serving) {
      ++serving;
    } else {
      ++refused;
      ENGRAM_LOG(ERROR).With("table", t->label).With("reason", t->unavailable_reason)
          << "refusing to serve table";
    }
  }
  if (set->tables_.empty()) {
    // Most likely a mistyped --store: the catalog was just created there, empty.
    ENGRAM_LOG(WARNING).With("store", config.store.dir)
        << "the store has no tables; every request will be refused (run engram table import)";
  }
  metrics->tables_serving->Set(serving);
  metrics->tables_refused->Set(refused);
  set->UpdateGauges();
  set->maintenance_ = std::thread([raw = set.get()] { raw->MaintenanceLoop(); });
  return set;
}

TableSet::~TableSet() {
  StopMaintenance();
  Retire();
}

void TableSet::StopMaintenance() {
  {
    absl::MutexLock lock(&maintenance_mu_);
    stop_ = true;
  }
  if (maintenance_.joinable()) maintenance_.join();
}

void TableSet::Wake() {
  absl::MutexLock lock(&maintenance_mu_);
  wake_ = true;
}

void TableSet::MaintenanceLoop() {
  const uint64_t rate = config_.store.scrub_bytes_per_s;
  // The scrub is paced by a schedule: after n bytes, the next read waits until n / rate seconds
  // after the previous one was due (never earlier than now, so a pause earns no burst).
  absl::Time next = absl::Now();
  while (true) {
    PersistMarks();
    {
      absl::MutexLock lock(&maintenance_mu_);
      auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(maintenance_mu_) {
        return stop_ || wake_;
      };
      if (rate == 0) {
        maintenance_mu_.Await(absl::Condition(&woken));
      } else {
        maintenance_mu_.AwaitWithDeadline(absl::Condition(&woken), next);
      }
      if (stop_) break;
      if (wake_) {
        wake_ = false;
        continue;  // persist the new mark first
      }
    }
    const absl::Time start = std::max(next, absl::Now());
    const uint64_t bytes = ScrubStep();
    next = bytes == 0 ? absl::Now() + absl::Seconds(1)  // nothing served: look again later
                      : start + absl::Seconds(static_cast<double>(bytes) / static_cast<double>(rate));
  }
  PersistMarks();
}

void TableSet::PersistMarks() {
  for (auto& t : tables_) {
    std::string reason;
    if (t->integrity->TakeUnpersisted(&reason)) {
      absl::Status s =
          catalog_->MarkForReimport(t->record.model, t->record.layer, t->manifest.version, reason);
      if (s.ok()) {
        ENGRAM_LOG(WARNING).With("table", t->label).With("version", t->manifest.version)
            << "marked for re-import in the catalog; run engram table import to rewrite it";
      } else {
        ENGRAM_LOG(ERROR).With("table", t->label).With("error", s.message())
            << "cannot mark the table for re-import in the catalog";
      }
    }
  }
}

uint64_t TableSet::ScrubStep() {
  if (tables_.empty()) return 0;
  for (size_t tried = 0; tried <= tables_.size(); ++tried) {
    if (scrub_table_ >= tables_.size()) {
      scrub_table_ = 0;
      scrub_page_ = 0;
      if (scrub_pass_read_) metrics_->scrub_passes->Increment();
      scrub_pass_read_ = false;
    }
    ServedTable& t = *tables_[scrub_table_];
    const uint64_t pages = t.serving ? t.nvme->layout().pages() : 0;
    if (scrub_page_ >= pages) {
      ++scrub_table_;
      scrub_page_ = 0;
      continue;
    }
    const uint32_t count =
        static_cast<uint32_t>(std::min<uint64_t>(NvmeTier::kMaxScrubPages, pages - scrub_page_));
    uint64_t bad = 0;
    absl::Status s = t.nvme->ScrubPages(scrub_page_, count, &bad);
    if (!s.ok() && !scrub_error_logged_) {
      scrub_error_logged_ = true;  // once: an unreadable disk would flood the log
      ENGRAM_LOG(ERROR).With("table", t.label).With("error", s.message()) << "scrub read failed";
    }
    scrub_page_ += count;
    scrub_pass_read_ = true;
    const uint64_t bytes = uint64_t{count} * t.nvme->layout().page_bytes;
    metrics_->scrub_bytes->Increment(static_cast<double>(bytes));
    return bytes;
  }
  return 0;
}

absl::StatusOr<ServedTable*> TableSet::Resolve(absl::string_view model, uint32_t layer,
                                               uint64_t version) {
  for (auto& t : tables_) {
    if (t->record.model != model || t->record.layer != layer) continue;
    if (!t->serving) {
      return absl::FailedPreconditionError(absl::StrCat("table ", model, " layer ", layer,
                                                        " is not served: ", t->unavailable_reason));
    }
    if (version != 0 && version != t->manifest.version) {
      return absl::FailedPreconditionError(
          absl::StrCat("table ", model, " layer ", layer, " version ", version,
                       " is not served (serving v", t->manifest.version, ")"));
    }
    return t.get();
  }
  // The name comes from the client: echo at most kEchoBytes of it (a request may carry megabytes),
  // and list at most kListedTables of the tables served.
  constexpr size_t kEchoBytes = 128;
  constexpr size_t kListedTables = 16;
  std::vector<std::string> names;
  for (auto& t : tables_) {
    if (names.size() == kListedTables) {
      names.push_back(absl::StrCat("... ", tables_.size() - kListedTables, " more"));
      break;
    }
    names.push_back(t->label);
  }
  const std::string shown =
      model.size() <= kEchoBytes
          ? std::string(model)
          : absl::StrCat(model.substr(0, kEchoBytes), "... (", model.size(), " bytes)");
  return absl::InvalidArgumentError(absl::StrCat("unknown table ", shown, " layer ", layer,
                                                 " (tables: ", absl::StrJoin(names, ", "), ")"));
}

absl::Status TableSet::FlushStats(Catalog& catalog, double elapsed_s) {
  const double factor = std::pow(0.5, elapsed_s / config_.placement.half_life_s);
  for (auto& t : tables_) {
    if (!t->serving) continue;
    t->store->DecayStats(factor);
    std::vector<RowCount> hot = t->store->Hottest(config_.placement.tracked_rows);
    ENGRAM_RETURN_IF_ERROR(catalog.SaveStats(t->manifest.model, t->manifest.layer, hot));
  }
  metrics_->stats_flushes->Increment();
  return absl::OkStatus();
}

void TableSet::UpdateGauges() {
  absl::MutexLock lock(&gauges_mu_);
  int64_t in_flight = 0, fallbacks = 0, unlocked = 0, reimport = 0;
  uint64_t reads = 0, short_reads = 0, retries = 0, admitted = 0, rejected = 0, dropped = 0;
  for (auto& t : tables_) {
    if (t->integrity->needs_reimport()) ++reimport;
    if (!t->serving) continue;
    const IoCounters& c = t->nvme->counters();
    in_flight += c.in_flight.load();
    fallbacks += c.uring_fallbacks.load();
    reads += c.reads.load();
    short_reads += c.short_reads.load();
    retries += c.retries.load();
    admitted += t->store->promotions();
    rejected += t->store->rejections();
    dropped += t->store->dropped();
    if (t->dram) {
      if (!t->dram->arena().locked()) ++unlocked;
      t->metrics.occupancy->Set(static_cast<double>(t->dram->occupied_rows()) /
                                static_cast<double>(t->dram->capacity_rows()));
      t->metrics.arena_bytes->Set(static_cast<double>(t->dram->arena().size()));
    }
  }
  metrics_->nvme_queue_depth->Set(static_cast<double>(in_flight));
  metrics_->nvme_uring_fallback_readers->Set(static_cast<double>(fallbacks));
  metrics_->arenas_unlocked->Set(static_cast<double>(unlocked));
  metrics_->tables_reimport->Set(static_cast<double>(reimport));
  auto advance = [](prometheus::Counter* c, uint64_t now, uint64_t* exported) {
    if (now > *exported) c->Increment(static_cast<double>(now - *exported));
    *exported = now;
  };
  advance(metrics_->nvme_reads, reads, &exported_reads_);
  advance(metrics_->nvme_short_reads, short_reads, &exported_short_);
  advance(metrics_->nvme_retries, retries, &exported_retries_);
  advance(metrics_->promotions_admitted, admitted, &exported_admitted_);
  advance(metrics_->promotions_rejected, rejected, &exported_rejected_);
  advance(metrics_->promotions_dropped, dropped, &exported_dropped_);
}

void TableSet::Retire() {
  for (auto& t : tables_) {
    if (t->dram) t->dram->Retire();
  }
}

}  // namespace engram
