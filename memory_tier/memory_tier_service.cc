#include "memory_tier/memory_tier_service.h"

#include <chrono>
#include <deque>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_message.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/status.h"
#include "memory_tier/arena.h"

namespace engram {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kLoading[] = "engram-memory is loading its tables";

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}
uint64_t Micros(Clock::time_point from, Clock::time_point to) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(to - from).count());
}

}  // namespace

// One Prefetch stream. Batches run on the scheduler; their responses queue in `outbox_` and are
// written one at a time (the callback API allows one outstanding write). The reactor finishes when
// the client is done writing (or the call is cancelled, or the server drains) and every batch
// taken in has been answered, so no scheduled task can outlive it.
//
// Flow control: responses not yet written (`unsent_bytes_`, rows of batches still running
// counted up front) are capped per stream. At the cap the reactor stops reading the client until
// writes drain, so HTTP/2 flow control holds the client back; a client that stops reading its
// responses (stuck, or slower than its requests) cannot grow the server's memory without bound.
//
// A message that is not a PrefetchRequest ends the reading: the stream finishes with
// INVALID_ARGUMENT once the batches before it are answered.
class PrefetchReactor : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  PrefetchReactor(MemoryTierService* service) : service_(service) {
    service_->Register(this);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      if (!ok) {
        reads_done_ = true;
      } else if (finished_) {
        // A cancel or drain on another thread finished the stream while this message was being
        // delivered: drop it. Scheduling it would let its task outlive the reactor (OnDone may
        // follow as soon as this returns), and no read may start after Finish.
        return;
      } else {
        ++read_chain_;  // no Finish() until the next StartRead has been issued (or paused)
      }
    }
    if (!ok) {
      MaybeFinish();
      return;
    }
    const auto received = Clock::now();
    auto request = std::make_shared<v1::PrefetchRequest>();
    absl::Status parsed = ParseMessage(request_, request.get());
    request_.Clear();
    if (!parsed.ok()) {
      service_->metrics_->CountRpc(RpcMethod::kPrefetch, parsed.code());
      {
        absl::MutexLock lock(&mu_);
        reads_done_ = true;  // read nothing more from a client that sends garbage
        bad_request_ = parsed;
        --read_chain_;
      }
      MaybeFinish();
      return;
    }
    // Rows asked for earn arena-hit credit (the read chain alone touches arena_hit_credit_).
    arena_hit_credit_ =
        std::min(MemoryTierService::kArenaHitCreditMax,
                 arena_hit_credit_ + MemoryTierService::kArenaHitsPerAskedRow *
                                         static_cast<uint64_t>(request->row_ids().size()));
    absl::Status hits = service_->RecordArenaHits(*request, &arena_hit_credit_);
    // A batch_id already pending on this stream would be answered twice: refuse the second.
    bool duplicate;
    {
      absl::MutexLock lock(&mu_);
      duplicate = !pending_ids_.insert(request->batch_id()).second;
    }
    absl::StatusOr<ServedTable*> table =
        duplicate ? absl::InvalidArgumentError(absl::StrCat(
                        "batch_id ", request->batch_id(),
                        " is already pending on this stream; batch ids must be unique"))
        : !hits.ok() ? absl::StatusOr<ServedTable*>(hits)
        : request->row_ids().empty()
            ? absl::StatusOr<ServedTable*>(nullptr)
            : service_->Admit(request->table(), request->row_ids().size());
    const bool admitted = table.ok() && *table != nullptr;
    // The rows this batch will send, reserved now so that the cap holds while it runs.
    const uint64_t reserved =
        admitted ? request->row_ids().size() * uint64_t{(*table)->manifest.layout.row_bytes} : 0;
    bool overloaded = false;
    {
      absl::MutexLock lock(&mu_);
      overloaded = pending_ >= service_->options_.max_pending_per_stream;
      ++pending_;  // answered below or by the task
      if (admitted && !overloaded) AddUnsent(static_cast<int64_t>(reserved));
    }
    if (overloaded) {
      table = absl::ResourceExhaustedError(
          absl::StrCat("more than ", service_->options_.max_pending_per_stream,
                       " prefetch batches pending on this stream; slow down"));
    }
    if (!table.ok() || *table == nullptr) {
      Complete(*request, table.status(), nullptr, received, received, /*reserved=*/0,
               /*owns_id=*/!duplicate);
    } else {
      ServedTable* t = *table;
      service_->scheduler_->Submit(request->table().layer(), [this, request, t, received,
                                                              reserved] {
        const auto started = Clock::now();
        auto response = std::make_unique<v1::PrefetchResponse>();
        uint64_t version = 0;
        uint32_t row_bytes = 0;
        absl::Status s = service_->RunBatch(t, request->row_ids(), response->mutable_rows(),
                                            &version, &row_bytes, response->mutable_served_by());
        response->set_version(version);
        response->set_row_bytes(row_bytes);
        Complete(*request, s, std::move(response), received, started, reserved);
      });
    }
    bool read_next = false;
    {
      absl::MutexLock lock(&mu_);
      read_next = !OverCap();
      if (!read_next) SetPaused(true);
    }
    if (read_next) StartRead(&request_);
    {
      absl::MutexLock lock(&mu_);
      --read_chain_;
    }
    MaybeFinish();
  }

  void OnWriteDone(bool ok) override {
    bool next = false, resume = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      AddUnsent(-current_.bytes);
      current_.bytes = 0;
      if (!ok) {
        broken_ = true;  // the client is gone; drop what is left
        for (const Outgoing& o : outbox_) AddUnsent(-o.bytes);
        outbox_.clear();
      } else if (!outbox_.empty()) {
        current_ = std::move(outbox_.front());
        outbox_.pop_front();
        writing_ = next = true;
      }
      if (ok && paused_ && !finished_ && !cancelled_ && !draining_ && !OverCap()) {
        SetPaused(false);
        resume = true;
        ++read_chain_;
      }
    }
    if (next) StartWrite(current_.message.get());
    if (resume) {
      StartRead(&request_);
      absl::MutexLock lock(&mu_);
      --read_chain_;
    }
    MaybeFinish();
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
    }
    MaybeFinish();
  }

  void OnDone() override {
    {
      absl::MutexLock lock(&mu_);
      SetPaused(false);  // e.g. cancelled while paused
    }
    service_->Unregister(this);
    delete this;
  }

  // The server drains: finish once the batches already taken in are answered.
  void Drain() {
    {
      absl::MutexLock lock(&mu_);
      draining_ = true;
    }
    MaybeFinish();
  }

 private:
  // A serialized response and the bytes it counts in unsent_bytes_.
  struct Outgoing {
    std::unique_ptr<grpc::ByteBuffer> message;
    int64_t bytes = 0;
  };

  // Answers one batch (on a scheduler thread, or inline for a rejected batch); `reserved` is what
  // OnReadDone counted for it in unsent_bytes_.
  void Complete(const v1::PrefetchRequest& request, const absl::Status& status,
                std::unique_ptr<v1::PrefetchResponse> response, Clock::time_point received,
                Clock::time_point started, uint64_t reserved, bool owns_id = true) {
    if (!response) response = std::make_unique<v1::PrefetchResponse>();
    response->set_batch_id(request.batch_id());
    if (!status.ok()) {
      response->clear_rows();
      response->clear_served_by();
      response->set_error_code(static_cast<int32_t>(status.code()));
      response->set_error_message(std::string(status.message()));
      service_->metrics_->prefetch_batch_errors->Increment();
    }
    const auto now = Clock::now();
    response->set_queue_us(Micros(received, started));
    response->set_server_latency_us(Micros(received, now));
    TierMetrics* m = service_->metrics_;
    m->prefetch_batches->Increment();
    m->prefetch_batch_latency->Observe(Seconds(received, now));
    m->prefetch_queue->Observe(Seconds(received, started));
    m->CountRpc(RpcMethod::kPrefetch, status.code());
    Outgoing out{std::make_unique<grpc::ByteBuffer>(), 0};
    SerializeMessage(*response, out.message.get());
    out.bytes = static_cast<int64_t>(out.message->Length());
    bool write = false;
    {
      absl::MutexLock lock(&mu_);
      --pending_;
      if (owns_id) pending_ids_.erase(request.batch_id());
      AddUnsent(-static_cast<int64_t>(reserved));
      if (!broken_ && !finished_) {
        AddUnsent(out.bytes);
        if (writing_) {
          outbox_.push_back(std::move(out));
        } else {
          current_ = std::move(out);
          writing_ = write = true;
        }
      }
    }
    if (write) {
      StartWrite(current_.message.get());
    } else {
      MaybeFinish();
    }
  }

  bool OverCap() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return unsent_bytes_ >= static_cast<int64_t>(service_->options_.max_unsent_bytes_per_stream);
  }
  // unsent_bytes_ and the service-wide gauge move together.
  void AddUnsent(int64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    unsent_bytes_ += bytes;
    service_->metrics_->prefetch_unsent_bytes->Increment(static_cast<double>(bytes));
  }
  void SetPaused(bool paused) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (paused == paused_) return;
    paused_ = paused;
    service_->metrics_->prefetch_paused_streams->Increment(paused ? 1 : -1);
  }

  void MaybeFinish() {
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (finished_ || pending_ > 0 || writing_ || !outbox_.empty() || read_chain_ > 0) {
        return;
      }
      if (!(reads_done_ || cancelled_ || broken_ || draining_)) return;
      finished_ = true;
      if (!bad_request_.ok()) {
        status = ToGrpcStatus(bad_request_);
      } else if (draining_ && !reads_done_) {
        status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "engram-memory is draining; reconnect to another replica");
      }
    }
    Finish(status);
  }

  MemoryTierService* service_;
  grpc::ByteBuffer request_;  // only touched by the read chain
  absl::Mutex mu_;
  Outgoing current_ ABSL_GUARDED_BY(mu_);  // being written
  std::deque<Outgoing> outbox_ ABSL_GUARDED_BY(mu_);
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  // batch_ids of the batches taken in and not answered yet.
  absl::flat_hash_set<uint64_t> pending_ids_ ABSL_GUARDED_BY(mu_);
  // Threads in OnReadDone or about to restart reading: Finish() waits for them.
  int read_chain_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t unsent_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Arena hits this stream may still credit (only the read chain touches it).
  uint64_t arena_hit_credit_ = MemoryTierService::kArenaHitAllowance;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;  // not reading the client: too much unsent
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status bad_request_ ABSL_GUARDED_BY(mu_);  // the message that did not parse
};

