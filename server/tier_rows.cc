#include "server/tier_rows.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/row_format.h"
#include "common/status.h"
#include "memory_tier/tier_client.h"
#include "model/engram_constants.h"
#include "model/model.h"
#include "server/worker_metrics.h"

namespace engram {
namespace {

// Arena hits are reported to the tier piggybacked on the next batch of the same layer, or in a
// report of their own once this many have accumulated.
constexpr size_t kArenaReportRows = 4096;
// How long one connection attempt waits for the channel; short, so shutdown stays prompt.
constexpr absl::Duration kConnectTimeout = absl::Seconds(1);
// Keepalive pings on the tier's channel (the tier accepts pings every 5 s or slower).
constexpr absl::Duration kKeepaliveTime = absl::Seconds(10);
constexpr absl::Duration kKeepaliveTimeout = absl::Seconds(5);
// Deadline of the unary calls to the tier (health, table info).
constexpr absl::Duration kProbeTimeout = absl::Seconds(2);

// The code a request gets when the tier refuses one of its batches. The batch is the worker's,
// not the client's: a refused batch (INVALID_ARGUMENT, OUT_OF_RANGE: the worker's batches do not
// fit the tier's limits or its table) is INTERNAL, a table the tier no longer has is
// FAILED_PRECONDITION (stale), and a stream cancelled under the batch is UNAVAILABLE (retry).
absl::StatusCode RequestCode(absl::StatusCode tier_code) {
  switch (tier_code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return absl::StatusCode::kInternal;
    case absl::StatusCode::kNotFound:
      return absl::StatusCode::kFailedPrecondition;
    case absl::StatusCode::kCancelled:
      return absl::StatusCode::kUnavailable;
    default:
      return tier_code;
  }
}

}  // namespace

// One working connection to the tier. Replaced as a whole on reconnect.
struct TierRowBackend::Connection {
  uint64_t generation = 0;
  std::unique_ptr<TierClient> client;
  std::vector<TableDescription> tables;              // [engram layer index]
  std::vector<std::shared_ptr<ArenaReader>> arenas;  // [engram layer index]; null = not shared
  std::unique_ptr<PrefetchStream> stream;
};

// What a broken connection leaves usable: its resident arenas, per Engram layer index (null for a
// layer without one), with their tables' descriptions.
struct TierRowBackend::ResidentArenas {
  std::vector<TableDescription> tables;
  std::vector<std::shared_ptr<ArenaReader>> arenas;
};

// One batch on the stream: which fetch it fills and where.
struct TierRowBackend::Pending {
  std::shared_ptr<RowFetch> fetch;
  std::vector<uint32_t> positions;         // indices into fetch->row_ids()
  std::shared_ptr<std::atomic<int>> left;  // batches of the fetch still outstanding
  RowDType dtype;
  uint32_t row_bytes;
};

TierRowBackend::TierRowBackend(const Model& model, TierRowBackendOptions options,
                               WorkerMetrics& metrics)
    : model_(model), options_(std::move(options)), metrics_(metrics) {
  absl::MutexLock lock(&mu_);
  arena_hits_.resize(model_.config().engram.layer_ids.size());
  unavailable_reason_ = absl::UnavailableError(
      absl::StrCat("not connected to the memory tier at ", options_.address, " yet"));
}

TierRowBackend::~TierRowBackend() {
  std::shared_ptr<Connection> connection;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    connection.swap(connection_);
  }
  if (thread_.joinable()) thread_.join();
  std::vector<std::shared_ptr<Connection>> retired;
  {
    absl::MutexLock lock(&mu_);
    retired.swap(retired_);
  }
  // Destroying a stream waits for its last callbacks (pending batches complete through
  // OnResult), so it happens outside mu_.
  if (connection && connection->stream) connection->stream->Cancel();
  connection.reset();
  retired.clear();
  std::vector<std::shared_ptr<Pending>> pending;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, p] : pending_) pending.push_back(p);
    pending_.clear();
  }
  for (auto& p : pending) p->fetch->Complete(absl::UnavailableError("the worker is shutting down"));
}

