#include "server/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "model/backbone.h"
#include "model/model.h"
#include "model/output_text.h"
#include "model/sampler.h"
#include "model/tokenizer.h"
#include "server/engram_rows.h"
#include "server/worker_metrics.h"

namespace engram {

// One request from Submit to its last event. Owned by the loop thread once taken from incoming_.
struct Sequence {
  Sequence(uint64_t handle, GenerateParams p, std::shared_ptr<GenerateSink> sink,
           const Tokenizer& tokenizer)
      : handle(handle),
        params(std::move(p)),
        sink(std::move(sink)),
        sampler(params.sampling),
        output(tokenizer, params.skip_special_tokens, params.stop.stop_strings) {}

  const uint64_t handle;
  const GenerateParams params;
  std::shared_ptr<GenerateSink> sink;
  Sampler sampler;
  OutputText output;

  // Set on admission (and reset by preemption).
  std::unique_ptr<SequenceState> state;
  std::unique_ptr<SequenceRows> rows;
  // Most tokens this request may generate: max_tokens, less when the context is smaller.
  int max_new_tokens = 0;
  // What the next admission prefills: the prompt, or after a preemption the prompt and every token
  // generated so far (recomputed; the last one was sampled but not yet fed).
  std::vector<uint32_t> input;
  // Tokens of `input` already run through the backbone.
  int prefilled = 0;
  // The last sampled token, fed by the next step (valid once prefill is complete).
  uint32_t next_token = 0;
  int generated = 0;
  uint32_t emitted = 0;
  // In running_ (counted in running_count_).
  bool running = false;
  absl::Time admitted_at = absl::InfinitePast();
  absl::Time first_token_at = absl::InfinitePast();
  absl::Time last_token_at;
  // Consecutive steps this sequence sat out waiting for cold rows.
  int sat_out_steps = 0;

  bool prefill_done() const { return prefilled == static_cast<int>(input.size()); }
};

// A step item and the sequence it belongs to.
struct StepItem {
  Sequence* sequence;
  bool prefill;
  int tokens;
};

struct Scheduler::ArrivalSignal {
  absl::Mutex mu;
  Scheduler* scheduler ABSL_GUARDED_BY(mu) = nullptr;
};

Scheduler::Scheduler(const Model& model, Backbone& backbone, RowBackend* rows,
                     WorkerMetrics& metrics, SchedulerOptions options)
    : model_(model),
      backbone_(backbone),
      rows_(rows),
      metrics_(metrics),
      options_(options),
      arrival_(std::make_shared<ArrivalSignal>()) {
  absl::MutexLock lock(&arrival_->mu);
  arrival_->scheduler = this;
}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::RowsArrived() {
  absl::MutexLock lock(&mu_);
  rows_arrived_ = true;
}

void Scheduler::SetStepObserver(std::function<void(const StepInfo&)> observer) {
  observer_ = std::move(observer);
}

void Scheduler::Start() {
  thread_ = std::thread([this] { Loop(); });
}

absl::StatusOr<uint64_t> Scheduler::Submit(GenerateParams params,
                                           std::shared_ptr<GenerateSink> sink) {
  if (rows_ != nullptr) {
    absl::Status ready = rows_->Ready();
    if (!ready.ok()) return ready;
  }
  absl::MutexLock lock(&mu_);
  if (stop_ || !accepting_)
    return absl::UnavailableError("the worker is draining; retry on another worker");
  if (live_.contains(params.request_id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("request id \"", params.request_id, "\" is already running"));
  }
  const int capacity = options_.max_running_requests + options_.max_queued_requests;
  if (static_cast<int>(live_.size()) >= capacity) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the worker is full: it holds ", live_.size(), " requests (at most ",
                     options_.max_running_requests, " running and ", options_.max_queued_requests,
                     " queued); retry later"));
  }
  const uint64_t handle = next_handle_++;
  live_[params.request_id] = handle;
  incoming_.push_back(
      std::make_unique<Sequence>(handle, std::move(params), std::move(sink), model_.tokenizer()));
  metrics_.queue_length.Set(static_cast<double>(live_.size() - running_count_));
  return handle;
}

