#include "tests/common/process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace engram::testing {

// ---- Process -----------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Process>> Process::Start(const std::vector<std::string>& argv,
                                                        const std::string& log_path) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execv(args[0], args.data());
    _exit(127);
  }
  auto p = std::unique_ptr<Process>(new Process());
  p->pid_ = pid;
  p->log_path_ = log_path;
  return p;
}

Process::~Process() {
  if (!reaped_) {
    Signal(SIGKILL);
    (void)Wait(absl::Seconds(10));
  }
}

bool Process::Signal(int signal) { return !reaped_ && pid_ > 0 && kill(pid_, signal) == 0; }

absl::StatusOr<int> Process::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (running()) {
    if (absl::Now() > deadline) return absl::DeadlineExceededError("process still running");
    absl::SleepFor(absl::Milliseconds(10));
  }
  return status_;
}

bool Process::running() {
  if (reaped_) return false;
  if (waitpid(pid_, &status_, WNOHANG) == pid_) {
    reaped_ = true;
    return false;
  }
  return true;
}

std::string Process::LogTail(size_t bytes) const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string all = ss.str();
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

std::string Process::WaitForLogLine(const std::string& needle, absl::Duration timeout) {
  std::string found;
  WaitUntil(
      [&] {
        // Whether it still runs is asked before the log is read, so a line written just before
        // the exit is seen.
        const bool alive = running();
        std::ifstream in(log_path_);
        std::string line;
        while (std::getline(in, line)) {
          if (in.eof()) break;  // not yet a complete line
          if (line.find(needle) != std::string::npos) {
            found = line;
            return true;
          }
        }
        return !alive;
      },
      timeout);
  return found;
}

int ExitCode(int wait_status) {
  return WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
}

// ---- Ports, polling, HTTP ----------------------------------------------------------------------

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

bool WaitUntil(const std::function<bool()>& condition, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return true;
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(5, 0);
  auto res = client.Get(path.c_str());
  if (!res) return absl::UnavailableError(absl::StrCat("GET 127.0.0.1:", port, path, " failed"));
  if (res->status != 200) {
    return absl::UnavailableError(
        absl::StrCat("GET ", path, ": HTTP ", res->status, " ", res->body));
  }
  return res->body;
}

namespace {

// The label pairs of `{a="x",b="y"}` (no escaped quotes in this project's label values).
std::vector<std::string> LabelPairs(const std::string& braces) {
  std::vector<std::string> pairs;
  std::string inner = braces.substr(1, braces.size() - 2);
  size_t start = 0;
  while (start < inner.size()) {
    size_t close = inner.find('"', inner.find('"', start) + 1);
    if (close == std::string::npos) break;
    pairs.push_back(inner.substr(start, close + 1 - start));
    start = close + 2;  // past '",'
  }
  return pairs;
}

}  // namespace

double MetricValue(const std::string& exposition, const std::string& metric) {
  const size_t brace = metric.find('{');
  const std::string name = metric.substr(0, brace);
  const std::vector<std::string> wanted =
      brace == std::string::npos ? std::vector<std::string>{} : LabelPairs(metric.substr(brace));
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) != 0) continue;
    const std::string rest = line.substr(name.size());
    if (rest.empty() || (rest[0] != ' ' && rest[0] != '{')) continue;
    if (rest[0] == '{') {
      const size_t end = rest.find("} ");
      if (end == std::string::npos) continue;
      const std::vector<std::string> have = LabelPairs(rest.substr(0, end + 1));
      // Every label asked for must be there; labels not asked for are ignored.
      bool match = true;
      for (const std::string& w : wanted) {
        match = match && std::find(have.begin(), have.end(), w) != have.end();
      }
      if (!match) continue;
    } else if (!wanted.empty()) {
      continue;
    }
    return std::strtod(rest.substr(rest.rfind(' ') + 1).c_str(), nullptr);
  }
  return -1;
}

double ScrapeMetric(int port, const std::string& metric) {
  absl::StatusOr<std::string> body = HttpGet(port, "/metrics");
  return body.ok() ? MetricValue(*body, metric) : -1;
}

// ---- Prometheus --------------------------------------------------------------------------------

absl::StatusOr<Prometheus> StartPrometheus(const std::string& dir,
                                           const std::vector<PrometheusTarget>& targets) {
  if (access(kPrometheusBinary, X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        kPrometheusBinary, " is missing: run scripts/install-deps.sh (Debian package prometheus)"));
  }
  std::filesystem::create_directories(dir + "/data");
  {
    std::ofstream config(dir + "/prometheus.yml");
    config << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
           << "scrape_configs:\n";
    for (const PrometheusTarget& t : targets) {
      config << "  - job_name: " << t.job << "\n    static_configs:\n"
             << "      - targets: ['127.0.0.1:" << t.port << "']\n";
    }
    if (!config) return absl::InternalError(absl::StrCat("cannot write ", dir, "/prometheus.yml"));
  }
  Prometheus p;
  p.port = FreePort();
  auto process =
      Process::Start({kPrometheusBinary, "--config.file=" + dir + "/prometheus.yml",
                      "--storage.tsdb.path=" + dir + "/data",
                      absl::StrCat("--web.listen-address=127.0.0.1:", p.port), "--log.level=warn"},
                     dir + "/prometheus.log");
  if (!process.ok()) return process.status();
  p.process = *std::move(process);
  return p;
}

nlohmann::json PromQuery(int port, const std::string& promql) {
  std::string escaped;
  for (char c : promql) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_') {
      escaped += c;
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", static_cast<unsigned char>(c));
      escaped += buf;
    }
  }
  auto body = HttpGet(port, "/api/v1/query?query=" + escaped);
  if (!body.ok()) return nlohmann::json::array();
  auto j = nlohmann::json::parse(*body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || j.value("status", "") != "success") return nlohmann::json::array();
  return j["data"]["result"];
}

double PromSampleValue(const nlohmann::json& sample) {
  return std::strtod(sample["value"][1].get<std::string>().c_str(), nullptr);
}

}  // namespace engram::testing
