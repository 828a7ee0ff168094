// The real binaries end to end: `engram table import` writes the store, an `engram-memory`
// process serves it, a real Prometheus server (Debian /usr/bin/prometheus on 127.0.0.1) scrapes
// its /metrics, `engram table inspect` reads the catalog beside the running server, and SIGTERM
// drains the process, which persists its statistics and exits 0.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "memory_tier/arena.h"
#include "memory_tier/tier_client.h"
#include "nlohmann/json.hpp"
#include "tests/common/process.h"
#include "tests/memory_tier/test_model.h"

namespace engram {
namespace {

using testing::BinaryPath;
using testing::Process;
using testing::TempDir;

int FieldOf(const std::string& line, const std::string& key) {
  size_t p = line.find(" " + key + "=");
  if (p == std::string::npos) return -1;
  int v = -1;
  std::string rest = line.substr(p + key.size() + 2);
  if (!absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &v)) return -1;
  return v;
}

// Polls a Prometheus instant query until it returns a sample whose value satisfies `ok`; `last`
// gets the last result for the failure message.
bool PromQueryUntil(int port, const std::string& query, const std::function<bool(double)>& ok,
                    std::string* last) {
  return testing::WaitUntil(
      [&] {
        nlohmann::json result = testing::PromQuery(port, query);
        *last = result.dump();
        for (const auto& sample : result) {
          if (ok(testing::PromSampleValue(sample))) return true;
        }
        return false;
      },
      absl::Seconds(60));
}

// Runs `argv` to its end (up to two minutes) with its output in `log`; the exit code, or -1.
int RunToExit(const std::vector<std::string>& argv, const std::string& log) {
  auto p = testing::Process::Start(argv, log);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return -1;
  auto status = (*p)->Wait(absl::Seconds(120));
  EXPECT_TRUE(status.ok()) << status.status();
  return status.ok() ? testing::ExitCode(*status) : -1;
}

TEST(MemoryProcessTest, ServesScrapedByPrometheusAndDrainsOnSigterm) {
  if (access(testing::kPrometheusBinary, X_OK) != 0) {
    GTEST_FAIL() << testing::kPrometheusBinary
                 << " is missing: run scripts/install-deps.sh (Debian package prometheus)";
  }
  TempDir tmp;
  const std::string model = tmp.path() + "/model", store = tmp.path() + "/store";
  testing::TestModelSpec spec;
  spec.dtype = "fp8_e4m3_e8m0";
  spec.head_dim = 256;
  ASSERT_TRUE(testing::WriteTestModel(model, spec).ok());
  ASSERT_EQ(RunToExit({BinaryPath("client/engram"), "table", "import", model, "--store", store},
                      tmp.path() + "/import.log"),
            0);
  auto started = Process::Start(
      {BinaryPath("memory_tier/engram-memory"), "--store", store, "--listen", "127.0.0.1:0",
       "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--dram-bytes", "300K", "--shm-prefix",
       absl::StrCat("engram-ptest-", getpid()), "--io-depth", "8", "--drain-timeout-s", "5"},
      tmp.path() + "/memory.log");
  ASSERT_TRUE(started.ok()) << started.status();
  Process& server = **started;
  const std::string ready = server.WaitForLogLine("msg=ready", absl::Seconds(60));
  ASSERT_FALSE(ready.empty()) << server.LogTail();
  const int port = FieldOf(ready, "port"), metrics_port = FieldOf(ready, "metrics_port");
  ASSERT_GT(port, 0) << ready;
  ASSERT_GT(metrics_port, 0) << ready;

  auto client = TierClient::Connect({.address = absl::StrCat("127.0.0.1:", port)});
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->CheckHealth().ok());
  std::mt19937_64 rng(1);
  const std::vector<int64_t> rows = testing::TestModelRows(spec);
  for (size_t li = 0; li < 2; ++li) {
    const uint32_t layer = static_cast<uint32_t>(spec.layer_ids[li]);
    size_t row_bytes = 0;
    auto source = testing::SourceRows(model, layer, &row_bytes);
    ASSERT_TRUE(source.ok());
    ASSERT_EQ(row_bytes, 264u);
    std::vector<uint64_t> ids(300);
    for (auto& id : ids) id = rng() % rows[li];
    auto r = (*client)->Lookup({"testmodel", layer, 0}, ids);
    ASSERT_TRUE(r.ok()) << r.status();
    for (size_t i = 0; i < ids.size(); ++i) {
      ASSERT_EQ(0, std::memcmp(r->rows.data() + i * 264, source->data() + ids[i] * 264, 264));
    }
  }

  // A real Prometheus scrapes /metrics; its HTTP API shows the target up and a tier metric.
  auto prometheus =
      testing::StartPrometheus(tmp.path() + "/prometheus", {{"engram-memory", metrics_port}});
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();
  const int prom_port = prometheus->port;
  std::string last;
  EXPECT_TRUE(PromQueryUntil(
      prom_port, "up{job=\"engram-memory\"}", [](double v) { return v == 1; }, &last))
      << last;
  EXPECT_TRUE(PromQueryUntil(
      prom_port, "sum(engram_tier_rows_served_total)", [](double v) { return v >= 600; }, &last))
      << last;
  EXPECT_TRUE(PromQueryUntil(
      prom_port, "engram_memory_tables{state=\"serving\"}", [](double v) { return v == 2; }, &last))
      << last;
  prometheus->process->Signal(SIGTERM);
  (void)prometheus->process->Wait(absl::Seconds(30));

