// Engram rows ahead of need: the worker side of docs/architecture.md contract 4.
//
// Row ids depend only on token ids, so the worker asks for rows long before a layer reads them:
//   - on admission, the row ids of every prompt position and every Engram layer are computed
//     (SequenceRows::FetchPrompt) and handed to the RowBackend at once;
//   - during decode, the moment a sequence's token is sampled, the row ids of its next position
//     are computed from a small per-sequence hash state and handed over (SequenceRows::FetchNext),
//     before the next step starts;
//   - the forward pass waits only when it reaches the Engram layer that needs them
//     (StepRows::Rows, the model's EngramRowSource), and records how early they arrived.
// Rows for the earliest Engram layer are always requested first.
//
// A RowFetch is one such request: the row ids of consecutive positions of one sequence for one
// Engram layer, completed asynchronously by a RowBackend with the rows decoded to f32. Backends:
// TierRowBackend (server/tier_rows.h: the memory tier, shared-memory arena + Prefetch stream) and
// LocalRowBackend (below: the model's own tables, for tests and in-process checks).
#ifndef ENGRAM_SERVER_ENGRAM_ROWS_H_
#define ENGRAM_SERVER_ENGRAM_ROWS_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/ngram_hash.h"
#include "common/row_format.h"
#include "model/cpu_backbone.h"

namespace engram {

class Model;
struct EngramConstants;
class WorkerMetrics;

// The rows of consecutive positions of one sequence for one Engram layer. Created by
// SequenceRows, completed once by a RowBackend (from any thread), read by the forward pass.
class RowFetch {
 public:
  // `row_ids`: positions * columns ids, position-major, in (order, head) column order.
  RowFetch(int engram_layer_index, int head_dim, std::vector<uint64_t> row_ids);
  RowFetch(const RowFetch&) = delete;
  RowFetch& operator=(const RowFetch&) = delete;

  int engram_layer_index() const { return engram_layer_index_; }
  int head_dim() const { return head_dim_; }
  absl::Span<const uint64_t> row_ids() const { return row_ids_; }
  // When the fetch was created (its row ids were computed and handed to the backend).
  absl::Time created_at() const { return created_at_; }

  // Called once, from the thread that completes the fetch, right after it is marked done. Set by
  // SequenceRows before the fetch is handed to a backend (the scheduler uses it to wake up when
  // the rows of a sequence that sits out arrive).
  void SetOnComplete(std::function<void()> on_complete) { on_complete_ = std::move(on_complete); }

  // ---- Backend side ----
  // Marks the fetch cold: some of its rows are not resident where the worker reads rows directly
  // (they must come from the tier's NVMe or over the network), so they will take a while. Call
  // before Complete.
  void MarkCold() { cold_.store(true, std::memory_order_release); }
  // Destination of row i: rows()[i * head_dim, (i + 1) * head_dim). Write before Complete.
  float* mutable_rows() { return rows_.data(); }
  // Marks the fetch done (the first call wins; later ones are ignored) and wakes the waiter.
  void Complete(absl::Status status);

  // ---- Scheduler side ----
  // Whether the fetch is complete (rows or an error), without waiting.
  bool done() const;
  // Whether the backend marked it cold (MarkCold).
  bool cold() const { return cold_.load(std::memory_order_acquire); }

  // ---- Forward-pass side ----
  // Blocks until the fetch is complete or `until` passes. Returns true when complete, with
  // *ready_at = when it completed.
  bool WaitUntil(absl::Time until, absl::Time* ready_at);
  // The completion status (valid once done).
  absl::Status status() const;
  // Decoded rows, row_ids().size() * head_dim floats (valid once done with OK).
  absl::Span<const float> rows() const { return rows_; }