void Scheduler::Cancel(uint64_t handle, absl::Status status) {
  absl::MutexLock lock(&mu_);
  cancels_.emplace_back(handle, std::move(status));
}

bool Scheduler::Abort(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(request_id);
  if (it == live_.end()) return false;
  aborts_.push_back(it->second);
  return true;
}

void Scheduler::StopAccepting() {
  absl::MutexLock lock(&mu_);
  accepting_ = false;
}

bool Scheduler::WaitIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return live_.empty(); };
  return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

void Scheduler::Stop(absl::Status status) {
  {
    absl::MutexLock lock(&mu_);
    if (!stop_) {
      stop_ = true;
      stop_status_ = std::move(status);
    }
  }
  if (thread_.joinable()) thread_.join();
  // Fetches still held by the backend may complete later: their callbacks must not reach us.
  absl::MutexLock lock(&arrival_->mu);
  arrival_->scheduler = nullptr;
}

int Scheduler::running() const {
  absl::MutexLock lock(&mu_);
  return running_count_;
}

int Scheduler::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(live_.size()) - running_count_;
}

void Scheduler::Loop() {
  for (;;) {
    bool stop = false;
    TakeIncoming(&stop);
    if (stop) break;
    ExpireDeadlines();
    Admit();
    if (!running_.empty()) RunStep();
    PublishGauges();
  }
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    status = stop_status_;
    for (auto& s : incoming_) waiting_.push_back(std::move(s));
    incoming_.clear();
  }
  for (auto* list : {&running_, &waiting_}) {
    for (auto& s : *list) Finish(*s, status, FinishReason::kNone);
    list->clear();
  }
  PublishGauges();
}

void Scheduler::TakeIncoming(bool* stop) {
  std::vector<std::unique_ptr<Sequence>> incoming;
  std::vector<std::pair<uint64_t, absl::Status>> cancels;
  std::vector<uint64_t> aborts;
  {
    absl::MutexLock lock(&mu_);
    // Sleep only when nothing can make progress: no running sequence that can take a step (every
    // one sat out the last step waiting for cold rows, and none has arrived since), and no queued
    // request that could be admitted.
    const bool cold_idle = all_sat_out_;
    auto work = [this, cold_idle]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return stop_ || !incoming_.empty() || !cancels_.empty() || !aborts_.empty() ||
             (!running_.empty() && !cold_idle) || rows_arrived_ ||
             (!waiting_.empty() &&
              static_cast<int>(running_.size()) < options_.max_running_requests);
    };
    // Waiting requests can expire while nothing else happens: wake for the nearest deadline, and
    // while every running sequence sits out, for theirs and for the first cold-rows bound.
    absl::Time wake = absl::InfiniteFuture();
    for (const auto& s : waiting_) wake = std::min(wake, s->params.deadline);
    if (cold_idle) {
      wake = std::min(wake, cold_rows_expiry_);
      for (const auto& s : running_) wake = std::min(wake, s->params.deadline);
    }
    mu_.AwaitWithDeadline(absl::Condition(&work), wake);
    rows_arrived_ = false;
    *stop = stop_;
    incoming.swap(incoming_);
    cancels.swap(cancels_);
    aborts.swap(aborts_);
  }
  for (auto& s : incoming) waiting_.push_back(std::move(s));
  auto end = [&](uint64_t handle, const absl::Status& status, FinishReason reason) {
    for (auto* list : {&waiting_, &running_}) {
      for (auto it = list->begin(); it != list->end(); ++it) {
        if ((*it)->handle != handle) continue;
        Finish(**it, status, reason);
        list->erase(it);
        return;
      }
    }
  };
  for (auto& [handle, status] : cancels) end(handle, status, FinishReason::kNone);
  for (uint64_t handle : aborts) end(handle, absl::OkStatus(), FinishReason::kAborted);
}