void TierRowBackend::SetListener(std::function<void(bool)> listener) {
  listener_ = std::move(listener);
}

void TierRowBackend::Start() {
  thread_ = std::thread([this] { ConnectLoop(); });
}

absl::Status TierRowBackend::Ready() const {
  absl::MutexLock lock(&mu_);
  return connection_ && !unresponsive_ ? absl::OkStatus() : unavailable_reason_;
}

absl::StatusOr<std::vector<ResidentTable>> TierRowBackend::ResidentTables() const {
  std::shared_ptr<Connection> c;
  {
    absl::MutexLock lock(&mu_);
    if (!connection_) return unavailable_reason_;
    c = connection_;
  }
  const std::vector<int>& layer_ids = model_.config().engram.layer_ids;
  std::vector<ResidentTable> tables;
  for (size_t li = 0; li < c->tables.size(); ++li) {
    const TableDescription& t = c->tables[li];
    const std::shared_ptr<ArenaReader>& arena = c->arenas[li];
    if (arena == nullptr || !arena->valid() || !arena->resident()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the table of Engram layer ", layer_ids[li],
                       " is not resident in a shared-memory arena on this host (",
                       arena == nullptr  ? "no arena opened here"
                       : !arena->valid() ? "its arena was retired"
                                         : "the tier's DRAM only caches it",
                       "); its rows cannot be read in place by the GPU"));
    }
    ResidentTable r;
    r.dtype = t.dtype;
    r.head_dim = t.head_dim;
    r.rows = t.rows;
    r.data = arena->base() + arena->data_offset();
    r.stride = arena->stride();
    r.mapping = arena;
    tables.push_back(std::move(r));
  }
  return tables;
}

std::string TierRowBackend::Name() const {
  return absl::StrCat("the memory tier at ", options_.address);
}

void TierRowBackend::RowsOverdue(const absl::Status& why) {
  std::vector<std::shared_ptr<Pending>> failed;
  absl::Status reason;
  {
    absl::MutexLock lock(&mu_);
    if (!connection_ || unresponsive_) return;
    unresponsive_ = true;
    unavailable_reason_ = absl::UnavailableError(absl::StrCat(
        "the memory tier at ", options_.address, " stopped answering: ", why.message()));
    reason = unavailable_reason_;
    // Every fetch waiting on the stream fails now: the next steps must not wait for them again.
    for (auto& [id, p] : pending_) failed.push_back(std::move(p));
    pending_.clear();
  }
  metrics_.memory_tier_up.Set(0);
  ENGRAM_LOG(WARNING).With("memory", options_.address)
      << "memory tier stopped answering; not serving until it answers: " << why.message();
  for (auto& p : failed) p->fetch->Complete(reason);
  NotifyListener();
}

void TierRowBackend::Answered(uint64_t generation) {
  {
    absl::MutexLock lock(&mu_);
    if (!unresponsive_ || !connection_ || connection_->generation != generation) return;
    unresponsive_ = false;
  }
  metrics_.memory_tier_up.Set(1);
  ENGRAM_LOG(INFO).With("memory", options_.address) << "memory tier answers again";
  NotifyListener();
}