 private:
  const int engram_layer_index_;
  const int head_dim_;
  const std::vector<uint64_t> row_ids_;
  const absl::Time created_at_;
  std::vector<float> rows_;
  std::function<void()> on_complete_;
  std::atomic<bool> cold_{false};
  mutable absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  absl::Time ready_at_ ABSL_GUARDED_BY(mu_);
};

// Where rows come from. Implementations are thread-safe.
class RowBackend {
 public:
  virtual ~RowBackend() = default;
  // Starts fetching and returns without waiting for the network; completes `fetch` later (or
  // before returning, e.g. from shared memory). `sequence_id` and `step` are for tracing.
  virtual void Fetch(const std::shared_ptr<RowFetch>& fetch, uint64_t sequence_id,
                     uint64_t step) = 0;
  // OK while fetches can be served; UNAVAILABLE with the reason otherwise (the tier is away).
  virtual absl::Status Ready() const = 0;
  // Names the source in messages, e.g. "the memory tier at 10.0.0.7:50052".
  virtual std::string Name() const { return "the row source"; }
  // Called by the step (loop thread) when rows were not there within the step's rows wait
  // budget (rows_timeout): the source stopped answering. A backend turns itself unavailable
  // (Ready() fails, pending fetches fail at once) until it answers again. Default: nothing.
  virtual void RowsOverdue(const absl::Status& why) { (void)why; }
};

// The Engram hash state and the outstanding fetches of one sequence. Used by the scheduler's loop
// thread only.
class SequenceRows {
 public:
  // `on_arrival` (may be empty) runs whenever one of the sequence's fetches completes, on the
  // completing thread.
  SequenceRows(const EngramConstants& constants, int head_dim, RowBackend& backend,
               uint64_t sequence_id, std::function<void()> on_arrival = nullptr);

  // Computes the row ids of every prompt position for every Engram layer and fetches them, one
  // fetch per layer, earliest layer first. Call once, first.
  absl::Status FetchPrompt(absl::Span<const uint32_t> prompt);
  // Computes the row ids of the position of `token` (the token just sampled, which the next step
  // feeds) and fetches them. `step` is for tracing.
  absl::Status FetchNext(uint32_t token, uint64_t step);

  // The fetch of `engram_layer_index` covering positions [begin, begin + count), and the index of
  // `begin` inside it. FAILED_PRECONDITION when no single fetch covers them (a scheduler bug).
  absl::StatusOr<std::pair<RowFetch*, int>> Find(int begin, int count,
                                                 int engram_layer_index) const;
  // Drops the fetches that end at or before `position` (rows already consumed).
  void ReleaseBefore(int position);

  // Whether positions [begin, begin + count) wait for cold rows: some Engram layer's fetch of them
  // is neither complete nor resident (RowFetch::cold). When so, *since is when the oldest such
  // fetch was sent.
  bool WaitsForColdRows(int begin, int count, absl::Time* since) const;

 private:
  struct Span {
    int begin = 0;
    int count = 0;
    std::vector<std::shared_ptr<RowFetch>> by_layer;  // [engram layer index]
  };
  absl::Status FetchSpan(int begin, int count, std::vector<std::vector<uint64_t>> ids,
                         uint64_t step);

  const EngramConstants& constants_;
  const int head_dim_;
  RowBackend& backend_;
  const uint64_t sequence_id_;
  const std::function<void()> on_arrival_;
  NgramState state_;
  int next_position_ = 0;  // position of the next token pushed into state_
  std::deque<Span> spans_;
  std::vector<int64_t> scratch_;  // one position's row ids
};

// The EngramRowSource of one batched step: maps the backbone's (item, layer) calls to the items'
// fetches, waits where rows are not there yet, and records slack and stalls per layer.
//
// The waits of one step share one budget: all of them together last at most `rows_timeout`
// (each also bounded by its item's deadline). A step of N sequences whose rows never come
// therefore stalls the loop for rows_timeout, not N x rows_timeout: once the budget is spent,
// every item whose rows are not there fails at once (UNAVAILABLE naming the source), items whose
// rows are there go on, and the backend is told (RowBackend::RowsOverdue).
class StepRows : public EngramRowSource {
 public:
  // `engram_layer_ids`: the model's Engram layers (for messages; must outlive the step);
  // `rows_timeout`: the longest the step waits for rows, all items and layers together;
  // `backend` (may be null): named in messages and told when rows are overdue;
  // `rows_by_id`: Locate answers with the items' row ids (EngramRows::Where::kRowIds) once their
  // fetches completed, for a GPU backbone that reads the tables itself (BackboneOptions::
  // engram_tables); the fetches then carry no decoded rows (TierRowBackend::
  // SetRowsReadByDevice). Rows() is unchanged.
  StepRows(const std::vector<int>& engram_layer_ids, int columns, int head_dim,
           absl::Duration rows_timeout, RowBackend* backend = nullptr, bool rows_by_id = false);

