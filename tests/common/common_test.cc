#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "bench/percentile.h"
#include "common/crc32c.h"
#include "common/engram_config.h"
#include "common/lifecycle.h"
#include "common/log.h"
#include "common/metrics_server.h"
#include "common/ngram_hash.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "tests/common/process.h"

namespace engram {
namespace {

TEST(Crc32cTest, MatchesStandardCheckValue) {
  // The CRC-32C check value of "123456789" (RFC 3720, iSCSI).
  EXPECT_EQ(Crc32c(0, "123456789", 9), 0xe3069283u);
  // Extending in pieces equals one pass.
  uint32_t c = Crc32c(0, "1234", 4);
  EXPECT_EQ(Crc32c(c, "56789", 5), 0xe3069283u);
  std::string zeros(32, '\0');
  EXPECT_EQ(Crc32c(0, zeros.data(), zeros.size()), 0x8a9136aau);
}

TEST(EngramConfigTest, ParsesV41Keys) {
  auto j = nlohmann::json::parse(R"({
    "engram_layer_ids": [1, 14], "engram_max_ngram_size": 4, "engram_n_heads": 8,
    "engram_head_dim": 256, "engram_vocab_size": 16000000, "engram_pad_token_id": 2,
    "engram_compressed_vocab_size": 99092, "engram_num_embeddings": [384006168, 384016682],
    "engram_kernel_size": 0, "hc_mult": 4, "hidden_size": 5120})");
  auto c = ParseEngramConfig(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->columns(), 24);
  EXPECT_EQ(c->d_mem(), 6144);
  EXPECT_EQ(c->vocab_size_per_order, (std::vector<int64_t>{16000000, 16000000, 16000000}));
  EXPECT_EQ(*c->compressed_vocab_size, 99092);
  EXPECT_EQ(c->LayerIndex(14), 1);
  EXPECT_EQ(c->LayerIndex(2), -1);
}

TEST(EngramConfigTest, RejectsInconsistentConfigWithClearMessages) {
  auto bad = [](const char* text) {
    auto c = ParseEngramConfig(nlohmann::json::parse(text));
    EXPECT_FALSE(c.ok()) << text;
    return std::string(c.status().message());
  };
  EXPECT_NE(bad(R"({"engram_vocab_size": 10})").find("engram_layer_ids"), std::string::npos);
  EXPECT_NE(bad(R"({"engram_layer_ids": [1, 1], "engram_vocab_size": 10})").find("twice"), std::string::npos);
  EXPECT_NE(bad(R"({"engram_layer_ids": [1], "engram_max_ngram_size": 3, "engram_vocab_size": [10]})")
                .find("one per order"),
            std::string::npos);
  EXPECT_NE(bad(R"({"engram_layer_ids": [1], "engram_vocab_size": "x"})").find("engram_vocab_size"),
            std::string::npos);
  EXPECT_NE(bad(R"({"engram_layer_ids": [1], "engram_vocab_size": 10, "hc_mult": 0})").find("hc_mult"),
            std::string::npos);
  // Values that do not fit the field are refused, not wrapped into a valid-looking one
  // (4294967298 would become 2 as an int).
  EXPECT_NE(bad(R"({"engram_layer_ids": [1], "engram_vocab_size": 10,
                    "engram_max_ngram_size": 4294967298})")
                .find("engram_max_ngram_size: must be an integer in"),
            std::string::npos);
  EXPECT_NE(bad(R"({"engram_layer_ids": [4294967297], "engram_vocab_size": 10})")
                .find("engram_layer_ids"),
            std::string::npos);
  EXPECT_NE(bad(R"({"engram_layer_ids": [1], "engram_vocab_size": 18446744073709551615})")
                .find("engram_vocab_size"),
            std::string::npos);
  EXPECT_NE(bad(R"({"engram_layer_ids": [1], "engram_vocab_size": 10,
                    "engram_num_embeddings": [9223372036854775808]})")
                .find("engram_num_embeddings"),
            std::string::npos);
}

// seed + 10007 * layer is a Python int in the reference: past INT64_MAX it must not overflow.
// Expected values from numpy 1.24: default_rng(2**63 - 1 + 10007).integers(0, half_bound, 4).
TEST(EngramMultipliersTest, HugeSeedsDoNotOverflow) {
  auto m = EngramLayerMultipliers(std::numeric_limits<int64_t>::max(), 1, 4, 1000);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m, (std::vector<int64_t>{4702676354257753, 5721581211263867, 1614490989057311,
                                      4766410776144785}));
}