void TierRowBackend::ConnectLoop() {
  absl::Duration backoff = options_.reconnect_initial_backoff;
  absl::Status last_error;
  std::vector<std::shared_ptr<Connection>> retired;
  for (;;) {
    uint64_t generation;
    {
      absl::MutexLock lock(&mu_);
      // Connected: sleep until the stream breaks (OnBroken clears connection_), the tier stops
      // answering (RowsOverdue) or stop.
      auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stop_ || connection_ == nullptr || unresponsive_;
      };
      mu_.Await(absl::Condition(&idle));
      if (stop_) return;
      if (connection_ != nullptr) {
        // Unresponsive: probe its health until it answers (or the stream breaks).
        std::shared_ptr<Connection> c = connection_;
        mu_.Unlock();
        const absl::Status health = c->client->CheckHealth();
        mu_.Lock();
        if (health.ok()) {
          mu_.Unlock();
          Answered(c->generation);
          mu_.Lock();
        } else {
          auto stopping = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_; };
          mu_.AwaitWithTimeout(absl::Condition(&stopping), options_.reconnect_initial_backoff);
        }
        continue;
      }
      generation = ++generation_;
      retired.swap(retired_);
    }
    retired.clear();
    auto connection = Connect(generation);
    if (connection.ok()) {
      backoff = options_.reconnect_initial_backoff;
      last_error = absl::OkStatus();
      SetConnected(*std::move(connection));
      continue;
    }
    // Log each distinct failure once, not every retry.
    if (connection.status() != last_error) {
      ENGRAM_LOG(WARNING)
              .With("memory", options_.address)
              .With("retry_in", absl::FormatDuration(backoff))
          << "memory tier not usable: " << connection.status().message();
      last_error = connection.status();
    }
    {
      absl::MutexLock lock(&mu_);
      unavailable_reason_ =
          absl::UnavailableError(absl::StrCat("the memory tier at ", options_.address,
                                              " is unavailable: ", connection.status().message()));
      auto stopping = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_; };
      mu_.AwaitWithTimeout(absl::Condition(&stopping), backoff);
      if (stop_) return;
    }
    backoff = std::min(backoff * 2, options_.reconnect_max_backoff);
  }
}

absl::StatusOr<std::shared_ptr<TierRowBackend::Connection>> TierRowBackend::Connect(
    uint64_t generation) {
  auto c = std::make_shared<Connection>();
  c->generation = generation;
  TierClientOptions client_options;
  client_options.address = options_.address;
  client_options.tls = options_.tls;
  client_options.connect_timeout = kConnectTimeout;
  // A hung tier (stopped process, dead network without a reset) is noticed by keepalive pings
  // even while no rows are outstanding; the server permits pings this often.
  client_options.keepalive_time = kKeepaliveTime;
  client_options.keepalive_timeout = kKeepaliveTimeout;
  // Health probes of an unresponsive tier give up quickly, so shutdown stays prompt.
  client_options.rpc_timeout = kProbeTimeout;
  auto client = TierClient::Connect(client_options);
  if (!client.ok()) return client.status();
  c->client = *std::move(client);
  // A draining tier still accepts connections for a moment; only a SERVING one is worth a stream.
  ENGRAM_RETURN_IF_ERROR(c->client->CheckHealth());

  const ModelConfig& config = model_.config();
  const EngramHashConstants& hash = model_.hash_constants();
  for (size_t li = 0; li < config.engram.layer_ids.size(); ++li) {
    const int layer = config.engram.layer_ids[li];
    auto table = c->client->FindTable(model_.name(), static_cast<uint32_t>(layer));
    if (!table.ok()) {
      return Annotate(table.status(), absl::StrCat("table of model \"", model_.name(), "\" layer ",
                                                   layer, " (run `engram table import`)"));
    }
    const std::string what = absl::StrCat("memory tier table ", model_.name(), "/", layer, ": ");
    if (!table->serving) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, "not serving: ", table->unavailable_reason));
    }
    if (table->rows != static_cast<uint64_t>(hash.rows_per_layer[li])) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, table->rows, " rows, but the model's hash addresses ",
                       hash.rows_per_layer[li], " (imported from a different model?)"));
    }
    if (table->head_dim != config.engram.head_dim) {
      return absl::FailedPreconditionError(absl::StrCat(
          what, "head_dim ", table->head_dim, ", the model needs ", config.engram.head_dim));
    }
    auto row_bytes = RowBytes(table->dtype, table->head_dim);
    if (!row_bytes.ok() || *row_bytes != table->row_bytes) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, "row_bytes ", table->row_bytes, " does not match its dtype"));
    }
    std::shared_ptr<ArenaReader> arena;
    if (options_.shared_memory) {
      auto opened = ArenaReader::Open(*table);
      if (opened.ok()) {
        arena = *std::move(opened);
      } else {
        ENGRAM_LOG(INFO).With("layer", layer)
            << "rows come in the Prefetch stream (no shared-memory arena: "
            << opened.status().message() << ")";
      }
    }
    c->tables.push_back(*std::move(table));
    c->arenas.push_back(std::move(arena));
  }

  PrefetchStreamOptions stream_options;
  stream_options.on_result = [this, generation](PrefetchResult r) {
    OnResult(generation, std::move(r));
  };
  stream_options.on_broken = [this, generation](const absl::Status& s) { OnBroken(generation, s); };
  auto stream = c->client->OpenPrefetchStream(std::move(stream_options));
  if (!stream.ok()) return stream.status();
  c->stream = *std::move(stream);
  return c;
}

