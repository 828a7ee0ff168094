// Scheduler unit tests on a real (tiny) Engram model with rows from its own tables
// (LocalRowBackend): outputs equal the in-process reference (model/local_generate.h), new requests
// join the running batch between steps, prefill is chunked, cancellation/abort end a request at a
// step boundary, deadlines and missing rows end it with the right code, the bounded queue answers
// RESOURCE_EXHAUSTED, and request validation rejects bad input with INVALID_ARGUMENT.
//
// Needs the GPT-2 tokenizer.json from scripts/fetch-testdata.sh (the demo model writer copies it).
#include "server/scheduler.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/metrics_server.h"
#include "gtest/gtest.h"
#include "model/cpu_backbone.h"
#include "model/demo_model.h"
#include "model/local_generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "server/engram_rows.h"
#include "server/request.h"
#include "server/worker_metrics.h"
#include "tests/model/tiny_model.h"

namespace engram {
namespace {

constexpr int kContext = 96;

// Records a request's events; lets a test act on the n-th token from the loop thread.
class Collector : public GenerateSink {
 public:
  void OnEvent(GenerateEvent e) override {
    std::function<void(int)> hook;
    int tokens;
    {
      absl::MutexLock lock(&mu_);
      for (uint32_t t : e.token_ids) tokens_.push_back(t);
      text_ += e.text;
      ++events_;
      tokens = static_cast<int>(tokens_.size());
      hook = on_tokens_;
      if (e.last) {
        last_ = e;
        done_.Notify();
      }
    }
    if (hook && !e.last) hook(tokens);
  }
  // Runs `hook(tokens so far)` after each non-last event (on the loop thread). Set before Submit.
  void OnTokens(std::function<void(int)> hook) { on_tokens_ = std::move(hook); }
  // Waits (bounded) for the last event.
  GenerateEvent Wait() {
    EXPECT_TRUE(done_.WaitForNotificationWithTimeout(absl::Seconds(60)))
        << "request never finished";
    absl::MutexLock lock(&mu_);
    return last_;
  }
  std::vector<uint32_t> tokens() {
    absl::MutexLock lock(&mu_);
    return tokens_;
  }
  std::string text() {
    absl::MutexLock lock(&mu_);
    return text_;
  }