MemoryTierService::MemoryTierService(const Options& options, TierMetrics* metrics)
    : options_(options),
      metrics_(metrics),
      scheduler_(std::make_unique<BatchScheduler>(options.lookup_threads)),
      host_id_(LocalHostId()) {}

MemoryTierService::~MemoryTierService() { scheduler_.reset(); }

void MemoryTierService::SetTables(TableSet* tables) { tables_.store(tables); }

void MemoryTierService::StartDrain() {
  draining_.store(true);
  absl::MutexLock lock(&streams_mu_);
  for (PrefetchReactor* r : streams_) r->Drain();
}

bool MemoryTierService::WaitForStreams(absl::Time deadline) {
  absl::MutexLock lock(&streams_mu_);
  auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_) { return streams_.empty(); };
  return streams_mu_.AwaitWithDeadline(absl::Condition(&none), deadline);
}

void MemoryTierService::Register(PrefetchReactor* reactor) {
  absl::MutexLock lock(&streams_mu_);
  streams_.insert(reactor);
  if (draining_.load()) reactor->Drain();
}

void MemoryTierService::Unregister(PrefetchReactor* reactor) {
  absl::MutexLock lock(&streams_mu_);
  streams_.erase(reactor);
}

TableSet* MemoryTierService::LoadedTables(RpcMethod method, grpc::ServerUnaryReactor* reactor) {
  TableSet* tables = tables_.load();
  if (tables == nullptr) Fail(method, reactor, absl::UnavailableError(kLoading));
  return tables;
}

