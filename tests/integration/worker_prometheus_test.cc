// A real Prometheus server (Debian's /usr/bin/prometheus, on 127.0.0.1 with a temporary config)
// scrapes engram-worker and engram-memory: both targets are up, and a worker metric and a tier
// metric have values, checked through Prometheus' HTTP API.
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/worker_cluster.h"

namespace engram {
namespace {

using testing::HttpGet;
using testing::Process;
using testing::WaitUntil;
using testing::WorkerCluster;

constexpr char kPrometheus[] = "/usr/bin/prometheus";

// Runs a PromQL instant query; the result vector (empty on any failure).
nlohmann::json Query(int port, const std::string& promql) {
  std::string escaped;
  for (char c : promql) {
    if (isalnum(static_cast<unsigned char>(c)) || c == '_') {
      escaped += c;
    } else {
      char buf[4];
      snprintf(buf, sizeof(buf), "%%%02X", static_cast<unsigned char>(c));
      escaped += buf;
    }
  }
  auto body = HttpGet(port, "/api/v1/query?query=" + escaped);
  if (!body.ok()) return nlohmann::json::array();
  auto j = nlohmann::json::parse(*body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || j.value("status", "") != "success") return nlohmann::json::array();
  return j["data"]["result"];
}

TEST(WorkerPrometheusTest, PrometheusScrapesWorkerAndTier) {
  if (!std::filesystem::exists(kPrometheus)) {
    GTEST_FAIL() << kPrometheus
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

  const std::string dir = cluster.dir() + "/prometheus";
  std::filesystem::create_directories(dir + "/data");
  const int port = testing::FreePort();
  {
    std::ofstream config(dir + "/prometheus.yml");
    config << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
           << "scrape_configs:\n"
           << "  - job_name: engram-worker\n    static_configs:\n      - targets: ['127.0.0.1:"
           << cluster.worker_metrics_port() << "']\n"
           << "  - job_name: engram-memory\n    static_configs:\n      - targets: ['127.0.0.1:"
           << cluster.memory_metrics_port() << "']\n";
  }
  auto prometheus =
      Process::Start({kPrometheus, "--config.file=" + dir + "/prometheus.yml",
                      "--storage.tsdb.path=" + dir + "/data",
                      absl::StrCat("--web.listen-address=127.0.0.1:", port), "--log.level=warn"},
                     dir + "/prometheus.log");
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();

  // Both targets up (the `up` series is written by Prometheus after each scrape).
  bool up = WaitUntil(
      [&] {
        nlohmann::json result = Query(port, "up == 1");
        int n = 0;
        for (const auto& s : result) {
          const std::string job = s["metric"].value("job", "");
          n += job == "engram-worker" || job == "engram-memory";
        }
        return n == 2;
      },
      absl::Seconds(60));
  ASSERT_TRUE(up) << (*prometheus)->LogTail() << cluster.Logs();

  // A worker metric and a tier metric have values.
  nlohmann::json tokens;
  ASSERT_TRUE(WaitUntil(
      [&] {
        tokens = Query(port, "engram_worker_generation_tokens_total{job=\"engram-worker\"}");
        return !tokens.empty() && std::stod(tokens[0]["value"][1].get<std::string>()) >= 6;
      },
      absl::Seconds(30)))
      << tokens.dump();
  nlohmann::json tier;
  ASSERT_TRUE(WaitUntil(
      [&] {
        tier = Query(port, "{job=\"engram-memory\",__name__=~\"engram_.+\"}");
        return !tier.empty();
      },
      absl::Seconds(30)))
      << (*prometheus)->LogTail();
  EXPECT_FALSE(tier[0]["value"][1].get<std::string>().empty());
}

}  // namespace
}  // namespace engram