void Scheduler::ExpireDeadlines() {
  const absl::Time now = absl::Now();
  for (auto* list : {&waiting_, &running_}) {
    for (auto it = list->begin(); it != list->end();) {
      Sequence& s = **it;
      if (s.params.deadline > now) {
        ++it;
        continue;
      }
      Finish(s,
             absl::DeadlineExceededError(
                 absl::StrCat("deadline exceeded ", s.running ? "while generating" : "while queued",
                              " (", s.emitted, " tokens generated)")),
             FinishReason::kNone);
      it = list->erase(it);
    }
  }
}

void Scheduler::Admit() {
  while (!waiting_.empty() && static_cast<int>(running_.size()) < options_.max_running_requests) {
    std::unique_ptr<Sequence> s = std::move(waiting_.front());
    waiting_.pop_front();
    const bool first = s->input.empty();  // not a preempted sequence coming back
    if (first) {
      const int prompt = static_cast<int>(s->params.prompt.size());
      s->max_new_tokens = std::min(s->params.stop.max_tokens, options_.max_context_tokens - prompt);
      s->input = s->params.prompt;
    }
    const int total = static_cast<int>(s->params.prompt.size()) + s->max_new_tokens;
    std::unique_ptr<SequenceState> state = backbone_.NewSequence(total);
    // The whole input's KV blocks now, so that its chunks cannot run out; one more for the first
    // generated token.
    const int reserve = static_cast<int>(s->input.size()) + 1;
    absl::Status status = backbone_.Reserve(*state, reserve);
    if (absl::IsResourceExhausted(status)) {
      const KvCapacity kv = backbone_.kv_capacity();
      if (backbone_.BlocksNeeded(*state, reserve) <= kv.total_blocks && !running_.empty()) {
        // It fits once running sequences finish: wait at the head of the queue.
        waiting_.push_front(std::move(s));
        return;
      }
      status = absl::ResourceExhaustedError(absl::StrCat(
          "the request needs ", reserve, " tokens of KV cache; the worker holds ",
          kv.total_blocks * kv.block_tokens, " in all"));
    }
    if (status.ok() && rows_ != nullptr) {
      // The whole input's row ids go out now, long before its chunks reach the Engram layers.
      status = rows_->Ready();
      if (status.ok()) {
        std::function<void()> on_arrival;
        if (options_.cold_rows == ColdRows::kSitOut) {
          on_arrival = [signal = arrival_] {
            absl::MutexLock lock(&signal->mu);
            if (signal->scheduler != nullptr) signal->scheduler->RowsArrived();
          };
        }
        s->rows = std::make_unique<SequenceRows>(model_.engram_constants(),
                                                 model_.config().engram.head_dim, *rows_,
                                                 s->handle, std::move(on_arrival));
        status = s->rows->FetchPrompt(s->input);
      }
    }
    if (!status.ok()) {
      Finish(*s, status, FinishReason::kNone);
      continue;
    }
    s->state = std::move(state);
    s->prefilled = 0;
    if (first) {
      const absl::Time now = absl::Now();
      metrics_.request_queue_time.Observe(absl::ToDoubleSeconds(now - s->params.received));
      s->admitted_at = now;
      metrics_.prompt_tokens.Increment(static_cast<double>(s->params.prompt.size()));
    }
    s->running = true;
    running_.push_back(std::move(s));
    absl::MutexLock lock(&mu_);
    ++running_count_;
  }
}

void Scheduler::Preempt() {
  std::unique_ptr<Sequence> s = std::move(running_.back());
  running_.pop_back();
  s->state.reset();
  s->rows.reset();
  s->running = false;
  if (s->prefill_done() && s->generated > 0) {
    // Everything fed so far plus the sampled token that was next: recomputed on readmission.
    s->input.push_back(s->next_token);
  }
  s->prefilled = 0;
  metrics_.preemptions.Increment();
  ENGRAM_LOG(INFO).With("request", s->params.request_id).With("tokens", s->input.size())
      << "preempted: the KV cache is full; the sequence will be recomputed";
  waiting_.push_front(std::move(s));
  absl::MutexLock lock(&mu_);
  --running_count_;
}

