#include "memory_tier/tier_client.h"

#include <chrono>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/status.h"
#include "engram/v1/memory_tier.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace engram {
namespace {

void SetTableRef(const TableKey& key, v1::TableRef* ref) {
  ref->set_model(key.model);
  ref->set_layer(key.layer);
  ref->set_version(key.version);
}

TierCounts CountsFromProto(const google::protobuf::RepeatedPtrField<v1::TierCount>& counts) {
  TierCounts c;
  for (const auto& t : counts) {
    if (t.tier() == "dram") c.dram += t.rows();
    if (t.tier() == "nvme") c.nvme += t.rows();
    if (t.tier() == "arena") c.arena += t.rows();
  }
  return c;
}

absl::StatusOr<TableDescription> DescriptionFromProto(const v1::TableInfo& t) {
  TableDescription d;
  d.key = TableKey{t.table().model(), t.table().layer(), t.table().version()};
  d.rows = t.rows();
  d.row_bytes = t.row_bytes();
  // A table refused because its manifest could not be read comes without a layout; it is still
  // listed (with its reason), and must not fail the description of every other table.
  if (t.serving() || !t.dtype().empty()) {
    ENGRAM_ASSIGN_OR_RETURN(d.dtype, ParseRowDType(t.dtype()));
  }
  d.head_dim = static_cast<int>(t.head_dim());
  d.rows_per_page = t.rows_per_page();
  d.page_bytes = t.page_bytes();
  d.header_bytes = t.header_bytes();
  d.versions.assign(t.versions().begin(), t.versions().end());
  d.serving = t.serving();
  d.unavailable_reason = t.unavailable_reason();
  d.needs_reimport = t.needs_reimport();
  d.reimport_reason = t.reimport_reason();
  d.corrupt_pages = t.corrupt_pages();
  const v1::SharedArena& a = t.arena();
  d.arena = ArenaDescription{a.shm_name(),   a.size_bytes(), a.layout(),     a.data_offset(),
                             a.slot_bytes(), a.slots(),      a.ways(),       a.slot_header_offset(),
                             a.host_id(),    a.arena_id(),   a.huge_pages(), a.locked()};
  return d;
}

// ---- Prefetch stream ---------------------------------------------------------------------------

class PrefetchStreamImpl final
    : public PrefetchStream,
      public grpc::ClientBidiReactor<v1::PrefetchRequest, v1::PrefetchResponse> {
 public:
  PrefetchStreamImpl(v1::MemoryTier::Stub* stub, PrefetchStreamOptions options)
      : options_(std::move(options)) {
    stub->async()->Prefetch(&context_, this);
    // Writes are started from the caller's threads (Send, Finish), outside gRPC's reactions; this
    // hold keeps the call (and OnDone) from completing under such a write. It is released once
    // the server has ended the stream and no such write is being started (ReleaseHoldIfIdle).
    AddHold();
    StartRead(&response_);
    StartCall();
  }

  ~PrefetchStreamImpl() override {
    // The reactor must outlive gRPC's use of it.
    context_.TryCancel();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
  }

  absl::Status Send(PrefetchBatch batch) override { return Enqueue(std::move(batch), nullptr); }

  std::future<PrefetchResult> SendAsync(PrefetchBatch batch) override {
    auto promise = std::make_shared<std::promise<PrefetchResult>>();
    std::future<PrefetchResult> future = promise->get_future();
    const uint64_t id = batch.batch_id;
    absl::Status s = Enqueue(std::move(batch), promise);
    if (!s.ok()) {
      PrefetchResult r;
      r.batch_id = id;
      r.status = s;
      promise->set_value(std::move(r));
    }
    return future;
  }

  absl::Status Finish() override {
    bool start_writes_done = false;
    {
      absl::MutexLock lock(&mu_);
      closing_ = true;
      if (!writing_ && !writes_done_ && !read_closed_) {
        writes_done_ = start_writes_done = true;
        ++outside_ops_;
      }
    }
    if (start_writes_done) {
      StartWritesDone();
      EndOutsideOp();
    }
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
    return final_status_;
  }

  void Cancel() override {
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      closing_ = true;
    }
    context_.TryCancel();
  }

