// Process and network helpers of the tests that run real binaries (engram-memory, engram-worker,
// the engram CLI, Prometheus) on loopback: a child process with its output in a log file, free
// ports, polling, HTTP scrapes of /metrics, and a real Prometheus server with its query API.
#ifndef ENGRAM_TESTS_COMMON_PROCESS_H_
#define ENGRAM_TESTS_COMMON_PROCESS_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace engram::testing {

// A child process (fork + exec), killed when its parent dies or when this object is destroyed.
class Process {
 public:
  // Starts `argv[0]` with `argv`; stdout and stderr go to `log_path` (appended).
  static absl::StatusOr<std::unique_ptr<Process>> Start(const std::vector<std::string>& argv,
                                                        const std::string& log_path);
  ~Process();

  // Sends `signal`; false when the process is already reaped or kill() fails.
  bool Signal(int signal);
  // Waits up to `timeout` for the exit; the wait status, or DEADLINE_EXCEEDED.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  // Whether the process has not exited yet (an exit is reaped and its status kept for Wait).
  bool running();
  // The log's last `bytes` bytes (for failure messages).
  std::string LogTail(size_t bytes = 4000) const;
  // Polls the log until a complete line contains `needle`; that line, or "" when the process
  // exited without writing it or `timeout` passed.
  std::string WaitForLogLine(const std::string& needle, absl::Duration timeout);

 private:
  Process() = default;

  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;  // wait status, once reaped_
  std::string log_path_;
};

// A wait status as one number: the exit code, or 128 + the signal that killed the process.
int ExitCode(int wait_status);

// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
int FreePort();
// Polls `condition` every 20 ms until it holds or `timeout` passes.
bool WaitUntil(const std::function<bool()>& condition, absl::Duration timeout);
// GET http://127.0.0.1:port/path; the body, or an error.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path);
// The value of the first sample of `metric` (exact name plus optional {labels}) in a Prometheus
// text exposition, or -1 when absent. The labels given must all be on the sample; labels not given
// are ignored (engram_worker_requests_total{code="OK"} matches the sample that also carries
// model_name).
double MetricValue(const std::string& exposition, const std::string& metric);
// MetricValue of http://127.0.0.1:port/metrics; -1 when unreachable or absent.
double ScrapeMetric(int port, const std::string& metric);

// ---- Prometheus (Debian's /usr/bin/prometheus, installed by scripts/install-deps.sh) ----------

inline constexpr char kPrometheusBinary[] = "/usr/bin/prometheus";

struct PrometheusTarget {
  std::string job;
  int port = 0;  // on 127.0.0.1
};

struct Prometheus {
  std::unique_ptr<Process> process;
  int port = 0;  // HTTP API on 127.0.0.1
};

// Writes `dir`/prometheus.yml (every target scraped each second) and starts Prometheus with its
// data in `dir`/data and its log in `dir`/prometheus.log. FAILED_PRECONDITION when the binary is
// missing.
absl::StatusOr<Prometheus> StartPrometheus(const std::string& dir,
                                           const std::vector<PrometheusTarget>& targets);

// Runs a PromQL instant query; the result vector (empty on any failure).
nlohmann::json PromQuery(int port, const std::string& promql);
// The value of one sample of a PromQuery result.
double PromSampleValue(const nlohmann::json& sample);

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_COMMON_PROCESS_H_
