// End to end over loopback with both real processes (engram-memory + engram-worker, started by the
// test): streamed greedy generation equals the in-process reference token for token; 32
// concurrent streams all complete (and match too); bad inputs get INVALID_ARGUMENT; Tokenize,
// GetModelInfo, Abort, client cancellation and the worker's /metrics.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/local_generate.h"
#include "model/tokenizer.h"
#include "tests/common/raw_call.h"
#include "tests/common/test_paths.h"
#include "tests/integration/worker_cluster.h"

namespace engram {
namespace {

using testing::HttpGet;
using testing::MetricValue;
using testing::RawCall;
using testing::RawCallResult;
using testing::WaitUntil;
using testing::WorkerCluster;

class WorkerE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto cluster = WorkerCluster::Start();
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr); }

  static v1::GenerateRequest Greedy(const std::string& prompt, int max_tokens) {
    v1::GenerateRequest r;
    r.set_text(prompt);
    r.mutable_stopping()->set_max_tokens(max_tokens);
    return r;
  }
  // The same request run in-process (no memory tier, no scheduler).
  static LocalGenerateResult Reference(const v1::GenerateRequest& r) {
    const Model& model = cluster_->model();
    auto prompt = model.tokenizer().Encode(r.text());
    EXPECT_TRUE(prompt.ok());
    LocalGenerateOptions o;
    o.sampling.temperature = 0;
    o.stop.max_tokens = static_cast<int>(r.stopping().max_tokens());
    o.stop.eos_token_ids = model.config().eos_token_ids;
    o.stop.ignore_eos = r.stopping().ignore_eos();
    o.threads = 1;
    auto result = LocalGenerate(model, *prompt, o);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : LocalGenerateResult{};
  }

  static WorkerCluster* cluster_;
};

WorkerCluster* WorkerE2eTest::cluster_ = nullptr;

bool WaitUntilServed(const std::atomic<int>& served, int at_least) {
  return testing::WaitUntil([&] { return served.load() >= at_least; }, absl::Seconds(30));
}

TEST_F(WorkerE2eTest, StreamedGreedyGenerationEqualsInProcessReference) {
  auto client = cluster_->Client();
  for (const char* prompt : {"The memory tier serves rows", "Once upon a time, in a land far away,",
                             "1 2 3 4 5 6 7 8"}) {
    v1::GenerateRequest r = Greedy(prompt, 24);
    std::vector<v1::GenerateResponse> messages;
    absl::Status s = client->Generate(r, [&](const v1::GenerateResponse& m) {
      messages.push_back(m);
      return true;
    });
    ASSERT_TRUE(s.ok()) << s << cluster_->Logs();
    LocalGenerateResult want = Reference(r);
    std::vector<uint32_t> tokens;
    std::string text;
    for (size_t i = 0; i < messages.size(); ++i) {
      const auto& m = messages[i];
      EXPECT_FALSE(m.request_id().empty());
      EXPECT_EQ(m.request_id(), messages[0].request_id());
      // Only the last message carries the finish reason and usage.
      EXPECT_EQ(m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED, i + 1 == messages.size());
      tokens.insert(tokens.end(), m.token_ids().begin(), m.token_ids().end());
      text += m.text();
    }
    EXPECT_GT(messages.size(), 1u) << "tokens were not streamed";
    EXPECT_EQ(tokens, want.tokens) << prompt;
    EXPECT_EQ(text, want.text) << prompt;
    const auto& last = messages.back();
    EXPECT_EQ(last.usage().completion_tokens(), tokens.size());
    EXPECT_EQ(last.usage().prompt_tokens(), cluster_->model().tokenizer().Encode(prompt)->size());
  }
}

// The CLI streams the same text to stdout.
TEST_F(WorkerE2eTest, EngramGenerateCommandPrintsTheText) {
  v1::GenerateRequest r = Greedy("The command line client", 12);
  const std::string out = cluster_->dir() + "/generate.out";
  auto p = testing::Process::Start(
      {testing::BinaryPath("client/engram"), "generate", "--server", cluster_->worker_address(),
       "--prompt", r.text(), "--max-tokens", "12", "--quiet"},
      out);
  ASSERT_TRUE(p.ok()) << p.status();
  auto status = (*p)->Wait(absl::Seconds(60));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(*status, 0) << (*p)->LogTail();
  EXPECT_EQ((*p)->LogTail(), Reference(r).text + "\n");
}

