// A real Prometheus server (Debian's /usr/bin/prometheus, on 127.0.0.1 with a temporary config)
// scrapes engram-worker and engram-memory: both targets are up, and a worker metric and a tier
// metric have values, checked through Prometheus' HTTP API.
#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/process.h"
#include "tests/integration/worker_cluster.h"

namespace engram {
namespace {

using testing::kPrometheusBinary;
using testing::PromQuery;
using testing::PromSampleValue;
using testing::WaitUntil;
using testing::WorkerCluster;

TEST(WorkerPrometheusTest, PrometheusScrapesWorkerAndTier) {
  if (!std::filesystem::exists(kPrometheusBinary)) {
    GTEST_FAIL() << kPrometheusBinary
                 << " is missing: run scripts/install-deps.sh (Debian package prometheus)";
  }
  auto started = WorkerCluster::Start();
  ASSERT_TRUE(started.ok()) << started.status();
  WorkerCluster& cluster = **started;
  auto client = cluster.Client();
  v1::GenerateRequest r;
  r.set_text("Scrape me");
  r.mutable_stopping()->set_max_tokens(6);
  ASSERT_TRUE(client->GenerateAll(r).ok());

  auto prometheus = testing::StartPrometheus(cluster.dir() + "/prometheus",
                                             {{"engram-worker", cluster.worker_metrics_port()},
                                              {"engram-memory", cluster.memory_metrics_port()}});
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();
  const int port = prometheus->port;

  // Both targets up (the `up` series is written by Prometheus after each scrape).
  bool up = WaitUntil(
      [&] {
        nlohmann::json result = PromQuery(port, "up == 1");
        int n = 0;
        for (const auto& s : result) {
          const std::string job = s["metric"].value("job", "");
          n += job == "engram-worker" || job == "engram-memory";
        }
        return n == 2;
      },
      absl::Seconds(60));
  ASSERT_TRUE(up) << prometheus->process->LogTail() << cluster.Logs();

  // A worker metric and a tier metric have values.
  nlohmann::json tokens;
  ASSERT_TRUE(WaitUntil(
      [&] {
        tokens = PromQuery(port, "engram_worker_generation_tokens_total{job=\"engram-worker\"}");
        return !tokens.empty() && PromSampleValue(tokens[0]) >= 6;
      },
      absl::Seconds(30)))
      << tokens.dump();
  nlohmann::json tier;
  ASSERT_TRUE(WaitUntil(
      [&] {
        tier = PromQuery(port, "{job=\"engram-memory\",__name__=~\"engram_.+\"}");
        return !tier.empty();
      },
      absl::Seconds(30)))
      << prometheus->process->LogTail();
  EXPECT_FALSE(tier[0]["value"][1].get<std::string>().empty());
}

}  // namespace
}  // namespace engram
