// The real binaries end to end: `engram table import` writes the store, an `engram-memory`
// process serves it, a real Prometheus server (Debian /usr/bin/prometheus on 127.0.0.1) scrapes
// its /metrics, `engram table inspect` reads the catalog beside the running server, and SIGTERM
// drains the process, which persists its statistics and exits 0.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "memory_tier/tier_client.h"
#include "nlohmann/json.hpp"
#include "tests/memory_tier/test_model.h"

extern char** environ;

namespace engram {
namespace {

using testing::BinaryPath;
using testing::TempDir;

// A child process with its stderr on a pipe.
struct Child {
  pid_t pid = -1;
  int err = -1;  // read end of stderr
  std::string seen;

  static Child Spawn(std::vector<std::string> argv, bool capture_stderr) {
    Child c;
    int fds[2] = {-1, -1};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (capture_stderr) {
      EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0);
      posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
    } else {
      posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    }
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    EXPECT_EQ(posix_spawn(&c.pid, args[0], &actions, nullptr, args.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    if (capture_stderr) {
      close(fds[1]);
      c.err = fds[0];
    }
    return c;
  }
  // Reads stderr until a line contains `needle`; returns that line ("" at EOF).
  std::string WaitForLine(const std::string& needle) {
    char buf[4096];
    while (true) {
      size_t pos = seen.find(needle);
      if (pos != std::string::npos) {
        size_t begin = seen.rfind('\n', pos);
        begin = begin == std::string::npos ? 0 : begin + 1;
        size_t end = seen.find('\n', pos);
        if (end != std::string::npos) return seen.substr(begin, end - begin);
      }
      ssize_t n = read(err, buf, sizeof(buf));
      if (n <= 0) return "";
      seen.append(buf, static_cast<size_t>(n));
    }
  }
  int Wait() {
    int status = 0;
    waitpid(pid, &status, 0);
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  ~Child() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    if (err >= 0) close(err);
  }
};

int FieldOf(const std::string& line, const std::string& key) {
  size_t p = line.find(" " + key + "=");
  if (p == std::string::npos) return -1;
  int v = -1;
  std::string rest = line.substr(p + key.size() + 2);
  absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &v);
  return v;
}

int FreePort() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  close(s);
  return ntohs(addr.sin_port);
}

// Polls a Prometheus instant query until it returns a sample whose value satisfies `ok`.
bool PromQueryUntil(int port, const std::string& query, const std::function<bool(double)>& ok,
                    std::string* last) {
  httplib::Client http("127.0.0.1", port);
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < give_up) {
    auto res = http.Get("/api/v1/query", httplib::Params{{"query", query}}, httplib::Headers{});
    if (res && res->status == 200) {
      *last = res->body;
      auto j = nlohmann::json::parse(res->body, nullptr, false);
      if (!j.is_discarded() && j.value("status", "") == "success") {
        for (const auto& r : j["data"]["result"]) {
          double v = std::stod(r["value"][1].get<std::string>());
          if (ok(v)) return true;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));  // poll interval, not a wait
  }
  return false;
}

TEST(MemoryProcessTest, ServesScrapedByPrometheusAndDrainsOnSigterm) {
  if (access("/usr/bin/prometheus", X_OK) != 0) GTEST_SKIP() << "no /usr/bin/prometheus";
  TempDir tmp;
  const std::string model = tmp.path() + "/model", store = tmp.path() + "/store";
  testing::TestModelSpec spec;
  spec.dtype = "fp8_e4m3_e8m0";
  spec.head_dim = 256;
  ASSERT_TRUE(testing::WriteTestModel(model, spec).ok());
  {
    Child import = Child::Spawn(
        {BinaryPath("client/engram"), "table", "import", model, "--store", store}, false);
    ASSERT_EQ(import.Wait(), 0);
  }
  Child server = Child::Spawn(
      {BinaryPath("memory_tier/engram-memory"), "--store", store, "--listen", "127.0.0.1:0",
       "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--dram-bytes", "300K", "--shm-prefix",
       absl::StrCat("engram-ptest-", getpid()), "--io-depth", "8", "--drain-timeout-s", "5"},
      true);
  const std::string ready = server.WaitForLine("msg=ready");
  ASSERT_FALSE(ready.empty()) << server.seen;
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
  const int prom_port = FreePort();
  const std::string prom_dir = tmp.path() + "/prometheus";
  std::filesystem::create_directories(prom_dir);
  {
    std::ofstream cfg(prom_dir + "/prometheus.yml");
    cfg << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        << "scrape_configs:\n  - job_name: engram-memory\n    static_configs:\n"
        << "      - targets: ['127.0.0.1:" << metrics_port << "']\n";
  }
  Child prometheus =
      Child::Spawn({"/usr/bin/prometheus", "--config.file=" + prom_dir + "/prometheus.yml",
                    "--storage.tsdb.path=" + prom_dir + "/data",
                    absl::StrCat("--web.listen-address=127.0.0.1:", prom_port)},
                   false);
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
  kill(prometheus.pid, SIGTERM);
  prometheus.Wait();

  // inspect reads the catalog read-only while the server holds it.
  {
    Child inspect =
        Child::Spawn({BinaryPath("client/engram"), "table", "inspect", "--store", store}, false);
    EXPECT_EQ(inspect.Wait(), 0);
  }
  // SIGTERM: drain, persist statistics, exit 0.
  client->reset();
  ASSERT_EQ(kill(server.pid, SIGTERM), 0);
  EXPECT_FALSE(server.WaitForLine("state=draining").empty()) << server.seen;
  EXPECT_FALSE(server.WaitForLine("msg=stopped").empty()) << server.seen;
  EXPECT_EQ(server.Wait(), 0);
  auto [code, out] = testing::RunCommand(absl::StrCat(
      BinaryPath("client/engram"), " table inspect --store ", store, " --layer 1 --top 3"));
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("hottest rows (decayed counts):"), std::string::npos) << out;
}

}  // namespace
}  // namespace engram