TEST_F(WorkerE2eTest, ThirtyTwoConcurrentStreamsAllComplete) {
  constexpr int kStreams = 32;
  std::vector<v1::GenerateRequest> requests;
  std::vector<LocalGenerateResult> want;
  for (int i = 0; i < kStreams; ++i) {
    requests.push_back(Greedy(absl::StrCat("Stream number ", i, " says"), 12 + i % 5));
    want.push_back(Reference(requests.back()));
  }
  auto client = cluster_->Client();
  auto steps = [&] {
    auto m = HttpGet(cluster_->worker_metrics_port(), "/metrics");
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? MetricValue(*m, "engram_worker_step_duration_seconds_count") : -1;
  };
  const double steps_before = steps();
  std::vector<absl::StatusOr<GenerateResult>> results(kStreams, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { results[i] = client->GenerateAll(requests[i]); });
  }
  for (auto& t : threads) t.join();
  double generated = 0;
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].status() << cluster_->Logs();
    EXPECT_EQ(results[i]->token_ids, want[i].tokens) << "stream " << i;
    EXPECT_NE(results[i]->finish_reason, v1::FINISH_REASON_UNSPECIFIED);
    generated += results[i]->usage.completion_tokens();
  }
  // They really ran together: one after the other they would need at least one step per
  // generated token; fewer steps means steps held several sequences.
  EXPECT_LT(steps() - steps_before, generated) << "steps for " << generated << " tokens";
}

TEST_F(WorkerE2eTest, BadInputsAreInvalidArgument) {
  auto client = cluster_->Client();
  const int vocab = cluster_->model().config().vocab_size;
  auto code = [&](const v1::GenerateRequest& r) { return client->GenerateAll(r).status().code(); };
  const auto kInvalid = absl::StatusCode::kInvalidArgument;

  v1::GenerateRequest empty;
  empty.set_text("");
  EXPECT_EQ(code(empty), kInvalid);
  v1::GenerateRequest no_prompt;
  EXPECT_EQ(code(no_prompt), kInvalid);
  v1::GenerateRequest too_long;
  const int context = cluster_->model().config().max_position_embeddings;
  for (int i = 0; i < context; ++i) too_long.mutable_token_ids()->add_ids(100 + i % 1000);
  auto status = client->GenerateAll(too_long).status();
  EXPECT_EQ(status.code(), kInvalid);
  EXPECT_NE(status.message().find("context"), std::string::npos) << status;
  v1::GenerateRequest out_of_range;
  out_of_range.mutable_token_ids()->add_ids(vocab);
  status = client->GenerateAll(out_of_range).status();
  EXPECT_EQ(status.code(), kInvalid);
  EXPECT_NE(status.message().find("out of range"), std::string::npos) << status;
  v1::GenerateRequest temperature = Greedy("x", 3);
  temperature.mutable_sampling()->set_temperature(-1);
  EXPECT_EQ(code(temperature), kInvalid);
  for (float top_p : {0.0f, 1.01f, -0.5f}) {
    v1::GenerateRequest r = Greedy("x", 3);
    r.mutable_sampling()->set_top_p(top_p);
    EXPECT_EQ(code(r), kInvalid) << top_p;
  }
  // The worker still serves afterwards.
  EXPECT_TRUE(client->GenerateAll(Greedy("still fine", 2)).ok());
}

TEST_F(WorkerE2eTest, TokenizeModelInfoAndHealth) {
  auto client = cluster_->Client();
  auto tokens = client->Tokenize("Hello world");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(std::vector<uint32_t>(tokens->ids().begin(), tokens->ids().end()),
            *cluster_->model().tokenizer().Encode("Hello world"));
  EXPECT_EQ(tokens->tokens_size(), tokens->ids_size());
  auto info = client->GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->model(), cluster_->model().name());
  EXPECT_EQ(info->vocab_size(), static_cast<uint32_t>(cluster_->model().config().vocab_size));
  EXPECT_EQ(info->engram_layer_ids_size(), 2);
  EXPECT_EQ(info->memory_tier(), cluster_->memory_address());
  EXPECT_EQ(info->backend(), "cpu");
  auto serving = client->IsServing();
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_TRUE(*serving);
  serving = client->IsServing("engram.v1.Inference");
  ASSERT_TRUE(serving.ok()) << serving.status();
  EXPECT_TRUE(*serving);
}