void MemoryTierService::Fail(RpcMethod method, grpc::ServerUnaryReactor* reactor,
                             const absl::Status& status) {
  metrics_->CountRpc(method, status.code());
  reactor->Finish(ToGrpcStatus(status));
}

absl::StatusOr<ServedTable*> MemoryTierService::Admit(const v1::TableRef& table, size_t rows) {
  if (draining_.load()) {
    return absl::UnavailableError("engram-memory is draining; retry on another replica");
  }
  TableSet* tables = tables_.load();
  if (tables == nullptr) return absl::UnavailableError(kLoading);
  if (rows > options_.max_batch_rows) {
    return absl::InvalidArgumentError(absl::StrCat("batch of ", rows,
                                                   " row ids exceeds the limit of ",
                                                   options_.max_batch_rows, " (max_batch_rows)"));
  }
  ENGRAM_ASSIGN_OR_RETURN(ServedTable * served,
                          tables->Resolve(table.model(), table.layer(), table.version()));
  const uint64_t bytes = rows * uint64_t{served->manifest.layout.row_bytes};
  if (bytes > options_.max_response_row_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch of ", rows, " rows x ", served->manifest.layout.row_bytes,
                     " bytes = ", bytes, " bytes exceeds the ", options_.max_response_row_bytes,
                     " bytes one response may carry (server.max_message_bytes); split the batch"));
  }
  return served;
}

