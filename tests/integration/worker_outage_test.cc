// Lifecycle under failure and shutdown, with real processes.
//
// The memory tier goes away mid-generation (SIGKILL, not a drain): with rows streamed over the
// Prefetch stream (no shared memory, the remote-worker path) the in-flight request fails with
// UNAVAILABLE well within its deadline; with every layer resident in the tier's shared-memory
// arena (co-located) it generates to its end from the dead tier's mapping, with the reference's
// tokens. Either way health turns NOT_SERVING, new requests are refused with UNAVAILABLE, and
// after the tier restarts the worker reconnects by itself and serves again (with output equal to
// the in-process reference).
//
// SIGTERM drains: health turns NOT_SERVING, new requests are refused, the running request
// finishes normally, and the worker exits 0.
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/local_generate.h"
#include "model/tokenizer.h"
#include "common/grpc_tls.h"
#include "tests/common/temp_dir.h"
#include "tests/common/test_pki.h"
#include "tests/integration/worker_cluster.h"

namespace engram {
namespace {

using testing::ClusterOptions;
using testing::HttpGet;
using testing::IsServing;
using testing::MetricValue;
using testing::ScrapeMetric;
using testing::WaitUntil;
using testing::WorkerCluster;

class TierOutageTest : public ::testing::TestWithParam<bool> {};

TEST_P(TierOutageTest, TierKilledMidGenerationThenRestarted) {
  const bool shared_memory = GetParam();
  ClusterOptions options;
  options.shared_memory = shared_memory;
  auto started = WorkerCluster::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  WorkerCluster& cluster = **started;
  // Streamed: the request fails fast and must outlast the kill by far (1000 tokens). Shared
  // memory: it runs to its end, so it is shorter, with room for a sanitizer build on a busy
  // machine (~15 tokens/s there).
  const int kMaxTokens = shared_memory ? 300 : 1000;
  const absl::Duration kDeadline = absl::Seconds(shared_memory ? 60 : 20);
  auto client = cluster.Client(kDeadline);

  auto m = HttpGet(cluster.worker_metrics_port(), "/metrics");
  ASSERT_TRUE(m.ok());
  EXPECT_GT(MetricValue(*m, "engram_worker_memory_tier_up"), 0);

  // A long generation; the tier dies right after the first streamed message.
  v1::GenerateRequest r;
  r.set_text("The tier will die while this request generates");
  r.mutable_stopping()->set_max_tokens(kMaxTokens);
  r.mutable_stopping()->set_ignore_eos(true);
  bool killed = false;
  int tokens_after_kill = 0;
  std::vector<uint32_t> tokens;
  const absl::Time start = absl::Now();
  absl::Status s = client->Generate(r, [&](const v1::GenerateResponse& msg) {
    if (killed) tokens_after_kill += msg.token_ids_size();
    tokens.insert(tokens.end(), msg.token_ids().begin(), msg.token_ids().end());
    if (!killed) {
      EXPECT_TRUE(cluster.KillMemory().ok());
      killed = true;
    }
    return true;
  });
  const absl::Duration took = absl::Now() - start;
  std::cout << "in-flight request after the kill: " << s << " (" << tokens_after_kill
            << " tokens streamed after the kill, " << absl::FormatDuration(took) << ")\n";
  ASSERT_TRUE(killed);
  EXPECT_LT(took, kDeadline);
  if (shared_memory) {
    // Every layer is resident in the dead tier's arena, which stays mapped and whose rows are
    // immutable: the running request generates to its end, with the same tokens as without the
    // outage (docs/decisions.md, "A worker outlives its tier's restart").
    EXPECT_TRUE(s.ok()) << s << cluster.Logs();
    LocalGenerateOptions o;
    o.stop.max_tokens = kMaxTokens;
    o.stop.ignore_eos = true;
    o.threads = 1;
    auto want = LocalGenerate(cluster.model(), *cluster.model().tokenizer().Encode(r.text()), o);
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_EQ(tokens, want->tokens);
  } else {
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s << cluster.Logs();
    EXPECT_NE(s.message().find("memory tier"), std::string::npos) << s;
    // At most the step already in flight finishes after the kill is noticed.
    EXPECT_LT(tokens_after_kill, kMaxTokens);
  }

  // Health follows the tier; new work is refused with UNAVAILABLE (retryable), not hung.
  EXPECT_TRUE(WaitUntil([&] { return !IsServing(cluster.worker_address()); }, absl::Seconds(10)));
  v1::GenerateRequest small;
  small.set_text("while the tier is away");
  small.mutable_stopping()->set_max_tokens(4);
  const absl::Time refused_at = absl::Now();
  auto refused = client->GenerateAll(small);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  EXPECT_LT(absl::Now() - refused_at, absl::Seconds(5));
  m = HttpGet(cluster.worker_metrics_port(), "/metrics");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(MetricValue(*m, "engram_worker_memory_tier_up"), 0);

  // The tier comes back on the same address: the worker reconnects on its own.
  ASSERT_TRUE(cluster.StartMemory().ok()) << cluster.Logs();
  ASSERT_TRUE(WaitUntil([&] { return IsServing(cluster.worker_address()); }, absl::Seconds(30)))
      << cluster.Logs();
  auto again = client->GenerateAll(small);
  ASSERT_TRUE(again.ok()) << again.status() << cluster.Logs();
  LocalGenerateOptions o;
  o.stop.max_tokens = 4;
  o.stop.eos_token_ids = cluster.model().config().eos_token_ids;
  o.threads = 1;
  auto want = LocalGenerate(cluster.model(), *cluster.model().tokenizer().Encode(small.text()), o);
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_EQ(again->token_ids, want->tokens);

  m = HttpGet(cluster.worker_metrics_port(), "/metrics");
  ASSERT_TRUE(m.ok());
  EXPECT_GE(MetricValue(*m, "engram_worker_memory_tier_reconnects_total"), 1);
  EXPECT_EQ(MetricValue(*m, "engram_worker_memory_tier_up"), 1);
  // Rows are counted by where they came from: the arena, or the tier that served them.
  if (shared_memory) {
    EXPECT_GT(MetricValue(*m, "engram_worker_engram_rows_total{tier=\"dram_shm\"}"), 0) << *m;
  } else {
    EXPECT_GT(MetricValue(*m, "engram_worker_engram_rows_total{tier=\"dram\"}") +
                  MetricValue(*m, "engram_worker_engram_rows_total{tier=\"nvme\"}"),
              0)
        << *m;
  }
  EXPECT_GE(MetricValue(*m, "engram_worker_requests_total{code=\"UNAVAILABLE\"}"),
            shared_memory ? 1 : 2);
}

INSTANTIATE_TEST_SUITE_P(RowPaths, TierOutageTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "SharedMemory" : "Streamed";
                         });

// A tier that refuses the worker's batches (here: they exceed its --max-batch-rows) fails the
// request without blaming the client: INTERNAL with the tier's reason, not INVALID_ARGUMENT.
TEST(WorkerOutageTest, BatchesTheTierRefusesAreInternalNotTheClientsFault) {
  ClusterOptions options;
  options.shared_memory = false;
  options.memory_flags = {"--max-batch-rows", "2"};
  auto started = WorkerCluster::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  v1::GenerateRequest r;
  r.set_text("a prompt of several tokens");
  r.mutable_stopping()->set_max_tokens(4);
  auto result = (*started)->Client()->GenerateAll(r);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInternal) << result.status();
  EXPECT_NE(result.status().message().find("max_batch_rows"), std::string::npos) << result.status();
}