  // Item i of the step reads positions [begin, begin + count) of `rows`.
  void AddItem(const SequenceRows* rows, int begin, int count, absl::Time deadline);

  absl::StatusOr<absl::Span<const float>> Rows(size_t item, int engram_layer_index) override;
  absl::StatusOr<EngramRows> Locate(size_t item, int engram_layer_index) override;

  // Per Engram layer, over the step's items: the smallest slack (how long before the layer asked
  // the rows had been ready; 0 after a stall), whether any item stalled, and the total stall time.
  struct LayerTiming {
    bool measured = false;
    absl::Duration min_slack = absl::InfiniteDuration();
    bool stalled = false;
    absl::Duration stall = absl::ZeroDuration();
  };
  // Adds this step's timings to the prefetch metrics (and its total wait to the step's stall).
  void Record(WorkerMetrics& metrics) const;
  // Time this step waited for rows so far, all items and layers together.
  absl::Duration waited() const { return waited_; }

 private:
  struct Item {
    const SequenceRows* rows;
    int begin;
    int count;
    absl::Time deadline;
  };
  // Waits (within the step's budget) for the fetch covering item's positions of the layer and
  // returns it with the index of the item's first position inside it; the error otherwise.
  absl::StatusOr<std::pair<RowFetch*, int>> Await(size_t item, int engram_layer_index);
  const std::vector<int>& layer_ids_;
  const int columns_;
  const int head_dim_;
  const absl::Duration rows_timeout_;
  RowBackend* const backend_;
  const bool rows_by_id_;
  // Time spent waiting for rows in this step so far (all items and layers).
  absl::Duration waited_ = absl::ZeroDuration();
  bool overdue_reported_ = false;
  std::vector<Item> items_;
  std::vector<LayerTiming> timings_;
};

// Rows straight from the model's own tables (plain or the FP8 pair, common/row_format.h
// ModelTable), completed inside Fetch. For tests and in-process runs. Tests can hold fetches back
// (SetHold) to model a slow tier, or make the backend unavailable.
class LocalRowBackend : public RowBackend {
 public:
  // The backend reads `model`'s tensors in place: `model` must outlive it.
  static absl::StatusOr<std::unique_ptr<LocalRowBackend>> Create(const Model& model);

  void Fetch(const std::shared_ptr<RowFetch>& fetch, uint64_t sequence_id, uint64_t step) override;
  absl::Status Ready() const override;

  // While held, fetches stay pending; releasing completes them all.
  void SetHold(bool hold);
  // While unavailable, Ready() is UNAVAILABLE and fetches fail with UNAVAILABLE.
  void SetAvailable(bool available);

 private:
  LocalRowBackend() = default;
  void Serve(RowFetch& fetch) const;

  std::vector<ModelTable> tables_;  // [engram layer index]
  mutable absl::Mutex mu_;
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  bool available_ ABSL_GUARDED_BY(mu_) = true;
  std::vector<std::shared_ptr<RowFetch>> held_ ABSL_GUARDED_BY(mu_);
};

}  // namespace engram

#endif  // ENGRAM_SERVER_ENGRAM_ROWS_H_