void TierRowBackend::SetConnected(std::shared_ptr<Connection> connection) {
  bool reconnect;
  int shared = 0;
  for (const auto& a : connection->arenas) shared += a != nullptr;
  std::shared_ptr<const ResidentArenas> left_behind;  // unmapped outside mu_
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    connection_ = std::move(connection);
    left_behind.swap(resident_while_away_);
    unresponsive_ = false;
    reconnect = ever_connected_;
    ever_connected_ = true;
  }
  metrics_.memory_tier_up.Set(1);
  if (reconnect) metrics_.memory_tier_reconnects.Increment();
  ENGRAM_LOG(INFO).With("memory", options_.address).With("shared_memory_layers", shared)
      << (reconnect ? "reconnected to the memory tier" : "connected to the memory tier");
  NotifyListener();
}

void TierRowBackend::NotifyListener() {
  if (!listener_) return;
  // Publishes the state as it is now, not the event that triggered the call: a break and a
  // reconnect racing on two threads still leave the listener with the latest state.
  absl::MutexLock notify(&listener_mu_);
  bool connected;
  {
    absl::MutexLock lock(&mu_);
    connected = connection_ != nullptr && !unresponsive_;
  }
  listener_(connected);
}

void TierRowBackend::OnBroken(uint64_t generation, const absl::Status& status) {
  std::shared_ptr<Connection> old;
  {
    absl::MutexLock lock(&mu_);
    if (!connection_ || connection_->generation != generation) return;
    old = std::move(connection_);
    connection_ = nullptr;
    unresponsive_ = false;
    unavailable_reason_ = absl::UnavailableError(
        absl::StrCat("the memory tier at ", options_.address, " went away: ", status.message()));
    auto resident = std::make_shared<ResidentArenas>();
    bool any = false;
    for (size_t li = 0; li < old->arenas.size(); ++li) {
      const std::shared_ptr<ArenaReader>& a = old->arenas[li];
      const bool keep = a != nullptr && a->resident() && a->valid();
      resident->tables.push_back(old->tables[li]);
      resident->arenas.push_back(keep ? a : nullptr);
      any = any || keep;
    }
    if (any) resident_while_away_ = std::move(resident);
  }
  metrics_.memory_tier_up.Set(0);
  ENGRAM_LOG(WARNING).With("memory", options_.address)
      << "memory tier stream broke: " << status.message();
  NotifyListener();
  // This runs inside the stream's own callback, where the stream must not be destroyed: the
  // connect thread releases it before reconnecting.
  absl::MutexLock lock(&mu_);
  retired_.push_back(std::move(old));
}

void TierRowBackend::FetchResident(const ResidentArenas& resident,
                                   const std::shared_ptr<RowFetch>& fetch,
                                   const absl::Status& reason) {
  const int li = fetch->engram_layer_index();
  ArenaReader* arena = li < static_cast<int>(resident.arenas.size()) ? resident.arenas[li].get()
                                                                     : nullptr;
  if (arena == nullptr) {
    fetch->Complete(reason);
    return;
  }
  const TableDescription& table = resident.tables[li];
  absl::Span<const uint64_t> ids = fetch->row_ids();
  if (rows_read_by_device_.load(std::memory_order_relaxed) && arena->resident()) {
    // The device reads these rows from the arena itself (ResidentTables).
    metrics_.engram_rows(RowTier::kDramShm).Increment(static_cast<double>(ids.size()));
    fetch->Complete(absl::OkStatus());
    return;
  }
  std::vector<uint8_t> raw(ids.size() * table.row_bytes);
  std::vector<uint32_t> missing;
  absl::Status s = arena->Lookup(ids, raw.data(), &missing);
  // A retired arena (the tier stopped cleanly after all) reports every row missing.
  if (s.ok() && !missing.empty()) s = reason;
  if (s.ok()) s = DecodeRows(table.dtype, raw.data(), ids.size(), fetch->head_dim(),
                             fetch->mutable_rows());
  if (s.ok()) metrics_.engram_rows(RowTier::kDramShm).Increment(static_cast<double>(ids.size()));
  // These hits are not reported: the tier that would count them is gone.
  fetch->Complete(s);
}