// Mutual TLS between real processes: engram-memory with --tls-cert/--tls-key/--tls-client-ca, the
// worker with --memory-tls-ca/--memory-tls-cert/--memory-tls-key (certificates made by openssl in
// the test). The worker connects (it is SERVING only once the tier answers) and generates; a
// plaintext client, or a TLS client without a client certificate, gets nothing from the tier.
TEST(WorkerOutageTest, WorkerTalksToTheTierOverMutualTls) {
  testing::TempDir pki_dir;
  testing::TestPki pki;
  ASSERT_TRUE(testing::MakeTestPki(pki_dir.path(), &pki));
  ClusterOptions options;
  options.shared_memory = false;  // every row crosses the TLS connection
  options.memory_flags = {"--tls-cert", pki.server_cert, "--tls-key", pki.server_key,
                          "--tls-client-ca", pki.ca};
  options.worker_flags = {"--memory-tls-ca", pki.ca, "--memory-tls-cert", pki.client_cert,
                          "--memory-tls-key", pki.client_key};
  auto credentials = MakeChannelCredentials({pki.ca, pki.client_cert, pki.client_key});
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  options.memory_credentials = *credentials;
  auto started = WorkerCluster::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  WorkerCluster& cluster = **started;
  v1::GenerateRequest r;
  r.set_text("a prompt over mutual TLS");
  r.mutable_stopping()->set_max_tokens(4);
  auto result = cluster.Client()->GenerateAll(r);
  ASSERT_TRUE(result.ok()) << result.status() << cluster.Logs();
  EXPECT_EQ(result->token_ids.size(), 4u);
  EXPECT_TRUE(IsServing(cluster.memory_address(), *credentials));
  EXPECT_FALSE(IsServing(cluster.memory_address()));  // plaintext
  auto no_cert = MakeChannelCredentials({pki.ca, "", ""});
  ASSERT_TRUE(no_cert.ok());
  EXPECT_FALSE(IsServing(cluster.memory_address(), *no_cert));
}

