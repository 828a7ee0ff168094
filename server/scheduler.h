// Scheduler: continuous batching of Generate requests over one backbone, in the shape of
// llama.cpp's server_queue (one loop thread forms every step's batch; other threads only enqueue).
//
// The loop, step by step (Loop() in scheduler.cc):
//   1. Take what other threads queued since the last step: new requests (Submit) and
//      cancellations (Cancel, Abort). Cancelled requests end now, queued or running.
//   2. End every request whose deadline has passed (DEADLINE_EXCEEDED).
//   3. Admit queued requests, oldest first, while fewer than max_running_requests run and the
//      backbone can reserve the KV blocks of the whole prompt (Backbone::Reserve; a bounded GPU
//      cache): create the sequence (KV cache, Engram state) and compute and send the row ids of the
//      whole prompt to the memory tier at once (SequenceRows::FetchPrompt). New requests therefore
//      join the running batch between steps. A prompt larger than the whole cache fails with
//      RESOURCE_EXHAUSTED.
//   4. Form the step: one decode token for every sequence past its prompt, then prompt chunks of at
//      most prefill_chunk_tokens per sequence (prefill chunking) while the step has fewer than
//      max_step_tokens tokens. A long prompt never holds the others' decode back for more than one
//      chunk.
//      Cold rows (cold_rows = kSitOut): a sequence whose rows for this step are still on their way
//      from a slow source (RowFetch::cold: not in the co-located arena, so from the tier's NVMe or
//      over the network) sits out the step; the others go on. Its fetch completing wakes the loop.
//      A sequence that waited longer than rows_timeout since its rows were requested fails with
//      UNAVAILABLE, as a step that waits for them would (and the backend is told: RowsOverdue).
//      With kWaitInStep it joins the step, whose forward pass waits for its rows at the layer.
//      Decode tokens may need new KV blocks: when the cache lacks them, the newest running sequence
//      is preempted (its state and blocks freed; it goes back to the head of the queue and later
//      recomputes its prompt and the tokens it generated, then continues where it stopped) until
//      the step fits.
//   5. Run the step (Backbone::Step: the forward pass, then each finishing item's sampler on the
//      device that ran it). It waits for Engram rows only at the layer that needs them (StepRows);
//      a sequence whose rows do not come fails alone (UNAVAILABLE).
//   6. For every sequence that produced a token: check the stop conditions and, when it goes on,
//      compute and send its next position's row ids right away (SequenceRows::FetchNext), before
//      the next step starts. Then stream the step's tokens and text to each request
//      (GenerateSink), ending finished requests with their finish reason and usage.
// The loop sleeps only when there is nothing to run.
//
// Bounded queue: the scheduler holds at most max_running_requests + max_queued_requests requests;
// Submit answers RESOURCE_EXHAUSTED beyond that, UNAVAILABLE while the memory tier is away or the
// worker drains.
#ifndef ENGRAM_SERVER_SCHEDULER_H_
#define ENGRAM_SERVER_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/request.h"

namespace engram {

class Model;
class Backbone;
class RowBackend;
class WorkerMetrics;
struct Sequence;

// What a step does with a sequence whose Engram rows are cold (see step 4 above).
enum class ColdRows {
  kSitOut,      // leave it out until its rows arrive; the rest of the batch goes on
  kWaitInStep,  // run it; the step waits for its rows at the Engram layer (the batch stalls)
};

struct SchedulerOptions {
  // See WorkerConfig::Scheduler for meaning and defaults.
  int max_running_requests = 64;
  int max_queued_requests = 256;
  int prefill_chunk_tokens = 256;
  int max_step_tokens = 1024;
  // The context window (prompt + generated tokens) of every sequence. Required (> 1).
  int max_context_tokens = 0;
  // Longest wait for one fetch of Engram rows (WorkerConfig::MemoryTier::rows_timeout).
  absl::Duration rows_timeout = absl::Seconds(10);
  // WorkerConfig::Scheduler::cold_rows.
  ColdRows cold_rows = ColdRows::kSitOut;
  // The backbone reads Engram rows by id from tables it was given (BackboneOptions::
  // engram_tables): steps hand it row ids, not decoded rows (StepRows rows_by_id).
  bool rows_by_id = false;
};

// What one step ran; given to the step observer (tests, debugging).
struct StepInfo {
  struct Item {
    std::string request_id;
    int begin = 0;   // position of the item's first token
    int tokens = 0;  // 1 for decode, the chunk size for prefill
    bool prefill = false;
  };
  uint64_t step = 0;
  std::vector<Item> items;
  // Requests left out of this step because their rows are cold (ColdRows::kSitOut).
  std::vector<std::string> sat_out;
};

class Scheduler {
 public:
  // Everything passed must outlive the scheduler. `rows` may be null only for a model without
  // Engram layers.
  Scheduler(const Model& model, Backbone& backbone, RowBackend* rows, WorkerMetrics& metrics,
            SchedulerOptions options);
  // Stops the loop (Stop()) if it runs.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // ---- Not thread-safe: call before Start() only ----
  // Called on the loop thread before each step's forward pass.
  void SetStepObserver(std::function<void(const StepInfo&)> observer);
  // Starts the loop thread.
  void Start();