// Requests that do not parse (a string field that is not UTF-8, or bytes that are no protobuf at
// all) are INVALID_ARGUMENT naming the message, on every method; gRPC's own handlers answer such
// requests UNIMPLEMENTED with no message.
TEST_F(WorkerE2eTest, UnparsableRequestsAreInvalidArgument) {
  v1::GenerateRequest generate = Greedy("placeholder", 2);
  std::string bad_text = generate.SerializeAsString();
  const size_t at = bad_text.find("placeholder");
  ASSERT_NE(at, std::string::npos);
  bad_text[at] = '\xff';
  const std::string garbage = "\xff\xff\xff\xff";
  v1::TokenizeRequest tokenize;
  tokenize.set_text("ab");
  std::string bad_tokenize = tokenize.SerializeAsString();
  bad_tokenize.back() = '\xfe';
  const struct {
    const char* method;
    std::string request;
    const char* message;
  } cases[] = {
      {"Generate", bad_text, "engram.v1.GenerateRequest"},
      {"Generate", garbage, "engram.v1.GenerateRequest"},
      {"Tokenize", bad_tokenize, "engram.v1.TokenizeRequest"},
      {"GetModelInfo", garbage, "engram.v1.GetModelInfoRequest"},
      {"Abort", garbage, "engram.v1.AbortRequest"},
  };
  for (const auto& c : cases) {
    grpc::Status s = RawCall(cluster_->worker_address(),
                             absl::StrCat("/engram.v1.Inference/", c.method), {c.request})
                         .status;
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.method << ": " << s.error_message();
    EXPECT_NE(s.error_message().find(c.message), std::string::npos) << s.error_message();
  }
  // Well-formed requests still work through the same path.
  RawCallResult ok = RawCall(cluster_->worker_address(), "/engram.v1.Inference/Generate",
                             {generate.SerializeAsString()});
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  ASSERT_FALSE(ok.responses.empty());
  v1::GenerateResponse first;
  ASSERT_TRUE(first.ParseFromString(ok.responses[0]));
  EXPECT_FALSE(first.request_id().empty());
}

// Oversized input: a message over the receive limit (4 MiB by default) is refused by gRPC on every
// method before it is parsed (RESOURCE_EXHAUSTED); a prompt text that cannot fit the context is
// refused before it is tokenized (INVALID_ARGUMENT naming its bytes). A small request served
// alongside stays fast throughout.
TEST_F(WorkerE2eTest, OversizedInputsAreRefusedBeforeTheWorkIsDone) {
  std::atomic<bool> done{false};
  std::atomic<int> small_served{0};
  absl::Duration slowest_small = absl::ZeroDuration();
  std::thread small([&] {
    auto client = cluster_->Client(absl::Seconds(30));
    while (!done.load()) {
      const absl::Time start = absl::Now();
      auto r = client->GenerateAll(Greedy("small and fast", 2));
      EXPECT_TRUE(r.ok()) << r.status();
      slowest_small = std::max(slowest_small, absl::Now() - start);
      small_served.fetch_add(1);
    }
  });

  // 1 MiB of text: under the receive limit, over what a 1024-token context can hold.
  const std::string one_mib(1 << 20, 'a');
  RawCallResult r = RawCall(cluster_->worker_address(), "/engram.v1.Inference/Generate",
                            {Greedy(one_mib, 2).SerializeAsString()});
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << r.status.error_message();
  EXPECT_NE(r.status.error_message().find("bytes"), std::string::npos) << r.status.error_message();
  EXPECT_LT(r.status.error_message().size(), 512u);

  // 32 MiB and just over the limit, on every method.
  for (size_t bytes : {size_t{32} << 20, (size_t{4} << 20) + 1}) {
    const std::string big(bytes, 'a');
    v1::TokenizeRequest tokenize;
    tokenize.set_text(big);
    v1::AbortRequest abort;
    abort.set_request_id(big);
    const struct {
      const char* method;
      std::string request;
    } cases[] = {
        {"Generate", Greedy(big, 2).SerializeAsString()},
        {"Tokenize", tokenize.SerializeAsString()},
        {"GetModelInfo", big},
        {"Abort", abort.SerializeAsString()},
    };
    for (const auto& c : cases) {
      const absl::Time start = absl::Now();
      RawCallResult big_call = RawCall(cluster_->worker_address(),
                                       absl::StrCat("/engram.v1.Inference/", c.method), {c.request});
      EXPECT_EQ(big_call.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << c.method << " " << bytes << ": " << big_call.status.error_message();
      EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << c.method;
    }
  }
  EXPECT_TRUE(WaitUntilServed(small_served, 2));
  done = true;
  small.join();
  EXPECT_LT(slowest_small, absl::Seconds(5));
}

// Server reflection (what grpcurl uses) lists the public services. No reflection client ships
// with Debian's gRPC, so the request is encoded by hand: ServerReflectionRequest{list_services: ""}
// is field 7, length 0.
TEST_F(WorkerE2eTest, ReflectionListsTheServices) {
  RawCallResult r = RawCall(cluster_->worker_address(),
                            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                            {std::string("\x3a\x00", 2)});
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.responses.size(), 1u);
  EXPECT_NE(r.responses[0].find("engram.v1.Inference"), std::string::npos);
  EXPECT_NE(r.responses[0].find("grpc.health.v1.Health"), std::string::npos);
}