  size_t pending() const override {
    absl::MutexLock lock(&mu_);
    return pending_.size();
  }

  absl::Status status() const override {
    absl::MutexLock lock(&mu_);
    return broken_status_;
  }

  // ---- reactions -------------------------------------------------------------------------------

  void OnWriteDone(bool ok) override {
    bool write_next = false, writes_done = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) return;  // the stream failed; OnDone reports it
      if (!outbox_.empty()) {
        current_ = std::move(outbox_.front());
        outbox_.pop_front();
        writing_ = write_next = true;
      } else if (closing_ && !writes_done_) {
        writes_done_ = writes_done = true;
      }
    }
    if (write_next) StartWrite(&current_);
    if (writes_done) StartWritesDone();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the server ended the stream (or it broke): OnDone follows once the hold goes
      {
        absl::MutexLock lock(&mu_);
        read_closed_ = true;
      }
      ReleaseHoldIfIdle();
      return;
    }
    PrefetchResult r;
    r.batch_id = response_.batch_id();
    r.version = response_.version();
    r.row_bytes = response_.row_bytes();
    r.served_by = CountsFromProto(response_.served_by());
    r.server_latency_us = response_.server_latency_us();
    r.queue_us = response_.queue_us();
    if (response_.error_code() != 0) {
      r.status = absl::Status(static_cast<absl::StatusCode>(response_.error_code()),
                              response_.error_message());
    } else {
      r.rows = std::move(*response_.mutable_rows());
    }
    Pending p;
    bool found = false;
    {
      absl::MutexLock lock(&mu_);
      auto it = pending_.find(r.batch_id);
      if (it != pending_.end()) {
        p = std::move(it->second);
        pending_.erase(it);
        found = true;
      }
    }
    if (found) {
      r.round_trip = absl::FromChrono(std::chrono::steady_clock::now() - p.sent);
      Deliver(std::move(p), std::move(r));
    } else {
      ENGRAM_LOG(WARNING).With("batch_id", r.batch_id) << "prefetch response for no pending batch";
    }
    response_.Clear();
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    absl::flat_hash_map<uint64_t, Pending> orphans;
    bool report_broken = false;
    absl::Status final_status = FromGrpcStatus(status);
    absl::Status orphan_status;
    {
      absl::MutexLock lock(&mu_);
      // CANCELLED that we did not ask for: the server cancelled the call (shutting down), which
      // for the caller means the tier is away: UNAVAILABLE, retry elsewhere or later.
      if (final_status.code() == absl::StatusCode::kCancelled && !cancelled_) {
        final_status = absl::UnavailableError(
            absl::StrCat("the memory tier cancelled the prefetch stream (shutting down?): ",
                         final_status.message()));
      }
      orphans.swap(pending_);
      if (cancelled_) {
        orphan_status = absl::CancelledError("prefetch stream cancelled");
      } else {
        orphan_status = absl::UnavailableError(
            absl::StrCat("prefetch stream ended before the batch was answered: ",
                         final_status.ok() ? "server closed the stream" : final_status.ToString()));
      }
      if (!final_status.ok() || !orphans.empty()) {
        broken_status_ = final_status.ok() ? orphan_status : final_status;
        report_broken = !cancelled_ && !closing_;
      }
    }
    for (auto& [id, p] : orphans) {
      PrefetchResult r;
      r.batch_id = id;
      r.status = orphan_status;
      Deliver(std::move(p), std::move(r));
    }
    if (report_broken && options_.on_broken) options_.on_broken(broken_status_);
    absl::MutexLock lock(&mu_);
    final_status_ = final_status;
    done_ = true;  // last: the destructor may run right after
  }

 private:
  struct Pending {
    std::shared_ptr<std::promise<PrefetchResult>> promise;  // null: use on_result
    std::chrono::steady_clock::time_point sent;
  };

  absl::Status Enqueue(PrefetchBatch batch, std::shared_ptr<std::promise<PrefetchResult>> promise) {
    v1::PrefetchRequest req;
    req.set_batch_id(batch.batch_id);
    SetTableRef(batch.table, req.mutable_table());
    req.set_sequence_id(batch.sequence_id);
    req.set_step(batch.step);
    req.mutable_row_ids()->Assign(batch.row_ids.begin(), batch.row_ids.end());
    req.mutable_arena_hits()->Assign(batch.arena_hits.begin(), batch.arena_hits.end());
    if (!batch.arena_hits_table.model.empty()) {
      SetTableRef(batch.arena_hits_table, req.mutable_arena_hits_table());
    }
    bool start = false;
    {
      absl::MutexLock lock(&mu_);
      if (closing_)
        return absl::FailedPreconditionError("prefetch stream is finished or cancelled");
      if (done_ || read_closed_ || !broken_status_.ok()) {
        return absl::UnavailableError(
            absl::StrCat("prefetch stream is broken: ", broken_status_.ToString()));
      }
      if (!promise && !options_.on_result) {
        return absl::FailedPreconditionError(
            "Send needs PrefetchStreamOptions::on_result; use SendAsync");
      }
      if (pending_.contains(batch.batch_id)) {
        return absl::InvalidArgumentError(
            absl::StrCat("batch_id ", batch.batch_id, " is already pending on this stream"));
      }
      pending_[batch.batch_id] = Pending{std::move(promise), std::chrono::steady_clock::now()};
      if (writing_) {
        outbox_.push_back(std::move(req));
      } else {
        current_ = std::move(req);
        writing_ = start = true;
        ++outside_ops_;
      }
    }
    if (start) {
      StartWrite(&current_);
      EndOutsideOp();
    }
    return absl::OkStatus();
  }

  void EndOutsideOp() {
    {
      absl::MutexLock lock(&mu_);
      --outside_ops_;
    }
    ReleaseHoldIfIdle();
  }

  void ReleaseHoldIfIdle() {
    {
      absl::MutexLock lock(&mu_);
      if (!read_closed_ || outside_ops_ > 0 || hold_released_) return;
      hold_released_ = true;
    }
    RemoveHold();
  }

  void Deliver(Pending p, PrefetchResult r) {
    if (p.promise) {
      p.promise->set_value(std::move(r));
    } else if (options_.on_result) {
      options_.on_result(std::move(r));
    }
  }

  PrefetchStreamOptions options_;
  grpc::ClientContext context_;
  v1::PrefetchResponse response_;
  mutable absl::Mutex mu_;
  v1::PrefetchRequest current_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::PrefetchRequest> outbox_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool read_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_released_ ABSL_GUARDED_BY(mu_) = false;
  int outside_ops_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status broken_status_ ABSL_GUARDED_BY(mu_);
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
};