TEST(LogTest, QuotesLogfmtValues) {
  EXPECT_EQ(LogfmtValue("plain"), "plain");
  EXPECT_EQ(LogfmtValue("two words"), "\"two words\"");
  EXPECT_EQ(LogfmtValue("a\"b"), "\"a\\\"b\"");
  EXPECT_EQ(LogfmtValue(""), "\"\"");
}

// A signal may ask for draining while the loading thread is about to report ready: the process
// must stay draining, and health (a listener) must end on the last state, not on a stale one.
TEST(LifecycleTest, StatesOnlyMoveForwardAndListenersSeeThemInOrder) {
  Lifecycle lifecycle;
  std::vector<LifecycleState> seen;
  lifecycle.OnChange([&seen](LifecycleState s) { seen.push_back(s); });
  EXPECT_TRUE(lifecycle.Set(LifecycleState::kDraining));
  EXPECT_FALSE(lifecycle.Set(LifecycleState::kReady));
  EXPECT_EQ(lifecycle.state(), LifecycleState::kDraining);
  EXPECT_FALSE(lifecycle.Set(LifecycleState::kDraining));
  EXPECT_TRUE(lifecycle.Set(LifecycleState::kStopped));
  EXPECT_EQ(seen,
            (std::vector<LifecycleState>{LifecycleState::kDraining, LifecycleState::kStopped}));

  // Racing transitions: whatever the interleaving, the listeners' last word is the final state.
  for (int round = 0; round < 200; ++round) {
    Lifecycle racing;
    absl::Mutex mu;
    LifecycleState last = LifecycleState::kLoading;
    racing.OnChange([&](LifecycleState s) {
      absl::MutexLock lock(&mu);
      EXPECT_GT(static_cast<int>(s), static_cast<int>(last));
      last = s;
    });
    std::thread ready([&racing] { racing.Set(LifecycleState::kReady); });
    std::thread drain([&racing] { racing.Set(LifecycleState::kDraining); });
    ready.join();
    drain.join();
    EXPECT_EQ(racing.state(), LifecycleState::kDraining);
    absl::MutexLock lock(&mu);
    EXPECT_EQ(last, LifecycleState::kDraining);
  }
}

TEST(MetricsServerTest, ServesTheRegistryAndRefusesATakenPort) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("engram_test_events_total").Help("test").Register(*registry)
      .Add({}).Increment(3);
  MetricsServer first(registry);
  ASSERT_TRUE(first.Start("127.0.0.1", 0).ok());
  ASSERT_GT(first.port(), 0);
  EXPECT_NE(RenderMetrics(*registry).find("engram_test_events_total 3"), std::string::npos);
  // A scrape over HTTP answers the same registry.
  absl::StatusOr<std::string> scraped = testing::HttpGet(first.port(), "/metrics");
  ASSERT_TRUE(scraped.ok()) << scraped.status();
  EXPECT_NE(scraped->find("\nengram_test_events_total 3\n"), std::string::npos) << *scraped;
  // A second process (or server) on the same port must fail instead of sharing the scrapes
  // (cpp-httplib's default SO_REUSEPORT would let it bind).
  MetricsServer second(registry);
  absl::Status taken = second.Start("127.0.0.1", first.port());
  EXPECT_FALSE(taken.ok());
  EXPECT_NE(taken.message().find("in use"), absl::string_view::npos) << taken;
}

// The kernel's count of handshakes dropped because a listen queue was full (TcpExt
// ListenOverflows in /proc/net/netstat); -1 when it cannot be read.
int64_t ListenOverflows() {
  std::ifstream in("/proc/net/netstat");
  std::string names, values;
  while (std::getline(in, names) && std::getline(in, values)) {
    if (names.rfind("TcpExt:", 0) != 0) continue;
    std::istringstream n(names), v(values);
    std::string name, value;
    while (n >> name && v >> value) {
      if (name == "ListenOverflows") return std::stoll(value);
    }
  }
  return -1;
}

// Starts `n` connections to 127.0.0.1:`port` at once (non-blocking connects), gives the kernel
// 200 ms to queue them, and closes them.
void ConnectBurst(int port, int n) {
  std::vector<int> fds;
  for (int i = 0; i < n; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));  // EINPROGRESS
    fds.push_back(fd);
  }
  absl::SleepFor(absl::Milliseconds(200));
  for (int fd : fds) close(fd);
}

// A listening socket nobody accepts from, on an ephemeral loopback port; returns its port.
int ListenUnaccepted(int fd, int backlog) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return -1;
  if (listen(fd, backlog) != 0) return -1;
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(addr.sin_port);
}

