#include "server/engram_rows.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "model/engram_constants.h"
#include "model/model.h"
#include "server/worker_metrics.h"

namespace engram {

// ---- RowFetch ----------------------------------------------------------------------------------

RowFetch::RowFetch(int engram_layer_index, int head_dim, std::vector<uint64_t> row_ids)
    : engram_layer_index_(engram_layer_index),
      head_dim_(head_dim),
      row_ids_(std::move(row_ids)),
      created_at_(absl::Now()),
      rows_(row_ids_.size() * static_cast<size_t>(head_dim)) {}

void RowFetch::Complete(absl::Status status) {
  {
    absl::MutexLock lock(&mu_);
    if (done_) return;
    done_ = true;
    status_ = std::move(status);
    ready_at_ = absl::Now();
  }
  // Once: only the first Complete gets here. The fetch may be dropped by the scheduler as soon
  // as done_ is visible, but the backend's caller still holds its shared_ptr.
  if (on_complete_) on_complete_();
}

bool RowFetch::done() const {
  absl::MutexLock lock(&mu_);
  return done_;
}

bool RowFetch::WaitUntil(absl::Time until, absl::Time* ready_at) {
  absl::MutexLock lock(&mu_);
  auto is_done = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return done_; };
  if (!mu_.AwaitWithDeadline(absl::Condition(&is_done), until)) return false;
  *ready_at = ready_at_;
  return true;
}

absl::Status RowFetch::status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

// ---- SequenceRows ------------------------------------------------------------------------------

SequenceRows::SequenceRows(const EngramConstants& constants, int head_dim, RowBackend& backend,
                           uint64_t sequence_id, std::function<void()> on_arrival)
    : constants_(constants),
      head_dim_(head_dim),
      backend_(backend),
      sequence_id_(sequence_id),
      on_arrival_(std::move(on_arrival)),
      state_(constants.hash) {}

absl::Status SequenceRows::FetchPrompt(absl::Span<const uint32_t> prompt) {
  if (next_position_ != 0) return absl::FailedPreconditionError("FetchPrompt called twice");
  auto compressed = constants_.Compress(prompt);
  if (!compressed.ok()) return compressed.status();
  const EngramHashConstants& hash = constants_.hash;
  const size_t n = compressed->size() * hash.columns();
  std::vector<std::vector<uint64_t>> ids(hash.num_layers());
  std::vector<int64_t> out(n);
  for (int li = 0; li < hash.num_layers(); ++li) {
    absl::Status s = ComputeNgramRowIds(hash, li, /*context=*/{}, *compressed, absl::MakeSpan(out));
    if (!s.ok()) return s;
    ids[li].assign(out.begin(), out.end());
  }
  for (int64_t c : *compressed) {
    absl::Status s = state_.Push(c);
    if (!s.ok()) return s;
  }
  return FetchSpan(0, static_cast<int>(prompt.size()), std::move(ids), /*step=*/0);
}

absl::Status SequenceRows::FetchNext(uint32_t token, uint64_t step) {
  auto compressed = constants_.Compress(token);
  if (!compressed.ok()) return compressed.status();
  absl::Status s = state_.Push(*compressed);
  if (!s.ok()) return s;
  const EngramHashConstants& hash = constants_.hash;
  std::vector<std::vector<uint64_t>> ids(hash.num_layers());
  scratch_.resize(hash.columns());
  for (int li = 0; li < hash.num_layers(); ++li) {
    state_.RowIds(hash, li, scratch_.data());
    ids[li].assign(scratch_.begin(), scratch_.end());
  }
  return FetchSpan(next_position_, 1, std::move(ids), step);
}

absl::Status SequenceRows::FetchSpan(int begin, int count, std::vector<std::vector<uint64_t>> ids,
                                     uint64_t step) {
  Span span;
  span.begin = begin;
  span.count = count;
  for (size_t li = 0; li < ids.size(); ++li) {
    span.by_layer.push_back(
        std::make_shared<RowFetch>(static_cast<int>(li), head_dim_, std::move(ids[li])));
    if (on_arrival_) span.by_layer.back()->SetOnComplete(on_arrival_);
  }
  next_position_ = begin + count;
  spans_.push_back(span);
  // Earliest Engram layer first: it is the first to need its rows.
  for (const auto& fetch : span.by_layer) backend_.Fetch(fetch, sequence_id_, step);
  return absl::OkStatus();
}