  // ---- Thread-safe ----
  // Queues a validated request. Returns its handle for Cancel(). Errors: RESOURCE_EXHAUSTED (full),
  // UNAVAILABLE (draining, stopped, or the memory tier away), ALREADY_EXISTS (a live request has
  // this request_id). On success `sink` receives the request's events and exactly one last event.
  absl::StatusOr<uint64_t> Submit(GenerateParams params, std::shared_ptr<GenerateSink> sink);
  // Ends request `handle` with `status` (e.g. CANCELLED when the client went away) at the next
  // step boundary. Unknown or finished handles are ignored.
  void Cancel(uint64_t handle, absl::Status status);
  // Ends the request with this request_id with FINISH_REASON_ABORTED (status OK). False when no
  // live request has it.
  bool Abort(const std::string& request_id);
  // Refuses new requests from now on (UNAVAILABLE); queued and running ones go on.
  void StopAccepting();
  // Blocks until no request is queued or running, or `deadline` passes; true when idle.
  bool WaitIdle(absl::Time deadline);
  // Ends every live request with `status` and joins the loop thread. Idempotent.
  void Stop(absl::Status status = absl::UnavailableError("the worker is shutting down"));

  // Requests admitted into the running batch / waiting for it.
  int running() const;
  int queued() const;

 private:
  struct Incoming;
  // Wakes the loop when rows arrive; outlives the scheduler in the callbacks of pending fetches.
  struct ArrivalSignal;
  void Loop();
  // A fetch completed (any thread): wake the loop if it sleeps because every sequence sits out.
  void RowsArrived();
  // Loop steps (loop thread only).
  void TakeIncoming(bool* stop);
  void ExpireDeadlines();
  void Admit();
  void RunStep();
  // Frees the newest running sequence's state and queues it again at the head of waiting_.
  void Preempt();
  // Sends the request's last event (`event` holds tokens of this step not yet sent) and forgets it.
  // The caller removes it from waiting_/running_.
  void Finish(Sequence& s, absl::Status status, FinishReason reason, GenerateEvent event = {});
  void PublishGauges();

  const Model& model_;
  Backbone& backbone_;
  RowBackend* rows_;
  WorkerMetrics& metrics_;
  const SchedulerOptions options_;
  std::function<void(const StepInfo&)> observer_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status stop_status_ ABSL_GUARDED_BY(mu_);
  uint64_t next_handle_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<std::unique_ptr<Sequence>> incoming_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint64_t, absl::Status>> cancels_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> aborts_ ABSL_GUARDED_BY(mu_);
  // Live requests (queued or running) by request id, and their count by state.
  absl::flat_hash_map<std::string, uint64_t> live_ ABSL_GUARDED_BY(mu_);
  int running_count_ ABSL_GUARDED_BY(mu_) = 0;
  // A fetch completed since the loop last looked.
  bool rows_arrived_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<ArrivalSignal> arrival_;

  // Loop thread only.
  std::list<std::unique_ptr<Sequence>> waiting_;
  std::list<std::unique_ptr<Sequence>> running_;
  uint64_t step_ = 0;
  uint64_t graph_replays_seen_ = 0;
  // The last step formed nothing: every running sequence sat out. The loop then sleeps until rows
  // arrive, a request comes or goes, or the earliest sitting-out sequence's bound
  // (cold_rows_expiry_) passes.
  bool all_sat_out_ = false;
  absl::Time cold_rows_expiry_ = absl::InfiniteFuture();
};

}  // namespace engram

#endif  // ENGRAM_SERVER_SCHEDULER_H_