void TierRowBackend::Fetch(const std::shared_ptr<RowFetch>& fetch, uint64_t sequence_id,
                           uint64_t step) {
  std::shared_ptr<Connection> c;
  std::shared_ptr<const ResidentArenas> resident;
  absl::Status reason;
  {
    absl::MutexLock lock(&mu_);
    if (!connection_) {
      resident = resident_while_away_;
      reason = unavailable_reason_;
      if (resident == nullptr) {
        fetch->Complete(reason);
        return;
      }
    }
    c = connection_;
  }
  if (resident != nullptr) {
    FetchResident(*resident, fetch, reason);
    return;
  }
  const int li = fetch->engram_layer_index();
  const TableDescription& table = c->tables[li];
  absl::Span<const uint64_t> ids = fetch->row_ids();
  const int head_dim = fetch->head_dim();

  // Positions the arena did not serve: all of them without a usable arena.
  std::vector<uint32_t> missing;
  bool from_arena = false;
  ArenaReader* arena = c->arenas[li].get();
  if (arena != nullptr && arena->valid() && arena->resident() &&
      rows_read_by_device_.load(std::memory_order_relaxed)) {
    // Every row is in the arena and the device reads it there (ResidentTables): nothing to copy
    // or decode here; the hits are still reported below.
    absl::Status s = CheckRowIds(ids, table.rows);
    if (!s.ok()) {
      fetch->Complete(s);
      return;
    }
    from_arena = true;
  } else if (arena != nullptr && arena->valid()) {
    std::vector<uint8_t> raw(ids.size() * table.row_bytes);
    absl::Status s = arena->Lookup(ids, raw.data(), &missing);
    if (s.ok()) {
      // Decode every row; the misses' garbage is overwritten when their batch arrives.
      s = DecodeRows(table.dtype, raw.data(), ids.size(), head_dim, fetch->mutable_rows());
    }
    from_arena = s.ok();
  }
  if (!from_arena) {
    missing.resize(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) missing[i] = static_cast<uint32_t>(i);
  }
  const size_t hits = ids.size() - missing.size();
  if (from_arena) metrics_.engram_rows(RowTier::kDramShm).Increment(static_cast<double>(hits));
  // Rows the stream must bring are cold (the scheduler may let the sequence sit out until they
  // arrive) unless the tier holds the whole table in DRAM. A co-located worker's arena misses are
  // the tier's DRAM misses, i.e. NVMe reads; a worker elsewhere cannot tell a DRAM row from an
  // NVMe row before the answer, so rows of a table the tier only caches count as cold.
  if (!missing.empty() && table.arena.layout != "resident") fetch->MarkCold();
  if (!missing.empty()) {
    // Rows the stream must bring from a tier that stopped answering: fail now, not after a wait.
    absl::MutexLock lock(&mu_);
    if (unresponsive_) {
      fetch->Complete(unavailable_reason_);
      return;
    }
  }

  // The arena hits join the layer's report, which travels with the next batch sent.
  std::vector<uint64_t> report;
  {
    absl::MutexLock lock(&mu_);
    std::vector<uint64_t>& hits_report = arena_hits_[li];
    for (size_t i = 0, m = 0; hits > 0 && i < ids.size(); ++i) {
      if (m < missing.size() && missing[m] == i) {
        ++m;
        continue;
      }
      hits_report.push_back(ids[i]);
    }
    if (!missing.empty() || hits_report.size() >= kArenaReportRows) report.swap(hits_report);
  }
  if (missing.empty()) {
    fetch->Complete(absl::OkStatus());
    if (report.empty()) return;
  }

  // The misses, in batches the tier accepts; each batch carries the positions it fills.
  const size_t per_batch = static_cast<size_t>(options_.max_rows_per_batch);
  const size_t batches = missing.empty() ? 0 : (missing.size() + per_batch - 1) / per_batch;
  auto left = std::make_shared<std::atomic<int>>(static_cast<int>(batches));
  TableKey key = table.key;
  for (size_t b = 0; b < std::max<size_t>(batches, 1); ++b) {
    PrefetchBatch batch;
    batch.batch_id = next_batch_id_.fetch_add(1);
    batch.table = key;
    batch.sequence_id = sequence_id;
    batch.step = step;
    auto p = std::make_shared<Pending>();
    if (batches > 0) {
      p->fetch = fetch;
      p->left = left;
      p->dtype = table.dtype;
      p->row_bytes = table.row_bytes;
      const size_t begin = b * per_batch, end = std::min(missing.size(), begin + per_batch);
      p->positions.assign(missing.begin() + begin, missing.begin() + end);
      for (uint32_t pos : p->positions) batch.row_ids.push_back(ids[pos]);
    }
    if (b == 0) batch.arena_hits = std::move(report);
    {
      absl::MutexLock lock(&mu_);
      if (p->fetch) pending_[batch.batch_id] = p;
    }
    const uint64_t id = batch.batch_id;
    absl::Status s = c->stream->Send(std::move(batch));
    metrics_.prefetch_batches.Increment();
    if (!s.ok()) {
      {
        absl::MutexLock lock(&mu_);
        pending_.erase(id);
      }
      if (p->fetch) {
        fetch->Complete(absl::UnavailableError(absl::StrCat(
            "sending row ids to the memory tier at ", options_.address, " failed: ", s.message())));
      }
      // A stream that ended without reporting (e.g. closed cleanly by the server) is as broken.
      OnBroken(c->generation, s);
      return;
    }
  }
}