  // inspect reads the catalog read-only while the server holds it.
  EXPECT_EQ(RunToExit({BinaryPath("client/engram"), "table", "inspect", "--store", store},
                      tmp.path() + "/inspect.log"),
            0);
  // SIGTERM: drain, persist statistics, exit 0.
  client->reset();
  ASSERT_TRUE(server.Signal(SIGTERM));
  EXPECT_FALSE(server.WaitForLogLine("state=draining", absl::Seconds(60)).empty())
      << server.LogTail();
  EXPECT_FALSE(server.WaitForLogLine("msg=stopped", absl::Seconds(60)).empty()) << server.LogTail();
  auto exit = server.Wait(absl::Seconds(60));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(testing::ExitCode(*exit), 0);
  auto [code, out] = testing::RunCommand(absl::StrCat(
      BinaryPath("client/engram"), " table inspect --store ", store, " --layer 1 --top 3"));
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("hottest rows (decayed counts):"), std::string::npos) << out;
}

// The /dev/shm objects whose names start with `prefix`.
std::vector<std::string> ShmObjects(const std::string& prefix) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// kill -9 leaves a tier's arenas in /dev/shm. The next start of a tier on the same store removes
// what it no longer uses (here: a new version was imported meanwhile and the DRAM budget shrank so
// one table gets no arena at all), so nothing stays orphaned; a clean SIGTERM leaves nothing.
TEST(MemoryProcessTest, KilledTierLeavesNoOrphanedSharedMemoryAfterRestart) {
  TempDir tmp;
  const std::string model = tmp.path() + "/model", store = tmp.path() + "/store";
  const std::string prefix = absl::StrCat("engram-otest-", getpid());
  testing::TestModelSpec spec;
  ASSERT_TRUE(testing::WriteTestModel(model, spec).ok());
  const std::string engram = BinaryPath("client/engram");
  ASSERT_EQ(RunToExit({engram, "table", "import", model, "--store", store}, tmp.path() + "/i1.log"),
            0);
  auto start = [&](const std::string& dram, const std::string& log) {
    auto p = Process::Start({BinaryPath("memory_tier/engram-memory"), "--store", store, "--listen",
                             "127.0.0.1:0", "--metrics-port", "-1", "--dram-bytes", dram,
                             "--shm-prefix", prefix, "--mlock=false", "--drain-timeout-s", "5"},
                            tmp.path() + "/" + log);
    EXPECT_TRUE(p.ok()) << p.status();
    if (p.ok()) EXPECT_FALSE((*p)->WaitForLogLine("msg=ready", absl::Seconds(60)).empty())
        << (*p)->LogTail();
    return p.ok() ? *std::move(p) : nullptr;
  };
  auto first = start("16M", "m1.log");
  ASSERT_NE(first, nullptr);
  const std::vector<std::string> v1 = ShmObjects(prefix);
  ASSERT_EQ(v1.size(), 2u);  // one arena per Engram layer
  ASSERT_TRUE(first->Signal(SIGKILL));
  ASSERT_TRUE(first->Wait(absl::Seconds(30)).ok());
  EXPECT_EQ(ShmObjects(prefix), v1) << "SIGKILL cannot clean up; the next start must";

  // Meanwhile a new version of the tables is imported, and the tier restarts with DRAM for only
  // the first layer (the second one's arena is not needed any more).
  spec.seed = 2;
  ASSERT_TRUE(testing::WriteTestModel(model, spec).ok());
  ASSERT_EQ(RunToExit({engram, "table", "import", model, "--store", store}, tmp.path() + "/i2.log"),
            0);
  // Exactly the first layer's resident arena (bf16, head_dim 32: 64-byte rows): nothing is left
  // for a cache arena of the second.
  const std::vector<int64_t> rows = testing::TestModelRows(spec);
  const std::string one_table =
      absl::StrCat(ResidentGeometry(static_cast<uint64_t>(rows[0]), 64).size_bytes);
  auto second = start(one_table, "m2.log");
  ASSERT_NE(second, nullptr);
  const std::vector<std::string> v2 = ShmObjects(prefix);
  ASSERT_EQ(v2.size(), 1u) << absl::StrJoin(v2, " ") << second->LogTail();
  EXPECT_NE(v2[0].find("-v2"), std::string::npos) << v2[0];
  EXPECT_NE(second->LogTail().find("removed the arena of an earlier run"), std::string::npos);

  // Killed again and restarted unchanged: the same names, each exactly once.
  ASSERT_TRUE(second->Signal(SIGKILL));
  ASSERT_TRUE(second->Wait(absl::Seconds(30)).ok());
  auto third = start(one_table, "m3.log");
  ASSERT_NE(third, nullptr);
  EXPECT_EQ(ShmObjects(prefix), v2);
  ASSERT_TRUE(third->Signal(SIGTERM));
  auto exit = third->Wait(absl::Seconds(60));
  ASSERT_TRUE(exit.ok());
  EXPECT_EQ(testing::ExitCode(*exit), 0);
  EXPECT_TRUE(ShmObjects(prefix).empty()) << absl::StrJoin(ShmObjects(prefix), " ");
}

}  // namespace
}  // namespace engram