void Scheduler::RunStep() {
  // Decode tokens may each need a new KV block; preempt the newest sequences until they fit.
  for (;;) {
    int64_t needed = 0;
    for (const auto& s : running_) {
      if (s->prefill_done()) needed += backbone_.BlocksNeeded(*s->state, 1);
    }
    if (needed <= backbone_.kv_capacity().free_blocks || running_.empty()) break;
    Preempt();
  }
  all_sat_out_ = false;
  cold_rows_expiry_ = absl::InfiniteFuture();
  if (running_.empty()) return;
  const ModelConfig& config = model_.config();
  std::vector<StepItem> items;
  std::vector<BatchItem> batch;
  StepRows rows(config.engram.layer_ids, config.engram.columns(), config.engram.head_dim,
                options_.rows_timeout, rows_, options_.rows_by_id);
  StepInfo info;
  info.step = step_ + 1;
  // Sit-out (ColdRows::kSitOut): positions [begin, begin + count) of `s` wait for cold rows. Those
  // that waited longer than rows_timeout go to `expired`.
  const absl::Time formed_at = absl::Now();
  std::vector<Sequence*> expired;
  auto sits_out = [&](Sequence& s, int begin, int count) {
    if (options_.cold_rows != ColdRows::kSitOut || s.rows == nullptr) return false;
    absl::Time since;
    if (!s.rows->WaitsForColdRows(begin, count, &since)) return false;
    if (formed_at - since >= options_.rows_timeout) {
      expired.push_back(&s);
    } else {
      ++s.sat_out_steps;
      cold_rows_expiry_ = std::min(cold_rows_expiry_, since + options_.rows_timeout);
      info.sat_out.push_back(s.params.request_id);
    }
    return true;
  };
  auto add = [&](Sequence& s, bool prefill, absl::Span<const uint32_t> tokens) {
    const int begin = s.state->position();
    s.sat_out_steps = 0;
    items.push_back(StepItem{&s, prefill, static_cast<int>(tokens.size())});
    // The last chunk of the input and every decode token end with a sample.
    const bool sample = !prefill || s.prefilled + static_cast<int>(tokens.size()) ==
                                        static_cast<int>(s.input.size());
    batch.push_back(BatchItem{s.state.get(), tokens, sample ? &s.sampler : nullptr});
    rows.AddItem(s.rows.get(), begin, static_cast<int>(tokens.size()), s.params.deadline);
    if (observer_)
      info.items.push_back({s.params.request_id, begin, static_cast<int>(tokens.size()), prefill});
  };
  // Decode tokens first: one per sequence, so no running sequence starves.
  int budget = options_.max_step_tokens;
  for (auto& s : running_) {
    if (!s->prefill_done()) continue;
    if (sits_out(*s, s->state->position(), 1)) continue;
    add(*s, false, absl::MakeConstSpan(&s->next_token, 1));
    --budget;
  }
  for (auto& s : running_) {
    if (s->prefill_done() || budget <= 0) continue;
    const int n = std::min({options_.prefill_chunk_tokens,
                            static_cast<int>(s->input.size()) - s->prefilled, budget});
    if (sits_out(*s, s->state->position(), n)) continue;
    add(*s, true, absl::MakeConstSpan(s->input).subspan(s->prefilled, n));
    budget -= n;
  }
  metrics_.sat_out.Increment(static_cast<double>(info.sat_out.size()));
  metrics_.sat_out_now.Set(static_cast<double>(info.sat_out.size()));
  if (!expired.empty()) {
    // They waited as long as a step would have waited for them: fail them the same way, and tell
    // the backend that its rows are overdue.
    const std::string source = rows_->Name();
    for (Sequence* s : expired) {
      const std::string what = absl::StrCat(
          "Engram rows for positions from ", s->state->position(), " did not arrive within ",
          absl::FormatDuration(options_.rows_timeout), " (the rows timeout; the sequence sat out ",
          s->sat_out_steps, " steps meanwhile)");
      Finish(*s,
             absl::UnavailableError(absl::StrCat("request ", s->params.request_id, ": ", what,
                                                 ": ", source, " is slow or away")),
             FinishReason::kNone);
    }
    rows_->RowsOverdue(absl::UnavailableError(
        absl::StrCat("Engram rows did not arrive within ",
                     absl::FormatDuration(options_.rows_timeout), " for ", expired.size(),
                     " sequence(s) sitting out")));
    running_.remove_if([&](const std::unique_ptr<Sequence>& s) {
      return std::find(expired.begin(), expired.end(), s.get()) != expired.end();
    });
  }
  if (items.empty()) {
    // Nothing to run: every running sequence waits for cold rows (or just failed).
    all_sat_out_ = !running_.empty();
    return;
  }
  ++step_;
  if (observer_) observer_(info);

  StepOutput out;
  const absl::Time start = absl::Now();
  absl::Status forward = backbone_.Step(batch, rows, &out);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  metrics_.step_duration.Observe(seconds);
  const bool any_prefill =
      std::any_of(items.begin(), items.end(), [](const StepItem& i) { return i.prefill; });
  (any_prefill ? metrics_.prefill_step_duration : metrics_.decode_step_duration).Observe(seconds);
  metrics_.step_tokens.Observe(options_.max_step_tokens - budget);
  const uint64_t replays = backbone_.graph_replays();
  if (replays > graph_replays_seen_) metrics_.graph_replays.Increment(double(replays - graph_replays_seen_));
  graph_replays_seen_ = replays;
  rows.Record(metrics_);
  std::vector<absl::Status>& item_status = out.status;
  if (!forward.ok()) {
    // A malformed batch is a scheduler bug, a device fault is fatal to the step: fail the step's
    // requests rather than loop on it.
    ENGRAM_LOG(ERROR).With("step", step_) << "forward pass failed: " << forward;
    item_status.assign(items.size(),
                       absl::InternalError(absl::StrCat("forward pass: ", forward.message())));
  }

  // Pass 1: sample and, for every sequence that goes on, send the next row ids at once.
  std::vector<FinishReason> reasons(items.size(), FinishReason::kNone);
  std::vector<bool> sampled(items.size(), false);
  for (size_t i = 0; i < items.size(); ++i) {
    Sequence& s = *items[i].sequence;
    if (!item_status[i].ok()) continue;
    if (items[i].prefill) {
      s.prefilled += items[i].tokens;
      if (!s.prefill_done()) continue;
    } else {
      s.input.push_back(s.next_token);  // fed by this step
      ++s.prefilled;
    }
    uint32_t token = out.tokens[i];
    if (static_cast<size_t>(s.generated) < s.params.replay_tokens.size()) {
      token = s.params.replay_tokens[s.generated];  // a benchmark replaying a text
    }
    sampled[i] = true;
    s.next_token = token;
    ++s.generated;
    reasons[i] = CheckStopToken(s.params.stop, token, s.generated);
    if (reasons[i] == FinishReason::kNone && s.generated >= s.max_new_tokens) {
      reasons[i] = FinishReason::kContext;
    }
    if (reasons[i] == FinishReason::kNone && s.rows != nullptr) {
      item_status[i] = s.rows->FetchNext(token, step_);
    }
  }

  // Pass 2: stream the step's tokens and end finished requests.
  const absl::Time now = absl::Now();
  std::vector<uint64_t> finished;
  for (size_t i = 0; i < items.size(); ++i) {
    Sequence& s = *items[i].sequence;
    if (!item_status[i].ok()) {
      Finish(s, Annotate(item_status[i], absl::StrCat("request ", s.params.request_id)),
             FinishReason::kNone);
      finished.push_back(s.handle);
      continue;
    }
    if (s.rows != nullptr) s.rows->ReleaseBefore(s.state->position());
    if (!sampled[i]) continue;
    FinishReason reason = reasons[i];
    GenerateEvent event;
    // A token that ends the generation as eos or a stop token id is not part of the output.
    if (reason != FinishReason::kEos && reason != FinishReason::kStop) {
      event.token_ids.push_back(s.next_token);
      bool stopped = false;
      event.text = s.output.Step(s.next_token, &stopped);
      if (stopped) reason = FinishReason::kStop;
      ++s.emitted;
      metrics_.generation_tokens.Increment();
      if (s.emitted == 1) {
        s.first_token_at = now;
        metrics_.time_to_first_token.Observe(absl::ToDoubleSeconds(now - s.params.received));
      } else {
        metrics_.inter_token_latency.Observe(absl::ToDoubleSeconds(now - s.last_token_at));
      }
      s.last_token_at = now;
    }
    if (reason != FinishReason::kNone) {
      Finish(s, absl::OkStatus(), reason, std::move(event));  // with this step's token
      finished.push_back(s.handle);
      continue;
    }
    s.sink->OnEvent(std::move(event));
  }
  if (!finished.empty()) {
    running_.remove_if([&](const std::unique_ptr<Sequence>& s) {
      return std::find(finished.begin(), finished.end(), s->handle) != finished.end();
    });
  }
}