absl::Status MemoryTierService::RunBatch(
    ServedTable* table, const google::protobuf::RepeatedField<uint64_t>& ids, std::string* rows,
    uint64_t* version, uint32_t* row_bytes,
    google::protobuf::RepeatedPtrField<v1::TierCount>* served_by) {
  metrics_->batch_rows->Observe(static_cast<double>(ids.size()));
  *version = table->manifest.version;
  *row_bytes = table->manifest.layout.row_bytes;
  rows->resize(static_cast<size_t>(ids.size()) * *row_bytes);
  std::vector<uint64_t> served;
  absl::Status s = table->store->Lookup(absl::MakeConstSpan(ids.data(), ids.size()),
                                        reinterpret_cast<uint8_t*>(rows->data()), &served);
  if (!s.ok()) {
    if (s.code() != absl::StatusCode::kInvalidArgument) {
      ENGRAM_LOG(ERROR).With("table", table->label).With("error", s.message()) << "lookup failed";
    }
    return s;
  }
  const std::vector<Tier*>& tiers = table->store->tiers();
  for (size_t k = 0; k < tiers.size(); ++k) {
    if (served[k] == 0) continue;
    v1::TierCount* c = served_by->Add();
    c->set_tier(std::string(tiers[k]->name()));
    c->set_rows(served[k]);
  }
  return absl::OkStatus();
}