// ---- Client ------------------------------------------------------------------------------------

class TierClientImpl final : public TierClient {
 public:
  TierClientImpl(std::shared_ptr<grpc::Channel> channel, const TierClientOptions& options)
      : channel_(std::move(channel)), options_(options), stub_(v1::MemoryTier::NewStub(channel_)) {}

  absl::StatusOr<std::vector<TableDescription>> TableInfo(absl::string_view model) override {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    v1::TableInfoRequest req;
    req.set_model(std::string(model));
    v1::TableInfoResponse resp;
    ENGRAM_RETURN_IF_ERROR(FromGrpcStatus(stub_->TableInfo(&ctx, req, &resp)));
    std::vector<TableDescription> out;
    for (const auto& t : resp.tables()) {
      ENGRAM_ASSIGN_OR_RETURN(TableDescription d, DescriptionFromProto(t));
      out.push_back(std::move(d));
    }
    return out;
  }

  absl::StatusOr<TableDescription> FindTable(absl::string_view model, uint32_t layer) override {
    ENGRAM_ASSIGN_OR_RETURN(std::vector<TableDescription> tables, TableInfo(model));
    for (auto& t : tables) {
      if (t.key.layer == layer) return std::move(t);
    }
    return absl::NotFoundError(absl::StrCat("the memory tier at ", options_.address,
                                            " has no table ", model, " layer ", layer));
  }