void Scheduler::Finish(Sequence& s, absl::Status status, FinishReason reason, GenerateEvent event) {
  event.last = true;
  event.status = status;
  event.finish_reason = status.ok() ? reason : FinishReason::kNone;
  if (!status.ok()) {
    event.token_ids.clear();
    event.text.clear();
  } else {
    // Text held back (an incomplete character, a possible stop string prefix) ends here.
    bool stopped = false;
    event.text += s.output.Finish(&stopped);
    if (stopped) event.finish_reason = FinishReason::kStop;
  }
  event.prompt_tokens = static_cast<uint32_t>(s.params.prompt.size());
  event.completion_tokens = s.emitted;
  metrics_.requests(status.code()).Increment();
  metrics_.RecordFinished(event.finish_reason, status.code(), s.admitted_at, s.first_token_at,
                          absl::Now());
  metrics_.e2e_request_latency.Observe(absl::ToDoubleSeconds(absl::Now() - s.params.received));
  {
    absl::MutexLock lock(&mu_);
    live_.erase(s.params.request_id);
    if (s.running) --running_count_;
  }
  if (!status.ok()) {
    ENGRAM_LOG(INFO)
            .With("request", s.params.request_id)
            .With("code", absl::StatusCodeToString(status.code()))
        << "request failed: " << status.message();
  }
  s.sink->OnEvent(std::move(event));
}

void Scheduler::PublishGauges() {
  // A bounded cache (the GPU's) reports its blocks in use. The CPU backbone's cache is unbounded;
  // it holds each running sequence's reservation (prompt + most new tokens), out of at most
  // max_running_requests x context tokens.
  const KvCapacity kv = backbone_.kv_capacity();
  if (kv.bounded()) {
    metrics_.kv_cache_usage_ratio.Set(kv.usage());
  } else {
    double reserved = 0;
    for (const auto& s : running_) reserved += s->params.prompt.size() + s->max_new_tokens;
    metrics_.kv_cache_usage_ratio.Set(reserved / (static_cast<double>(options_.max_running_requests) *
                                                  options_.max_context_tokens));
  }
  absl::MutexLock lock(&mu_);
  metrics_.running_requests.Set(running_count_);
  metrics_.queue_length.Set(static_cast<double>(live_.size()) - running_count_);
}

}  // namespace engram