TEST_F(WorkerE2eTest, AbortAndClientCancellation) {
  auto client = cluster_->Client();
  auto other = cluster_->Client();
  v1::GenerateRequest r = Greedy("Abort this long generation", 1000);
  r.set_request_id("abort-me");
  r.mutable_stopping()->set_ignore_eos(true);
  bool aborted = false;
  GenerateResult collected;
  absl::Status s = client->Generate(r, [&](const v1::GenerateResponse& m) {
    collected.token_ids.insert(collected.token_ids.end(), m.token_ids().begin(),
                               m.token_ids().end());
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED)
      collected.finish_reason = m.finish_reason();
    if (!aborted) {
      auto found = other->Abort("abort-me");
      EXPECT_TRUE(found.ok() && *found) << found.status();
      aborted = true;
    }
    return true;
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(collected.finish_reason, v1::FINISH_REASON_ABORTED);
  EXPECT_LT(collected.token_ids.size(), 1000u);
  auto gone = other->Abort("abort-me");
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(*gone);

  // The client goes away after two messages: the worker ends the request (CANCELLED).
  auto before = HttpGet(cluster_->worker_metrics_port(), "/metrics");
  ASSERT_TRUE(before.ok());
  const double cancelled_before =
      MetricValue(*before, "engram_worker_requests_total{code=\"CANCELLED\"}");
  int messages = 0;
  s = client->Generate(r, [&](const v1::GenerateResponse&) { return ++messages < 2; });
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto m = HttpGet(cluster_->worker_metrics_port(), "/metrics");
        return m.ok() &&
               MetricValue(*m, "engram_worker_requests_total{code=\"CANCELLED\"}") >
                   cancelled_before &&
               MetricValue(*m, "engram_worker_running_requests") == 0;
      },
      absl::Seconds(30)))
      << cluster_->Logs();
}

TEST_F(WorkerE2eTest, MetricsShowRowsPrefetchAndLatencies) {
  auto client = cluster_->Client();
  ASSERT_TRUE(client->GenerateAll(Greedy("Count my rows", 8)).ok());
  auto m = HttpGet(cluster_->worker_metrics_port(), "/metrics");
  ASSERT_TRUE(m.ok()) << m.status();
  // Co-located: every row came through the shared-memory arena.
  EXPECT_GT(MetricValue(*m, "engram_worker_engram_rows_total{tier=\"dram_shm\"}"), 0) << *m;
  EXPECT_GT(MetricValue(*m, "engram_worker_prefetch_slack_seconds_count{layer=\"0\"}"), 0) << *m;
  EXPECT_GT(MetricValue(*m, "engram_worker_prefetch_slack_seconds_count{layer=\"1\"}"), 0) << *m;
  EXPECT_GT(MetricValue(*m, "engram_worker_time_to_first_token_seconds_count"), 0);
  EXPECT_GT(MetricValue(*m, "engram_worker_inter_token_latency_seconds_count"), 0);
  EXPECT_GT(MetricValue(*m, "engram_worker_generation_tokens_total"), 0);
  EXPECT_GT(MetricValue(*m, "engram_worker_prompt_tokens_total"), 0);
  EXPECT_EQ(MetricValue(*m, "engram_worker_memory_tier_up"), 1);
  EXPECT_GE(MetricValue(*m, "engram_worker_queue_length"), 0);
}

}  // namespace
}  // namespace engram