 private:
  absl::Mutex mu_;
  std::vector<uint32_t> tokens_;
  std::string text_;
  int events_ = 0;
  GenerateEvent last_;
  absl::Notification done_;
  std::function<void(int)> on_tokens_;
};

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string tokenizer = DefaultDemoTokenizerPath();
    if (!std::filesystem::exists(tokenizer)) {
      GTEST_FAIL() << tokenizer << " is missing: run scripts/fetch-testdata.sh";
    }
    dir_ = new std::string(absl::StrCat(::testing::TempDir(), "/scheduler_test_model_", getpid()));
    DemoModelOptions o = testing::TinyModelOptions(kContext);
    o.model_name = "scheduler-test";
    absl::Status s = WriteDemoModel(*dir_, o);
    ASSERT_TRUE(s.ok()) << s;
    auto model = Model::Load(*dir_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
  }
  static void TearDownTestSuite() {
    delete model_;
    if (dir_) std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  void SetUp() override { ASSERT_NE(model_, nullptr); }

  // A scheduler over the test model; options default to a roomy batch.
  void Build(SchedulerOptions options = {}) {
    if (scheduler_) scheduler_->Stop();
    scheduler_.reset();
    options.max_context_tokens = kContext;
    registry_ = std::make_shared<prometheus::Registry>();
    metrics_ = std::make_unique<WorkerMetrics>(registry_, model_->config().engram.layer_ids,
                                               model_->name());
    CpuBackboneOptions b;
    b.threads = 1;
    backbone_ = std::make_unique<CpuBackbone>(*model_, b);
    auto rows = LocalRowBackend::Create(*model_);
    ASSERT_TRUE(rows.ok()) << rows.status();
    rows_ = *std::move(rows);
    scheduler_ = std::make_unique<Scheduler>(*model_, *backbone_, rows_.get(), *metrics_, options);
    scheduler_->SetStepObserver([this](const StepInfo& info) {
      absl::MutexLock lock(&steps_mu_);
      steps_.push_back(info);
    });
    scheduler_->Start();
  }
  void TearDown() override {
    if (rows_) rows_->SetHold(false);
    if (scheduler_) scheduler_->Stop();
  }

  static v1::GenerateRequest Request(const std::string& text, int max_tokens) {
    v1::GenerateRequest r;
    r.set_text(text);
    r.mutable_stopping()->set_max_tokens(max_tokens);
    r.mutable_stopping()->set_ignore_eos(true);
    return r;
  }
  absl::StatusOr<GenerateParams> Params(const v1::GenerateRequest& r,
                                        absl::Time deadline = absl::InfiniteFuture()) {
    RequestLimits limits;
    limits.max_context_tokens = kContext;
    limits.default_max_tokens = 8;
    return ValidateGenerateRequest(r, *model_, limits, absl::Now(), deadline);
  }
  absl::StatusOr<uint64_t> Submit(const v1::GenerateRequest& r, std::shared_ptr<Collector> sink,
                                  absl::Time deadline = absl::InfiniteFuture()) {
    auto p = Params(r, deadline);
    if (!p.ok()) return p.status();
    return scheduler_->Submit(*std::move(p), std::move(sink));
  }
  // The reference: the same request run alone, in-process.
  LocalGenerateResult Reference(const v1::GenerateRequest& r) {
    auto p = Params(r);
    EXPECT_TRUE(p.ok()) << p.status();
    LocalGenerateOptions o;
    o.sampling = p->sampling;
    o.stop = p->stop;
    o.max_context = kContext;
    o.threads = 1;
    auto result = LocalGenerate(*model_, p->prompt, o);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : LocalGenerateResult{};
  }
  std::vector<StepInfo> Steps() {
    absl::MutexLock lock(&steps_mu_);
    return steps_;
  }
  // Blocks until the observer saw a step with `request_id` (bounded).
  bool WaitForStepWith(const std::string& request_id) {
    absl::MutexLock lock(&steps_mu_);
    auto seen = [&]() ABSL_SHARED_LOCKS_REQUIRED(steps_mu_) {
      for (const auto& s : steps_) {
        for (const auto& i : s.items) {
          if (i.request_id == request_id) return true;
        }
      }
      return false;
    };
    return steps_mu_.AwaitWithTimeout(absl::Condition(&seen), absl::Seconds(30));
  }

  static std::string* dir_;
  static const Model* model_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<WorkerMetrics> metrics_;
  std::unique_ptr<CpuBackbone> backbone_;
  std::unique_ptr<LocalRowBackend> rows_;
  std::unique_ptr<Scheduler> scheduler_;
  absl::Mutex steps_mu_;
  std::vector<StepInfo> steps_ ABSL_GUARDED_BY(steps_mu_);
};

std::string* SchedulerTest::dir_ = nullptr;
const Model* SchedulerTest::model_ = nullptr;

TEST_F(SchedulerTest, GreedyOutputEqualsInProcessReference) {
  Build();
  for (const char* prompt :
       {"The quick brown fox", "Hello", "Engram tables live in the memory tier."}) {
    v1::GenerateRequest r = Request(prompt, 12);
    auto sink = std::make_shared<Collector>();
    ASSERT_TRUE(Submit(r, sink).ok());
    GenerateEvent last = sink->Wait();
    ASSERT_TRUE(last.status.ok()) << last.status;
    LocalGenerateResult want = Reference(r);
    EXPECT_EQ(sink->tokens(), want.tokens) << prompt;
    EXPECT_EQ(sink->text(), want.text) << prompt;
    EXPECT_EQ(last.finish_reason, FinishReason::kLength);
    EXPECT_EQ(last.completion_tokens, 12u);
    EXPECT_EQ(last.prompt_tokens, Params(r)->prompt.size());
  }
}

TEST_F(SchedulerTest, StopStringsAndStopTokensEndLikeTheReference) {
  Build();
  v1::GenerateRequest plain = Request("Stop conditions are checked on every token", 16);
  LocalGenerateResult full = Reference(plain);
  ASSERT_EQ(full.tokens.size(), 16u);
  ASSERT_GT(full.text.size(), 8u);

  // A stop string taken from the middle of the text: the text ends before it.
  v1::GenerateRequest with_stop = plain;
  const std::string stop = full.text.substr(full.text.size() / 2, 3);
  with_stop.mutable_stopping()->add_stop(stop);
  auto sink = std::make_shared<Collector>();
  ASSERT_TRUE(Submit(with_stop, sink).ok());
  GenerateEvent last = sink->Wait();
  ASSERT_TRUE(last.status.ok()) << last.status;
  LocalGenerateResult want = Reference(with_stop);
  EXPECT_EQ(want.finish_reason, FinishReason::kStop);
  EXPECT_EQ(last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(sink->text(), want.text);
  EXPECT_EQ(sink->tokens(), want.tokens);
  EXPECT_EQ(sink->text().find(stop), std::string::npos);

  // A stop token id: generation ends there and the token is not returned.
  v1::GenerateRequest with_stop_id = plain;
  with_stop_id.mutable_stopping()->add_stop_token_ids(full.tokens[5]);
  auto sink2 = std::make_shared<Collector>();
  ASSERT_TRUE(Submit(with_stop_id, sink2).ok());
  last = sink2->Wait();
  ASSERT_TRUE(last.status.ok()) << last.status;
  want = Reference(with_stop_id);
  EXPECT_EQ(last.finish_reason, FinishReason::kStop);
  EXPECT_EQ(sink2->tokens(), want.tokens);
  EXPECT_LE(sink2->tokens().size(), 5u);
  EXPECT_EQ(last.completion_tokens, sink2->tokens().size());
}

TEST_F(SchedulerTest, PrefillIsChunkedAndGivesTheSameTokens) {
  SchedulerOptions o;
  o.prefill_chunk_tokens = 5;
  Build(o);
  v1::GenerateRequest r = Request(
      "A long prompt that certainly has more than seventeen tokens in it, split in chunks.", 6);
  r.set_request_id("chunked");
  const size_t prompt = Params(r)->prompt.size();
  ASSERT_GT(prompt, 10u);
  auto sink = std::make_shared<Collector>();
  ASSERT_TRUE(Submit(r, sink).ok());
  ASSERT_TRUE(sink->Wait().status.ok());
  EXPECT_EQ(sink->tokens(), Reference(r).tokens);
  std::vector<int> chunks;
  for (const StepInfo& s : Steps()) {
    for (const auto& i : s.items) {
      if (i.prefill) chunks.push_back(i.tokens);
    }
  }
  ASSERT_EQ(chunks.size(), (prompt + 4) / 5);
  for (size_t c = 0; c + 1 < chunks.size(); ++c) EXPECT_EQ(chunks[c], 5);
  EXPECT_EQ(chunks.back(), static_cast<int>(prompt - 5 * (chunks.size() - 1)));
}

TEST_F(SchedulerTest, NewRequestJoinsTheRunningBatchBetweenSteps) {
  Build();
  v1::GenerateRequest a = Request("First request, already decoding", 10);
  a.set_request_id("a");
  v1::GenerateRequest b = Request("Second request joins", 6);
  b.set_request_id("b");
  auto sink_a = std::make_shared<Collector>();
  auto sink_b = std::make_shared<Collector>();
  // B arrives while A is running: submitted from A's first token event.
  std::atomic<bool> submitted{false};
  sink_a->OnTokens([&](int tokens) {
    if (tokens == 1 && !submitted.exchange(true)) {
      EXPECT_TRUE(Submit(b, sink_b).ok());
    }
  });
  ASSERT_TRUE(Submit(a, sink_a).ok());
  ASSERT_TRUE(sink_a->Wait().status.ok());
  ASSERT_TRUE(sink_b->Wait().status.ok());

  bool joined = false;
  for (const StepInfo& s : Steps()) {
    bool a_decode = false, b_prefill = false;
    for (const auto& i : s.items) {
      a_decode |= i.request_id == "a" && !i.prefill;
      b_prefill |= i.request_id == "b" && i.prefill;
    }
    joined |= a_decode && b_prefill;
  }
  EXPECT_TRUE(joined) << "no step ran A's decode together with B's prefill";
  // Batch-mates do not change a sequence's tokens.
  EXPECT_EQ(sink_a->tokens(), Reference(a).tokens);
  EXPECT_EQ(sink_b->tokens(), Reference(b).tokens);
}

TEST_F(SchedulerTest, SeededSamplingIsReproducibleAcrossBatchCompositions) {
  Build();
  v1::GenerateRequest r = Request("Sampling with a seed", 10);
  r.mutable_sampling()->set_temperature(0.9f);
  r.mutable_sampling()->set_top_k(50);
  r.mutable_sampling()->set_top_p(0.95f);
  r.mutable_sampling()->set_seed(1234);
  std::vector<v1::GenerateRequest> requests;
  std::vector<std::shared_ptr<Collector>> sinks;
  for (int i = 0; i < 3; ++i) {
    requests.push_back(r);
    requests.back().set_request_id(absl::StrCat("seeded-", i));
    sinks.push_back(std::make_shared<Collector>());
  }
  // The first request decodes alone at first; the others join it from its first token event, so
  // the same seeded request runs in batches of different sizes.
  std::atomic<bool> submitted{false};
  sinks[0]->OnTokens([&](int tokens) {
    if (tokens == 1 && !submitted.exchange(true)) {
      for (int i = 1; i < 3; ++i) EXPECT_TRUE(Submit(requests[i], sinks[i]).ok());
    }
  });
  ASSERT_TRUE(Submit(requests[0], sinks[0]).ok());
  LocalGenerateResult want = Reference(r);
  for (auto& s : sinks) {
    ASSERT_TRUE(s->Wait().status.ok());
    EXPECT_EQ(s->tokens(), want.tokens);
  }

  size_t most_together = 0;
  for (const StepInfo& s : Steps()) {
    std::set<std::string> seeded;
    for (const auto& i : s.items) {
      if (absl::StartsWith(i.request_id, "seeded-")) seeded.insert(i.request_id);
    }
    most_together = std::max(most_together, seeded.size());
  }
  EXPECT_GE(most_together, 2u) << "no step ran two of the seeded requests together";
}

TEST_F(SchedulerTest, CancelAndAbortEndTheRequestAtAStepBoundary) {
  Build();
  v1::GenerateRequest r = Request("Cancel me after three tokens", 60);
  auto sink = std::make_shared<Collector>();
  uint64_t handle = 0;
  absl::Notification submitted;
  sink->OnTokens([&](int tokens) {
    if (tokens == 3) {
      submitted.WaitForNotification();
      scheduler_->Cancel(handle, absl::CancelledError("client went away"));
    }
  });
  auto h = Submit(r, sink);
  ASSERT_TRUE(h.ok());
  handle = *h;
  submitted.Notify();
  GenerateEvent last = sink->Wait();
  EXPECT_EQ(last.status.code(), absl::StatusCode::kCancelled) << last.status;
  EXPECT_LT(sink->tokens().size(), 60u);
  EXPECT_GE(sink->tokens().size(), 3u);

  v1::GenerateRequest r2 = Request("Abort me by id", 60);
  r2.set_request_id("abort-me");
  auto sink2 = std::make_shared<Collector>();
  sink2->OnTokens([&](int tokens) {
    if (tokens == 2) {
      EXPECT_TRUE(scheduler_->Abort("abort-me"));
    }
  });
  ASSERT_TRUE(Submit(r2, sink2).ok());
  last = sink2->Wait();
  EXPECT_TRUE(last.status.ok()) << last.status;
  EXPECT_EQ(last.finish_reason, FinishReason::kAborted);
  EXPECT_LT(sink2->tokens().size(), 60u);
  EXPECT_FALSE(scheduler_->Abort("abort-me"));  // gone now
}

TEST_F(SchedulerTest, BoundedQueueAnswersResourceExhausted) {
  SchedulerOptions o;
  o.max_running_requests = 1;
  o.max_queued_requests = 1;
  o.max_step_tokens = 64;
  Build(o);
  rows_->SetHold(true);  // A's first step waits for rows, holding its slot
  v1::GenerateRequest a = Request("running", 3);
  a.set_request_id("a");
  auto sink_a = std::make_shared<Collector>();
  ASSERT_TRUE(Submit(a, sink_a).ok());
  ASSERT_TRUE(WaitForStepWith("a"));
  EXPECT_EQ(scheduler_->running(), 1);

  v1::GenerateRequest b = Request("queued", 3);
  b.set_request_id("b");
  auto sink_b = std::make_shared<Collector>();
  ASSERT_TRUE(Submit(b, sink_b).ok());
  EXPECT_EQ(scheduler_->queued(), 1);
  v1::GenerateRequest c = Request("rejected", 3);
  c.set_request_id("c");
  auto rejected = Submit(c, std::make_shared<Collector>());
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kResourceExhausted) << rejected.status();
  EXPECT_EQ(
      rejected.status().message(),
      "the worker is full: it holds 2 requests (at most 1 running and 1 queued); retry later");
  // A request id can only be live once.
  EXPECT_EQ(Submit(b, std::make_shared<Collector>()).status().code(),
            absl::StatusCode::kAlreadyExists);

  rows_->SetHold(false);
  EXPECT_TRUE(sink_a->Wait().status.ok());
  EXPECT_TRUE(sink_b->Wait().status.ok());
  EXPECT_TRUE(scheduler_->WaitIdle(absl::Now() + absl::Seconds(30)));
  EXPECT_EQ(scheduler_->queued(), 0);
  EXPECT_EQ(scheduler_->running(), 0);
  const std::string text = RenderMetrics(*registry_);
  const std::string model = "model_name=\"" + model_->name() + "\"";
  EXPECT_NE(text.find("engram_worker_requests_total{code=\"OK\"," + model + "} 2"),
            std::string::npos)
      << text;
  // Both ran to max_tokens; nothing is left in the KV cache.
  EXPECT_NE(text.find("engram_worker_requests_finished_total{finish_reason=\"length\"," + model +
                      "} 2"),
            std::string::npos)
      << text;
  // The loop publishes the gauge after the step that ended them.
  for (int i = 0; i < 500 && metrics_->kv_cache_usage_ratio.Value() != 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(metrics_->kv_cache_usage_ratio.Value(), 0);
}

TEST_F(SchedulerTest, DeadlinesEndQueuedAndStalledRequests) {
  SchedulerOptions o;
  o.max_running_requests = 1;
  o.max_step_tokens = 64;
  Build(o);
  rows_->SetHold(true);
  // A holds the only slot; its rows never come, so its wait ends at its deadline: UNAVAILABLE.
  // B waits in the queue with the same deadline, which has passed when the slot frees (a shorter
  // one of its own would make the outcome depend on how soon after A it was submitted).
  const absl::Time deadline = absl::Now() + absl::Seconds(2);
  v1::GenerateRequest a = Request("stalled on rows", 3);
  a.set_request_id("a");
  auto sink_a = std::make_shared<Collector>();
  ASSERT_TRUE(Submit(a, sink_a, deadline).ok());
  ASSERT_TRUE(WaitForStepWith("a"));
  v1::GenerateRequest b = Request("expires in the queue", 3);
  b.set_request_id("b");
  auto sink_b = std::make_shared<Collector>();
  ASSERT_TRUE(Submit(b, sink_b, deadline).ok());

  GenerateEvent last_a = sink_a->Wait();
  EXPECT_EQ(last_a.status.code(), absl::StatusCode::kUnavailable) << last_a.status;
  EXPECT_NE(last_a.status.message().find("deadline"), std::string::npos) << last_a.status;
  GenerateEvent last_b = sink_b->Wait();
  EXPECT_EQ(last_b.status.code(), absl::StatusCode::kDeadlineExceeded) << last_b.status;
  EXPECT_NE(last_b.status.message().find("queued"), std::string::npos) << last_b.status;
}

TEST_F(SchedulerTest, RowsTimeoutAndUnavailableRowsFailWithUnavailable) {
  SchedulerOptions o;
  o.rows_timeout = absl::Milliseconds(100);
  Build(o);
  rows_->SetHold(true);
  auto sink = std::make_shared<Collector>();
  ASSERT_TRUE(Submit(Request("no deadline, rows never come", 3), sink).ok());
  GenerateEvent last = sink->Wait();
  EXPECT_EQ(last.status.code(), absl::StatusCode::kUnavailable) << last.status;
  EXPECT_NE(last.status.message().find("100ms"), std::string::npos) << last.status;
  rows_->SetHold(false);

  // The row source gone: new requests are refused at once; the scheduler keeps serving after.
  rows_->SetAvailable(false);
  EXPECT_EQ(Submit(Request("refused", 3), std::make_shared<Collector>()).status().code(),
            absl::StatusCode::kUnavailable);
  rows_->SetAvailable(true);
  auto again = std::make_shared<Collector>();
  ASSERT_TRUE(Submit(Request("served again", 3), again).ok());
  EXPECT_TRUE(again->Wait().status.ok());
}

// The rows wait of a step is bounded by rows_timeout in all, not per sequence: eight sequences
// whose rows never come end after about one rows_timeout per step, not eight.
TEST_F(SchedulerTest, StalledRowsOfManySequencesCostOneRowsTimeoutPerStep) {
  SchedulerOptions o;
  o.rows_timeout = absl::Milliseconds(500);
  Build(o);
  rows_->SetHold(true);
  std::vector<std::shared_ptr<Collector>> sinks;
  for (int i = 0; i < 8; ++i) {
    v1::GenerateRequest r = Request(absl::StrCat("stalled sequence ", i), 3);
    r.set_request_id(absl::StrCat("stalled-", i));
    sinks.push_back(std::make_shared<Collector>());
    ASSERT_TRUE(Submit(r, sinks.back()).ok());
  }
  for (auto& sink : sinks) {
    GenerateEvent last = sink->Wait();
    EXPECT_EQ(last.status.code(), absl::StatusCode::kUnavailable) << last.status;
    EXPECT_NE(last.status.message().find("500ms"), std::string::npos) << last.status;
  }
  // At most two steps (the first request may run alone): ~1 s of waiting for rows, as the loop
  // itself counts it (the test thread's own delays are not in it). Waiting per sequence took 4 s.
  const double stalled = metrics_->step_stall.Collect().histogram.sample_sum;
  EXPECT_LT(stalled, 2.5) << stalled;
  EXPECT_GE(stalled, 0.4) << stalled;  // the rows did stall (one 0.5 s wait at least)
  rows_->SetHold(false);
  auto again = std::make_shared<Collector>();
  ASSERT_TRUE(Submit(Request("served after the stall", 3), again).ok());
  EXPECT_TRUE(again->Wait().status.ok());
}

TEST_F(SchedulerTest, StopAcceptingDrainsAndStopEndsTheRest) {
  Build();
  auto sink = std::make_shared<Collector>();
  ASSERT_TRUE(Submit(Request("finishes during the drain", 5), sink).ok());
  scheduler_->StopAccepting();
  EXPECT_EQ(Submit(Request("too late", 3), std::make_shared<Collector>()).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_TRUE(scheduler_->WaitIdle(absl::Now() + absl::Seconds(30)));
  EXPECT_TRUE(sink->Wait().status.ok());

  // At Stop, a queued request ends with the stop status (the running one with its own error).
  // The held step's rows fail only after Stop has taken effect, so the loop never frees the slot
  // for the queued request first, however the threads are scheduled.
  SchedulerOptions o;
  o.max_running_requests = 1;
  o.max_step_tokens = 64;
  o.rows_timeout = absl::Seconds(60);  // the held step ends when the test fails its rows
  Build(o);
  rows_->SetHold(true);
  v1::GenerateRequest a = Request("held at shutdown", 3);
  a.set_request_id("held");
  auto held = std::make_shared<Collector>();
  ASSERT_TRUE(Submit(a, held).ok());
  ASSERT_TRUE(WaitForStepWith("held"));
  auto queued = std::make_shared<Collector>();
  ASSERT_TRUE(Submit(Request("queued at shutdown", 3), queued).ok());
  std::thread stopper([&] { scheduler_->Stop(absl::UnavailableError("shutting down")); });
  // Stop has taken effect when a submission is refused as draining (before, the reused id is
  // ALREADY_EXISTS).
  absl::StatusCode late = absl::StatusCode::kOk;
  for (int i = 0; i < 3000 && late != absl::StatusCode::kUnavailable; ++i) {
    if (i > 0) absl::SleepFor(absl::Milliseconds(10));
    late = Submit(a, std::make_shared<Collector>()).status().code();
  }
  EXPECT_EQ(late, absl::StatusCode::kUnavailable);
  rows_->SetAvailable(false);  // the held step's rows fail now
  stopper.join();
  rows_->SetAvailable(true);
  EXPECT_EQ(held->Wait().status.code(), absl::StatusCode::kUnavailable);
  GenerateEvent last = queued->Wait();
  EXPECT_EQ(last.status.code(), absl::StatusCode::kUnavailable) << last.status;
  EXPECT_EQ(last.status.message(), "shutting down");
}

TEST_F(SchedulerTest, ValidationRejectsBadInputWithInvalidArgument) {
  auto code = [&](const v1::GenerateRequest& r) { return Params(r).status().code(); };
  auto message = [&](const v1::GenerateRequest& r) {
    return std::string(Params(r).status().message());
  };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;

  v1::GenerateRequest none;
  EXPECT_EQ(code(none), kInvalid);
  EXPECT_NE(message(none).find("prompt is required"), std::string::npos);
  v1::GenerateRequest empty_text;
  empty_text.set_text("");
  EXPECT_EQ(code(empty_text), kInvalid);
  v1::GenerateRequest empty_ids;
  empty_ids.mutable_token_ids();
  EXPECT_EQ(code(empty_ids), kInvalid);

  v1::GenerateRequest out_of_range;
  out_of_range.mutable_token_ids()->add_ids(1);
  out_of_range.mutable_token_ids()->add_ids(static_cast<uint32_t>(model_->config().vocab_size));
  EXPECT_EQ(code(out_of_range), kInvalid);
  EXPECT_NE(message(out_of_range).find("token_ids[1]"), std::string::npos) << message(out_of_range);

  v1::GenerateRequest too_long;
  for (int i = 0; i < kContext; ++i) too_long.mutable_token_ids()->add_ids(100 + i);
  EXPECT_EQ(code(too_long), kInvalid);
  EXPECT_NE(message(too_long).find("context window"), std::string::npos) << message(too_long);
  too_long.mutable_token_ids()->mutable_ids()->RemoveLast();  // kContext - 1 tokens fit
  EXPECT_TRUE(Params(too_long).ok()) << Params(too_long).status();
  // The length is checked before the ids are copied or walked: millions of bad ids are refused
  // for their number.
  v1::GenerateRequest huge;
  huge.mutable_token_ids()->mutable_ids()->Resize(4000000, UINT32_MAX);
  EXPECT_NE(message(huge).find("prompt has 4000000 tokens; the context window is"),
            std::string::npos)
      << message(huge);

  v1::GenerateRequest r = Request("fine", 4);
  EXPECT_TRUE(Params(r).ok());
  r.mutable_sampling()->set_temperature(-0.5f);
  EXPECT_EQ(code(r), kInvalid);
  EXPECT_NE(message(r).find("temperature"), std::string::npos);
  for (float top_p : {0.0f, -0.1f, 1.5f}) {
    v1::GenerateRequest p = Request("fine", 4);
    p.mutable_sampling()->set_top_p(top_p);
    EXPECT_EQ(code(p), kInvalid) << top_p;
    EXPECT_NE(message(p).find("top_p"), std::string::npos);
  }
  v1::GenerateRequest stop = Request("fine", 4);
  stop.mutable_stopping()->add_stop("");
  EXPECT_EQ(code(stop), kInvalid);
  v1::GenerateRequest stop_id = Request("fine", 4);
  stop_id.mutable_stopping()->add_stop_token_ids(
      static_cast<uint32_t>(model_->config().vocab_size) + 5);
  EXPECT_EQ(code(stop_id), kInvalid);

  // Defaults: max_tokens 0 = the server default, top_p unset = 1, no seed = a random one.
  v1::GenerateRequest defaults;
  defaults.set_text("defaults");
  auto p = Params(defaults);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->stop.max_tokens, 8);
  EXPECT_EQ(p->sampling.top_p, 1.0f);
  EXPECT_EQ(p->stop.eos_token_ids, model_->config().eos_token_ids);
  EXPECT_FALSE(p->request_id.empty());
}

}  // namespace
}  // namespace engram