// The worker's own gRPC port over TLS (--tls-cert/--tls-key): a client trusting the CA is served
// (health SERVING), a plaintext client is not; with --tls-client-ca a TLS client without a client
// certificate is refused too.
TEST(WorkerOutageTest, WorkerServesItsGrpcPortOverTls) {
  testing::TempDir pki_dir;
  testing::TestPki pki;
  ASSERT_TRUE(testing::MakeTestPki(pki_dir.path(), &pki));
  auto ca_only = MakeChannelCredentials({pki.ca, "", ""});
  auto with_cert = MakeChannelCredentials({pki.ca, pki.client_cert, pki.client_key});
  ASSERT_TRUE(ca_only.ok() && with_cert.ok());
  ClusterOptions options;
  options.worker_flags = {"--tls-cert", pki.server_cert, "--tls-key", pki.server_key,
                          "--tls-client-ca", pki.ca};
  options.worker_credentials = *with_cert;
  auto started = WorkerCluster::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  const std::string& worker = (*started)->worker_address();
  EXPECT_TRUE(IsServing(worker, *with_cert));
  EXPECT_FALSE(IsServing(worker));            // plaintext
  EXPECT_FALSE(IsServing(worker, *ca_only));  // TLS without a client certificate
}

// A hung tier (SIGSTOP: the connection stays open, nothing answers) must not freeze the worker.
// Eight streams wait for rows in one step: the step's rows wait is bounded by --rows-timeout in
// all (not once per sequence), every stream ends with UNAVAILABLE naming the tier, a request sent
// during the hang is answered, health turns NOT_SERVING until the tier answers again (SIGCONT),
// and then the worker serves again.
TEST(WorkerOutageTest, HungTierFailsStreamsWithinTheRowsTimeoutAndHealthFollows) {
  constexpr int kStreams = 8;
  const absl::Duration kRowsTimeout = absl::Seconds(2);
  ClusterOptions options;
  options.shared_memory = false;
  options.worker_flags = {"--rows-timeout", "2s"};
  auto started = WorkerCluster::Start(options);
  ASSERT_TRUE(started.ok()) << started.status();
  WorkerCluster& cluster = **started;

  struct Stream {
    std::thread thread;
    absl::Status status;
    absl::Time ended;
    int tokens = 0;
  };
  std::vector<Stream> streams(kStreams);
  std::atomic<int> streaming{0};
  for (int i = 0; i < kStreams; ++i) {
    streams[i].thread = std::thread([&, i] {
      auto client = cluster.Client(absl::Seconds(60));
      v1::GenerateRequest r;
      r.set_text(absl::StrCat("Stream ", i, " generates while the tier hangs"));
      r.mutable_stopping()->set_max_tokens(900);
      r.mutable_stopping()->set_ignore_eos(true);
      bool first = true;
      streams[i].status = client->Generate(r, [&](const v1::GenerateResponse& m) {
        streams[i].tokens += m.token_ids_size();
        if (first) streaming.fetch_add(1);
        first = false;
        return true;
      });
      streams[i].ended = absl::Now();
    });
  }
  const bool all_streaming = WaitUntil([&] { return streaming.load() == kStreams; },
                                       absl::Seconds(60));
  const absl::Time stopped_at = absl::Now();
  cluster.SignalMemory(SIGSTOP);

  // Sent during the hang: answered (UNAVAILABLE), not left waiting until its own deadline.
  auto late_client = cluster.Client(absl::Seconds(60));
  v1::GenerateRequest small;
  small.set_text("sent while the tier hangs");
  small.mutable_stopping()->set_max_tokens(4);
  auto late = late_client->GenerateAll(small);
  const absl::Duration late_took = absl::Now() - stopped_at;

  for (Stream& s : streams) s.thread.join();
  ASSERT_TRUE(all_streaming) << cluster.Logs();
  for (int i = 0; i < kStreams; ++i) {
    const Stream& s = streams[i];
    std::cout << "stream " << i << ": " << s.status << " after "
              << absl::FormatDuration(s.ended - stopped_at) << " (" << s.tokens << " tokens)\n";
    EXPECT_EQ(s.status.code(), absl::StatusCode::kUnavailable) << s.status << cluster.Logs();
    EXPECT_NE(s.status.message().find("memory tier at " + cluster.memory_address()),
              std::string::npos)
        << s.status;
    // One step's rows wait (plus slack for a loaded machine), never one wait per stream.
    EXPECT_LT(s.ended - stopped_at, 2 * kRowsTimeout + absl::Seconds(2));
  }
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable) << late.status();
  EXPECT_LT(late_took, 2 * kRowsTimeout + absl::Seconds(2));

  // Not serving while the tier hangs; new work is refused at once.
  EXPECT_TRUE(WaitUntil([&] { return !IsServing(cluster.worker_address()); }, absl::Seconds(5)));
  const absl::Time refused_at = absl::Now();
  auto refused = late_client->GenerateAll(small);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  EXPECT_LT(absl::Now() - refused_at, absl::Seconds(1));
  EXPECT_EQ(ScrapeMetric(cluster.worker_metrics_port(), "engram_worker_memory_tier_up"), 0);

  // The tier answers again: SERVING, and requests are served.
  cluster.SignalMemory(SIGCONT);
  ASSERT_TRUE(WaitUntil([&] { return IsServing(cluster.worker_address()); }, absl::Seconds(30)))
      << cluster.Logs();
  auto again = late_client->GenerateAll(small);
  EXPECT_TRUE(again.ok()) << again.status() << cluster.Logs();
  EXPECT_EQ(ScrapeMetric(cluster.worker_metrics_port(), "engram_worker_memory_tier_up"), 1);
}