  absl::StatusOr<LookupResult> Lookup(const TableKey& table,
                                      absl::Span<const uint64_t> row_ids) override {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    v1::LookupRequest req;
    SetTableRef(table, req.mutable_table());
    req.mutable_row_ids()->Assign(row_ids.begin(), row_ids.end());
    v1::LookupResponse resp;
    ENGRAM_RETURN_IF_ERROR(FromGrpcStatus(stub_->Lookup(&ctx, req, &resp)));
    LookupResult r;
    r.version = resp.version();
    r.row_bytes = resp.row_bytes();
    r.rows = std::move(*resp.mutable_rows());
    r.served_by = CountsFromProto(resp.served_by());
    return r;
  }

  absl::StatusOr<v1::StatsResponse> Stats(uint32_t top_rows) override {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    v1::StatsRequest req;
    req.set_top_rows(top_rows);
    v1::StatsResponse resp;
    ENGRAM_RETURN_IF_ERROR(FromGrpcStatus(stub_->Stats(&ctx, req, &resp)));
    return resp;
  }

  absl::Status CheckHealth() override {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service("engram.v1.MemoryTier");
    grpc::health::v1::HealthCheckResponse response;
    ENGRAM_RETURN_IF_ERROR(FromGrpcStatus(
        grpc::health::v1::Health::NewStub(channel_)->Check(&ctx, request, &response)));
    if (response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
      return absl::OkStatus();
    }
    return absl::UnavailableError(absl::StrCat("the memory tier at ", options_.address,
                                               " is not serving (loading or draining)"));
  }

  absl::StatusOr<std::unique_ptr<PrefetchStream>> OpenPrefetchStream(
      PrefetchStreamOptions options) override {
    return std::unique_ptr<PrefetchStream>(new PrefetchStreamImpl(stub_.get(), std::move(options)));
  }

  std::shared_ptr<grpc::Channel> channel() const override { return channel_; }

 private:
  void SetDeadline(grpc::ClientContext* ctx) const {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      absl::ToChronoMilliseconds(options_.rpc_timeout));
  }

  std::shared_ptr<grpc::Channel> channel_;
  TierClientOptions options_;
  std::unique_ptr<v1::MemoryTier::Stub> stub_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TierClient>> TierClient::Connect(const TierClientOptions& options) {
  if (options.address.empty()) return absl::InvalidArgumentError("memory tier address is empty");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  args.SetMaxSendMessageSize(options.max_receive_message_bytes);
  if (options.keepalive_time > absl::ZeroDuration()) {
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
                static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_time)));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                static_cast<int>(absl::ToInt64Milliseconds(options.keepalive_timeout)));
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  if (!options.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name);
  }
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(options.tls);
  if (!credentials.ok()) return credentials.status();
  auto channel = grpc::CreateCustomChannel(options.address, *credentials, args);
  const auto deadline =
      std::chrono::system_clock::now() + absl::ToChronoMilliseconds(options.connect_timeout);
  if (!channel->WaitForConnected(deadline)) {
    return absl::UnavailableError(absl::StrCat("cannot connect to the memory tier at ",
                                               options.address, " within ",
                                               absl::FormatDuration(options.connect_timeout)));
  }
  return std::unique_ptr<TierClient>(new TierClientImpl(std::move(channel), options));
}

}  // namespace engram