absl::Status MemoryTierService::RecordArenaHits(const v1::PrefetchRequest& request,
                                                uint64_t* credit) {
  if (request.arena_hits().empty()) return absl::OkStatus();
  TableSet* tables = tables_.load();
  if (tables == nullptr) return absl::OkStatus();
  const v1::TableRef& ref =
      request.has_arena_hits_table() ? request.arena_hits_table() : request.table();
  auto table = tables->Resolve(ref.model(), ref.layer(), 0);
  if (!table.ok()) return absl::OkStatus();  // e.g. a table version just retired: statistics only
  const auto& hits = request.arena_hits();
  if (static_cast<uint64_t>(hits.size()) > options_.max_batch_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        hits.size(), " arena_hits exceed the limit of ", options_.max_batch_rows,
        " (max_batch_rows)"));
  }
  const uint64_t rows = (*table)->manifest.layout.rows;
  for (int i = 0; i < hits.size(); ++i) {
    if (hits[i] >= rows) {
      return absl::InvalidArgumentError(absl::StrCat(
          "arena_hits[", i, "] = ", hits[i], " is out of range for table ", (*table)->label,
          " (", rows, " rows)"));
    }
  }
  // The budget: a row at most kArenaHitsPerRow times per message, and no more hits than the
  // stream's credit. The rest are dropped (counted), not an error: a worker is never failed for
  // reporting.
  std::vector<uint64_t> credited;
  credited.reserve(std::min<uint64_t>(hits.size(), *credit));
  absl::flat_hash_map<uint64_t, uint32_t> per_row;
  for (uint64_t id : hits) {
    if (credited.size() >= *credit) break;
    uint32_t& n = per_row[id];
    if (n >= kArenaHitsPerRow) continue;
    ++n;
    credited.push_back(id);
  }
  *credit -= credited.size();
  const uint64_t dropped = static_cast<uint64_t>(hits.size()) - credited.size();
  if (dropped > 0) metrics_->arena_hits_dropped->Increment(static_cast<double>(dropped));
  if (credited.empty()) return absl::OkStatus();
  (*table)->store->RecordExternalHits(credited);
  TierMetrics::TierChildren& c = metrics_->tier(TierKind::kArena);
  const double n = static_cast<double>(credited.size());
  c.rows_served->Increment(n);
  c.bytes_read->Increment(n * (*table)->manifest.layout.row_bytes);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* MemoryTierService::Lookup(grpc::CallbackServerContext* context,
                                                    const grpc::ByteBuffer* bytes,
                                                    grpc::ByteBuffer* out) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto request = std::make_shared<v1::LookupRequest>();
  absl::Status parsed = ParseMessage(*bytes, request.get());
  if (!parsed.ok()) {
    Fail(RpcMethod::kLookup, reactor, parsed);
    return reactor;
  }
  absl::StatusOr<ServedTable*> table = Admit(request->table(), request->row_ids().size());
  if (!table.ok()) {
    Fail(RpcMethod::kLookup, reactor, table.status());
    return reactor;
  }
  ServedTable* t = *table;
  scheduler_->Submit(request->table().layer(), [this, context, request, out, reactor, t] {
    absl::Status s;
    if (context->IsCancelled()) {
      s = absl::CancelledError("the client cancelled the lookup");
    } else {
      v1::LookupResponse response;
      uint64_t version = 0;
      uint32_t row_bytes = 0;
      s = RunBatch(t, request->row_ids(), response.mutable_rows(), &version, &row_bytes,
                   response.mutable_served_by());
      response.set_version(version);
      response.set_row_bytes(row_bytes);
      if (s.ok()) SerializeMessage(response, out);
    }
    metrics_->CountRpc(RpcMethod::kLookup, s.code());
    reactor->Finish(ToGrpcStatus(s));
  });
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* MemoryTierService::Prefetch(
    grpc::CallbackServerContext* context) {
  return new PrefetchReactor(this);
}