absl::StatusOr<std::pair<RowFetch*, int>> SequenceRows::Find(int begin, int count,
                                                             int engram_layer_index) const {
  for (const Span& span : spans_) {
    if (span.begin <= begin && begin + count <= span.begin + span.count) {
      if (engram_layer_index < 0 || engram_layer_index >= static_cast<int>(span.by_layer.size())) {
        return absl::InvalidArgumentError(
            absl::StrCat("Engram layer index ", engram_layer_index, " out of range"));
      }
      return std::make_pair(span.by_layer[engram_layer_index].get(), begin - span.begin);
    }
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no Engram rows were fetched for positions [", begin, ", ", begin + count, ")"));
}

void SequenceRows::ReleaseBefore(int position) {
  while (!spans_.empty() && spans_.front().begin + spans_.front().count <= position) {
    spans_.pop_front();
  }
}

bool SequenceRows::WaitsForColdRows(int begin, int count, absl::Time* since) const {
  bool cold = false;
  for (const Span& span : spans_) {
    if (span.begin + span.count <= begin || begin + count <= span.begin) continue;
    for (const auto& fetch : span.by_layer) {
      // cold() first: it is a plain atomic load, done() takes the fetch's lock.
      if (!fetch->cold() || fetch->done()) continue;
      *since = cold ? std::min(*since, fetch->created_at()) : fetch->created_at();
      cold = true;
    }
  }
  return cold;
}

// ---- StepRows ----------------------------------------------------------------------------------

StepRows::StepRows(const std::vector<int>& engram_layer_ids, int columns, int head_dim,
                   absl::Duration rows_timeout, RowBackend* backend, bool rows_by_id)
    : layer_ids_(engram_layer_ids),
      columns_(columns),
      head_dim_(head_dim),
      rows_timeout_(rows_timeout),
      backend_(backend),
      rows_by_id_(rows_by_id),
      timings_(engram_layer_ids.size()) {}

void StepRows::AddItem(const SequenceRows* rows, int begin, int count, absl::Time deadline) {
  items_.push_back(Item{rows, begin, count, deadline});
}

absl::StatusOr<std::pair<RowFetch*, int>> StepRows::Await(size_t item, int engram_layer_index) {
  if (item >= items_.size()) return absl::InvalidArgumentError("item out of range");
  const Item& it = items_[item];
  auto found = it.rows->Find(it.begin, it.count, engram_layer_index);
  if (!found.ok()) return found.status();
  auto [fetch, offset] = *found;

  const absl::Time needed_at = absl::Now();
  // What is left of the step's rows wait budget (shared by every item and layer of the step).
  const absl::Duration budget = std::max(absl::ZeroDuration(), rows_timeout_ - waited_);
  const absl::Time until = std::min(it.deadline, needed_at + budget);
  absl::Time ready_at;
  LayerTiming& timing = timings_[engram_layer_index];
  timing.measured = true;
  const bool arrived = fetch->WaitUntil(until, &ready_at);
  const absl::Time waited_until = arrived ? std::max(needed_at, ready_at) : absl::Now();
  waited_ += waited_until - needed_at;
  if (!arrived) {
    timing.stalled = true;
    timing.stall += waited_until - needed_at;
    timing.min_slack = absl::ZeroDuration();
    const bool deadline = until == it.deadline;
    const std::string source = backend_ != nullptr ? backend_->Name() : "the row source";
    const std::string what =
        absl::StrCat("Engram rows for layer ", layer_ids_[engram_layer_index], " (positions ",
                     it.begin, "..", it.begin + it.count - 1, ") did not arrive ",
                     deadline ? "before the request's deadline"
                              : absl::StrCat("within ", absl::FormatDuration(rows_timeout_),
                                             " (the step's rows timeout)"));
    if (!deadline && backend_ != nullptr && !overdue_reported_) {
      overdue_reported_ = true;
      backend_->RowsOverdue(absl::UnavailableError(what));
    }
    return absl::UnavailableError(absl::StrCat(what, ": ", source, " is slow or away"));
  }
  if (ready_at > needed_at) {
    timing.stalled = true;
    timing.stall += ready_at - needed_at;
    timing.min_slack = absl::ZeroDuration();
  } else {
    timing.min_slack = std::min(timing.min_slack, needed_at - ready_at);
  }
  absl::Status status = fetch->status();
  if (!status.ok()) return status;
  return std::make_pair(fetch, offset);
}

absl::StatusOr<absl::Span<const float>> StepRows::Rows(size_t item, int engram_layer_index) {
  ENGRAM_ASSIGN_OR_RETURN(auto found, Await(item, engram_layer_index));
  auto [fetch, offset] = found;
  const size_t width = static_cast<size_t>(columns_) * head_dim_;
  return fetch->rows().subspan(static_cast<size_t>(offset) * width,
                               static_cast<size_t>(items_[item].count) * width);
}

absl::StatusOr<EngramRows> StepRows::Locate(size_t item, int engram_layer_index) {
  if (!rows_by_id_) return EngramRowSource::Locate(item, engram_layer_index);
  ENGRAM_ASSIGN_OR_RETURN(auto found, Await(item, engram_layer_index));
  auto [fetch, offset] = found;
  EngramRows r;
  r.where = EngramRows::Where::kRowIds;
  r.row_ids = fetch->row_ids().data() + static_cast<size_t>(offset) * columns_;
  r.ids = static_cast<size_t>(items_[item].count) * columns_;
  return r;
}

void StepRows::Record(WorkerMetrics& metrics) const {
  metrics.step_stall.Observe(absl::ToDoubleSeconds(waited_));
  for (size_t li = 0; li < timings_.size(); ++li) {
    const LayerTiming& t = timings_[li];
    if (!t.measured) continue;
    metrics.prefetch_slack(static_cast<int>(li)).Observe(absl::ToDoubleSeconds(t.min_slack));
    if (t.stalled) {
      metrics.prefetch_stalls(static_cast<int>(li)).Increment();
      metrics.prefetch_stall_seconds(static_cast<int>(li))
          .Increment(absl::ToDoubleSeconds(t.stall));
    }
  }
}

// ---- LocalRowBackend ---------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<LocalRowBackend>> LocalRowBackend::Create(const Model& model) {
  const ModelConfig& config = model.config();
  std::unique_ptr<LocalRowBackend> backend(new LocalRowBackend());
  for (size_t li = 0; li < config.engram.layer_ids.size(); ++li) {
    ENGRAM_ASSIGN_OR_RETURN(
        ModelTable t, FindModelTable(model.tensors(), model.dir(), config.engram.layer_ids[li],
                                     config.engram.head_dim));
    backend->tables_.push_back(t);
  }
  return backend;
}