// cpp-httplib listens with a backlog of 5; a burst of 64 connections overflows that queue (the
// kernel drops handshakes and falls back to SYN cookies). RaiseListenBacklog, which both HTTP
// servers apply, makes room for the burst.
TEST(MetricsServerTest, ABurstOfConnectionsFitsTheAcceptQueue) {
  if (ListenOverflows() < 0) GTEST_SKIP() << "/proc/net/netstat has no ListenOverflows";
  // The control: httplib's backlog, nobody accepting. The counter moves (it is what we read).
  const int small = socket(AF_INET, SOCK_STREAM, 0);
  const int small_port = ListenUnaccepted(small, 5);
  ASSERT_GT(small_port, 0);
  int64_t before = ListenOverflows();
  ConnectBurst(small_port, 64);
  EXPECT_GT(ListenOverflows(), before) << "a backlog of 5 took a burst of 64";
  close(small);

  // The same socket raised after listen(), as the servers do: no overflow.
  const int raised = socket(AF_INET, SOCK_STREAM, 0);
  const int raised_port = ListenUnaccepted(raised, 5);
  ASSERT_GT(raised_port, 0);
  ASSERT_TRUE(RaiseListenBacklog(raised).ok());
  before = ListenOverflows();
  ConnectBurst(raised_port, 64);
  EXPECT_EQ(ListenOverflows(), before);
  close(raised);

  // And the metrics server itself (its socket is the one raised).
  auto registry = std::make_shared<prometheus::Registry>();
  MetricsServer server(registry);
  ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());
  before = ListenOverflows();
  ConnectBurst(server.port(), 64);
  EXPECT_EQ(ListenOverflows(), before);
  server.Stop();

  EXPECT_FALSE(RaiseListenBacklog(-1).ok());
}

// Slow clients must not starve a real scraper: 64 connections that are opened and never send a
// byte (many more than the pool's threads) hold the server's threads only until the
// keep-alive timeout, and the newest connection (the real scrape) is served first.
TEST(MetricsServerTest, IdleConnectionsDoNotBlockARealScrape) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("engram_test_events_total").Help("test").Register(*registry)
      .Add({}).Increment(7);
  MetricsServer server(registry);
  ASSERT_TRUE(server.Start("127.0.0.1", 0).ok());
  std::vector<int> idle;
  for (int i = 0; i < 64; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(server.port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << i;
    idle.push_back(fd);
  }
  // Let the server accept all of them (they occupy every thread and the queue).
  absl::SleepFor(absl::Milliseconds(300));
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> scraped = testing::HttpGet(server.port(), "/metrics");
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(scraped.ok()) << scraped.status();
  EXPECT_NE(scraped->find("\nengram_test_events_total 7\n"), std::string::npos);
  EXPECT_LT(took, 4.0) << "a real scrape waited " << took << " s behind idle connections";
  // The server closes an idle connection once a thread takes it and the keep-alive timeout
  // passes: a read on the newest idle one sees EOF (or a reset) within a few seconds.
  timeval tv{8, 0};
  setsockopt(idle.back(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char c;
  errno = 0;
  const ssize_t got = read(idle.back(), &c, 1);
  EXPECT_TRUE(got == 0 || (got < 0 && errno == ECONNRESET)) << got << " errno " << errno;
  for (int fd : idle) close(fd);
  server.Stop();
}

// The benchmarks' percentile is the nearest rank: the ceil(p n)-th smallest sample.
TEST(PercentileTest, IsTheNearestRank) {
  EXPECT_EQ(Percentile({}, 0.5), 0.0);
  EXPECT_EQ(Percentile({7}, 0.99), 7.0);
  EXPECT_EQ(Percentile({4, 1, 3, 2}, 0.5), 2.0);
  EXPECT_EQ(Percentile({4, 1, 3, 2}, 0.51), 3.0);
  EXPECT_EQ(Percentile({4, 1, 3, 2}, 0.0), 1.0);
  EXPECT_EQ(Percentile({4, 1, 3, 2}, 1.0), 4.0);
  std::vector<double> hundred;
  for (int i = 100; i >= 1; --i) hundred.push_back(i);
  EXPECT_EQ(Percentile(hundred, 0.99), 99.0);
  EXPECT_EQ(Percentile(hundred, 0.9), 90.0);
  EXPECT_EQ(Percentile(hundred, 0.07), 7.0);  // 0.07 x 100 is 7.000000000000001 in doubles
  EXPECT_EQ(Percentile(hundred, 0.55), 55.0);
}

}  // namespace
}  // namespace engram