grpc::ServerUnaryReactor* MemoryTierService::TableInfo(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* bytes,
                                                       grpc::ByteBuffer* out) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  v1::TableInfoRequest request;
  absl::Status parsed = ParseMessage(*bytes, &request);
  if (!parsed.ok()) {
    Fail(RpcMethod::kTableInfo, reactor, parsed);
    return reactor;
  }
  TableSet* tables = LoadedTables(RpcMethod::kTableInfo, reactor);
  if (tables == nullptr) return reactor;
  v1::TableInfoResponse response;
  response.set_host_id(host_id_);
  for (const auto& t : tables->tables()) {
    if (!request.model().empty() && t->record.model != request.model()) continue;
    v1::TableInfo* info = response.add_tables();
    info->mutable_table()->set_model(t->record.model);
    info->mutable_table()->set_layer(t->record.layer);
    info->mutable_table()->set_version(t->manifest.version);
    for (uint64_t v : t->record.versions) info->add_versions(v);
    info->set_serving(t->serving);
    info->set_unavailable_reason(t->unavailable_reason);
    info->set_needs_reimport(t->integrity->needs_reimport());
    info->set_reimport_reason(t->integrity->reimport_reason());
    info->set_corrupt_pages(t->integrity->corrupt_pages());
    if (t->manifest.layout.rows == 0) continue;  // no readable manifest
    const RowLayout& l = t->manifest.layout;
    info->set_rows(l.rows);
    info->set_row_bytes(l.row_bytes);
    info->set_dtype(t->manifest.dtype);
    info->set_head_dim(static_cast<uint32_t>(t->manifest.head_dim));
    info->set_rows_per_page(l.rows_per_page);
    info->set_page_bytes(l.page_bytes);
    info->set_header_bytes(l.header_bytes);
    if (t->dram) {
      const ArenaHeader& h = t->dram->arena().header();
      v1::SharedArena* a = info->mutable_arena();
      a->set_shm_name(t->dram->arena().shm_name());
      a->set_size_bytes(h.size_bytes);
      a->set_layout(std::string(ArenaLayoutName(static_cast<ArenaLayout>(h.layout))));
      a->set_data_offset(h.data_offset);
      a->set_slot_bytes(h.slot_bytes);
      a->set_slots(h.slots);
      a->set_ways(h.ways);
      a->set_host_id(host_id_);
      a->set_arena_id(h.arena_id);
      a->set_slot_header_offset(h.slot_header_offset);
      a->set_huge_pages(t->dram->arena().huge_pages());
      a->set_locked(t->dram->arena().locked());
    }
  }
  SerializeMessage(response, out);
  metrics_->CountRpc(RpcMethod::kTableInfo, absl::StatusCode::kOk);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* MemoryTierService::Stats(grpc::CallbackServerContext* context,
                                                   const grpc::ByteBuffer* bytes,
                                                   grpc::ByteBuffer* out) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  v1::StatsRequest request;
  absl::Status parsed = ParseMessage(*bytes, &request);
  if (!parsed.ok()) {
    Fail(RpcMethod::kStats, reactor, parsed);
    return reactor;
  }
  TableSet* tables = LoadedTables(RpcMethod::kStats, reactor);
  if (tables == nullptr) return reactor;
  v1::StatsResponse response;
  v1::TierStats by_kind[2];
  by_kind[0].set_tier("dram");
  by_kind[1].set_tier("nvme");
  const size_t top = std::min<size_t>(request.top_rows(), 100000);
  for (const auto& t : tables->tables()) {
    if (!t->serving) continue;
    const std::vector<Tier*>& tiers = t->store->tiers();
    for (size_t k = 0; k < tiers.size(); ++k) {
      v1::TierStats& s = by_kind[tiers[k] == t->dram.get() ? 0 : 1];
      const TierCounters& c = t->store->counters(k);
      s.set_lookups(s.lookups() + c.lookups.load());
      s.set_hits(s.hits() + c.hits.load());
      s.set_misses(s.misses() + c.misses.load());
      s.set_bytes(s.bytes() + c.bytes.load());
    }
    by_kind[1].set_capacity_rows(by_kind[1].capacity_rows() + t->manifest.layout.rows);
    by_kind[1].set_resident_rows(by_kind[1].resident_rows() + t->manifest.layout.rows);
    v1::TableStats* ts = response.add_tables();
    ts->mutable_table()->set_model(t->manifest.model);
    ts->mutable_table()->set_layer(t->manifest.layer);
    ts->mutable_table()->set_version(t->manifest.version);
    if (t->dram) {
      by_kind[0].set_capacity_rows(by_kind[0].capacity_rows() + t->dram->capacity_rows());
      by_kind[0].set_resident_rows(by_kind[0].resident_rows() + t->dram->occupied_rows());
      ts->set_arena_rows(t->dram->occupied_rows());
      ts->set_arena_capacity_rows(t->dram->capacity_rows());
    }
    ts->set_promotions(t->store->promotions());
    ts->set_rejections(t->store->rejections());
    if (top > 0) {
      for (const RowCount& rc : t->store->Hottest(top)) {
        v1::HotRow* h = ts->add_hottest();
        h->set_row_id(rc.row);
        h->set_count(rc.count);
      }
    }
  }
  *response.add_tiers() = by_kind[0];
  *response.add_tiers() = by_kind[1];
  SerializeMessage(response, out);
  metrics_->CountRpc(RpcMethod::kStats, absl::StatusCode::kOk);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace engram