TEST(WorkerOutageTest, SigtermDrainsTheRunningRequestAndExits) {
  auto started = WorkerCluster::Start();
  ASSERT_TRUE(started.ok()) << started.status();
  WorkerCluster& cluster = **started;
  auto client = cluster.Client(absl::Seconds(30));
  v1::GenerateRequest r;
  r.set_text("Finish me although the worker is asked to stop");
  r.mutable_stopping()->set_max_tokens(120);
  r.mutable_stopping()->set_ignore_eos(true);
  bool signalled = false;
  absl::StatusOr<GenerateResult> refused = absl::UnknownError("not tried");
  GenerateResult result;
  absl::Status s = client->Generate(r, [&](const v1::GenerateResponse& m) {
    result.token_ids.insert(result.token_ids.end(), m.token_ids().begin(), m.token_ids().end());
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED)
      result.finish_reason = m.finish_reason();
    if (!signalled) {
      signalled = true;
      cluster.SignalWorker(SIGTERM);
      // Draining: not serving, and new work is refused while this request goes on.
      EXPECT_TRUE(
          WaitUntil([&] { return !IsServing(cluster.worker_address()); }, absl::Seconds(10)));
      v1::GenerateRequest late;
      late.set_text("too late");
      refused = cluster.Client(absl::Seconds(10))->GenerateAll(late);
    }
    return true;
  });
  ASSERT_TRUE(s.ok()) << s << cluster.Logs();
  EXPECT_EQ(result.token_ids.size(), 120u);
  EXPECT_EQ(result.finish_reason, v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  auto status = cluster.WaitWorker(absl::Seconds(30));
  ASSERT_TRUE(status.ok()) << status.status() << cluster.Logs();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status << cluster.Logs();
}

}  // namespace
}  // namespace engram