void TierRowBackend::OnResult(uint64_t generation, PrefetchResult r) {
  // Any answer from the server (not a failure the client library made up) shows it is alive.
  if (r.status.code() != absl::StatusCode::kUnavailable &&
      r.status.code() != absl::StatusCode::kCancelled) {
    Answered(generation);
  }
  std::shared_ptr<Pending> p;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(r.batch_id);
    if (it == pending_.end()) return;  // an arena-hit report, or already failed
    p = std::move(it->second);
    pending_.erase(it);
  }
  metrics_.prefetch_round_trip.Observe(absl::ToDoubleSeconds(r.round_trip));
  RowFetch& fetch = *p->fetch;
  if (!r.status.ok()) {
    fetch.Complete(
        absl::Status(RequestCode(r.status.code()),
                     absl::StrCat("memory tier at ", options_.address, ": ", r.status.message())));
    return;
  }
  if (r.row_bytes != p->row_bytes || r.rows.size() != p->positions.size() * p->row_bytes) {
    fetch.Complete(absl::InternalError(absl::StrCat("memory tier answered ", r.rows.size(),
                                                    " bytes for ", p->positions.size(), " rows of ",
                                                    p->row_bytes, " bytes")));
    return;
  }
  const int head_dim = fetch.head_dim();
  const auto* raw = reinterpret_cast<const uint8_t*>(r.rows.data());
  for (size_t j = 0; j < p->positions.size(); ++j) {
    absl::Status s =
        DecodeRows(p->dtype, raw + j * p->row_bytes, 1, head_dim,
                   fetch.mutable_rows() + static_cast<size_t>(p->positions[j]) * head_dim);
    if (!s.ok()) {
      fetch.Complete(s);
      return;
    }
  }
  metrics_.engram_rows(RowTier::kDram).Increment(static_cast<double>(r.served_by.dram));
  metrics_.engram_rows(RowTier::kNvme).Increment(static_cast<double>(r.served_by.nvme));
  if (p->left->fetch_sub(1) == 1) fetch.Complete(absl::OkStatus());
}

}  // namespace engram