void LocalRowBackend::Serve(RowFetch& fetch) const {
  const ModelTable& table = tables_[fetch.engram_layer_index()];
  float* out = fetch.mutable_rows();
  for (uint64_t id : fetch.row_ids()) {
    absl::Status s = DecodeModelTableRow(table, id, out);
    if (!s.ok()) {
      fetch.Complete(s);
      return;
    }
    out += table.head_dim;
  }
  fetch.Complete(absl::OkStatus());
}

void LocalRowBackend::Fetch(const std::shared_ptr<RowFetch>& fetch, uint64_t, uint64_t) {
  {
    absl::MutexLock lock(&mu_);
    if (!available_) {
      fetch->Complete(absl::UnavailableError("local row backend is unavailable"));
      return;
    }
    if (hold_) {
      held_.push_back(fetch);
      return;
    }
  }
  Serve(*fetch);
}

absl::Status LocalRowBackend::Ready() const {
  absl::MutexLock lock(&mu_);
  return available_ ? absl::OkStatus() : absl::UnavailableError("local row backend is unavailable");
}

void LocalRowBackend::SetHold(bool hold) {
  std::vector<std::shared_ptr<RowFetch>> release;
  {
    absl::MutexLock lock(&mu_);
    hold_ = hold;
    if (!hold) release.swap(held_);
  }
  for (const auto& f : release) Serve(*f);
}

void LocalRowBackend::SetAvailable(bool available) {
  std::vector<std::shared_ptr<RowFetch>> fail;
  {
    absl::MutexLock lock(&mu_);
    available_ = available;
    if (!available) fail.swap(held_);
  }
  for (const auto& f : fail)
    f->Complete(absl::UnavailableError("local row backend is unavailable"));
}

}  // namespace engram
