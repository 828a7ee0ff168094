#include "common/metrics_server.h"

#include <sys/socket.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/process_metrics.h"
#include "common/status.h"
#include "httplib.h"
#include "prometheus/text_serializer.h"

namespace engram {

absl::Status RaiseListenBacklog(int listen_fd) {
  if (listen_fd < 0 || listen(listen_fd, SOMAXCONN) != 0) {
    return absl::InternalError(absl::StrCat("cannot raise the listen backlog of socket ", listen_fd,
                                            ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> StartHttpListener(httplib::Server& server, const std::string& what,
                                      const std::string& host, int port, std::thread& thread) {
  // Set by the callback during bind (shared: the callback stays stored in the server).
  auto listen_fd = std::make_shared<int>(-1);
  server.set_socket_options([listen_fd](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    *listen_fd = sock;
  });
  if (port == 0) {
    port = server.bind_to_any_port(host);
    if (port < 0) return absl::UnavailableError(absl::StrCat("cannot bind ", what, " on ", host));
  } else if (!server.bind_to_port(host, port)) {
    return absl::UnavailableError(
        absl::StrCat("cannot bind ", what, " on ", host, ":", port, " (port in use?)"));
  }
  ENGRAM_RETURN_IF_ERROR(RaiseListenBacklog(*listen_fd));
  thread = std::thread([&server] { server.listen_after_bind(); });
  for (int i = 0; i < 5000 && !server.is_running(); ++i) absl::SleepFor(absl::Milliseconds(1));
  if (!server.is_running()) {
    return absl::InternalError(absl::StrCat(what, " server on port ", port, " did not start"));
  }
  return port;
}

namespace {

// A fixed pool of `threads` serving accepted connections newest first. cpp-httplib 0.11's
// ThreadPool serves in arrival order, so clients that connect and send nothing (each holds a thread
// until the keep-alive timeout closes it) would delay a real scrape behind all of them. Here the
// newest connection is served by the next free thread; older idle ones wait (an fd each) and are
// closed by the keep-alive timeout once a thread takes them. (httplib 0.11 gives no way to close a
// queued connection unserved: its per-connection handler is private.)
class LifoPool : public httplib::TaskQueue {
 public:
  explicit LifoPool(size_t threads) {
    for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
  }
  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void Work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, nothing left
        fn = std::move(jobs_.back());
        jobs_.pop_back();
      }
      fn();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace

std::string RenderMetrics(prometheus::Registry& registry) {
  prometheus::TextSerializer serializer;
  return serializer.Serialize(registry.Collect());
}

const std::vector<double>& LatencyBucketsSeconds() {
  static const std::vector<double> buckets = {1e-5,   2.5e-5, 5e-5, 1e-4,   2.5e-4, 5e-4, 1e-3,
                                              2.5e-3, 5e-3,   1e-2, 2.5e-2, 5e-2,   0.1,  0.25,
                                              0.5,    1.0,    2.5,  5.0,    10.0, 30.0,
                                              60.0,   120.0,  300.0, 600.0};
  return buckets;
}

prometheus::Gauge& AddGauge(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}

prometheus::Counter& AddCounter(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
}

prometheus::Histogram& AddLatency(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add(
      {}, LatencyBucketsSeconds());
}

MetricsServer::MetricsServer(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)),
      process_metrics_(std::make_unique<ProcessMetrics>(*registry_)) {}

MetricsServer::~MetricsServer() { Stop(); }

absl::Status MetricsServer::Start(const std::string& host, int port) {
  server_ = std::make_unique<httplib::Server>();
  // A scraper sends its request at once and reads the answer promptly: a connection idle for the
  // keep-alive timeout, or stalled mid-request/response for the read/write timeout, is closed, so
  // a slow or silent client holds one of the kMetricsThreads for at most a few seconds.
  server_->set_keep_alive_timeout(kMetricsKeepAliveTimeoutS);
  server_->set_read_timeout(kMetricsReadTimeoutS, 0);
  server_->set_write_timeout(kMetricsWriteTimeoutS, 0);
  server_->set_keep_alive_max_count(10);
  server_->new_task_queue = [] {
    return new LifoPool(kMetricsThreads);
  };
  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    process_metrics_->Update();
    if (before_scrape_) before_scrape_();
    res.set_content(RenderMetrics(*registry_), "text/plain; version=0.0.4; charset=utf-8");
  });
  ENGRAM_ASSIGN_OR_RETURN(port_, StartHttpListener(*server_, "metrics", host, port, thread_));
  return absl::OkStatus();
}

void MetricsServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace engram
