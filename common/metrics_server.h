// Serves a prometheus-cpp Registry as text on http://HOST:PORT/metrics.
//
// prometheus-cpp's own Exposer (civetweb) cannot start in a process that links cuBLAS 13: civetweb
// creates threads with 100 KiB stacks and libcublasLt carries ~94 KiB of static TLS
// (docs/environment.md). So both servers serve /metrics with cpp-httplib and
// prometheus-cpp's TextSerializer instead; one mechanism for both processes.
//
// It also exports the process_* metrics (common/process_metrics.h) into the registry it serves,
// refreshed before each scrape.
#ifndef ENGRAM_COMMON_METRICS_SERVER_H_
#define ENGRAM_COMMON_METRICS_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace httplib {
class Server;
}

namespace engram {

class ProcessMetrics;

// Bounds of the /metrics HTTP server against slow or silent clients (docs/operations.md, "Threat
// model"): kMetricsThreads threads serve connections, newest first (a real scrape does not wait
// behind idle connections). A connection that sends no request for kMetricsKeepAliveTimeoutS, or
// stalls a read or write for the read/write timeout, is closed.
inline constexpr size_t kMetricsThreads = 4;
inline constexpr int kMetricsKeepAliveTimeoutS = 2;
inline constexpr int kMetricsReadTimeoutS = 2;
inline constexpr int kMetricsWriteTimeoutS = 5;

// cpp-httplib (Debian's 0.11, a compiled library) listens with a backlog of 5: a burst of more
// connections than that overflows the accept queue, and the kernel drops handshakes and answers
// with SYN cookies (seen as "Possible SYN flooding" in the kernel log, and as a rare reset of a
// client among 64 concurrent streams). listen() again on the bound socket raises its queue to
// SOMAXCONN (capped by net.core.somaxconn).
absl::Status RaiseListenBacklog(int listen_fd);

// How both HTTP servers (this one and the worker's OpenAI-style server) start listening:
//   1. socket options: SO_REUSEADDR only. httplib's default adds SO_REUSEPORT, which lets a second
//      process bind a port already in use and silently split the traffic between the two; without
//      it a taken port is an error here;
//   2. bind host:port, or any free port when `port` is 0;
//   3. RaiseListenBacklog on the bound socket;
//   4. run the listen loop on `thread` and return once it runs: httplib's stop() does nothing
//      before that, so a Stop() right after Start() would otherwise leave the loop running and the
//      join waiting forever.
// Returns the bound port; errors name `what` ("metrics", "HTTP") and the address.
absl::StatusOr<int> StartHttpListener(httplib::Server& server, const std::string& what,
                                      const std::string& host, int port, std::thread& thread);

class MetricsServer {
 public:
  explicit MetricsServer(std::shared_ptr<prometheus::Registry> registry);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Called before each scrape (e.g. to refresh gauges sampled from other components).
  void SetBeforeScrape(std::function<void()> hook) { before_scrape_ = std::move(hook); }
  // Binds and starts serving in a background thread. Port 0 picks a free port.
  absl::Status Start(const std::string& host, int port);
  // The bound port (after Start).
  int port() const { return port_; }
  void Stop();

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::function<void()> before_scrape_;
  std::unique_ptr<ProcessMetrics> process_metrics_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

// Renders a registry in the Prometheus text format (what /metrics returns).
std::string RenderMetrics(prometheus::Registry& registry);

// Histogram buckets for latencies in seconds, 10 us .. 10 s roughly x2.5 per step, then 30 s,
// 1, 2, 5 and 10 min (a long generation's end-to-end time must land in a bucket, not +Inf).
const std::vector<double>& LatencyBucketsSeconds();

// An unlabelled metric registered in `r`; the histogram uses LatencyBucketsSeconds().
prometheus::Gauge& AddGauge(prometheus::Registry& r, const char* name, const char* help);
prometheus::Counter& AddCounter(prometheus::Registry& r, const char* name, const char* help);
prometheus::Histogram& AddLatency(prometheus::Registry& r, const char* name, const char* help);

}  // namespace engram

#endif  // ENGRAM_COMMON_METRICS_SERVER_H_
