#include "server/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/metrics_server.h"
#include "common/status.h"

namespace engram {
namespace {

// How the current thread treats the connection it is handed (see BoundedPool).
enum class Mode { kServe, kReject, kDrop };
thread_local Mode t_mode = Mode::kServe;
// The socket of the connection this thread serves (kServe), for ClientGone().
thread_local socket_t t_socket = INVALID_SOCKET;

int Millis(absl::Duration d) {
  return static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(d), 0, INT32_MAX));
}

// poll() one socket for `events`, retrying on EINTR; > 0 when ready.
int PollOne(socket_t sock, short events, int timeout_ms, short* revents = nullptr) {
  pollfd p{sock, events, 0};
  int r;
  do {
    r = poll(&p, 1, timeout_ms);
  } while (r < 0 && errno == EINTR);
  if (revents != nullptr) *revents = p.revents;
  return r;
}

void CloseSocket(socket_t sock) {
  shutdown(sock, SHUT_RDWR);
  close(sock);
}

// The connection's byte stream for httplib's request parser and response writer: reads are
// buffered (httplib's line reader asks for one byte at a time), writes never raise SIGPIPE.
class SocketStream final : public httplib::Stream {
 public:
  SocketStream(socket_t sock, absl::Duration read_timeout, absl::Duration write_timeout)
      : sock_(sock), read_ms_(Millis(read_timeout)), write_ms_(Millis(write_timeout)) {}

  bool is_readable() const override { return PollOne(sock_, POLLIN, read_ms_) > 0; }
  bool is_writable() const override { return PollOne(sock_, POLLOUT, write_ms_) > 0; }

  ssize_t read(char* ptr, size_t size) override {
    if (pos_ < len_) {
      const size_t n = std::min(size, len_ - pos_);
      std::memcpy(ptr, buffer_ + pos_, n);
      pos_ += n;
      return static_cast<ssize_t>(n);
    }
    if (!is_readable()) return -1;
    if (size >= sizeof(buffer_)) return Recv(ptr, size);
    const ssize_t got = Recv(buffer_, sizeof(buffer_));
    if (got <= 0) return got;
    len_ = static_cast<size_t>(got);
    pos_ = std::min(size, len_);
    std::memcpy(ptr, buffer_, pos_);
    return static_cast<ssize_t>(pos_);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    ssize_t n;
    do {
      n = send(sock_, ptr, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    Address(/*peer=*/true, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    Address(/*peer=*/false, ip, port);
  }
  socket_t socket() const override { return sock_; }

 private:
  ssize_t Recv(char* ptr, size_t size) {
    ssize_t n;
    do {
      n = recv(sock_, ptr, size, 0);
    } while (n < 0 && errno == EINTR);
    return n;
  }

  void Address(bool peer, std::string& ip, int& port) const {
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    auto* sa = reinterpret_cast<sockaddr*>(&addr);
    if ((peer ? getpeername(sock_, sa, &len) : getsockname(sock_, sa, &len)) != 0) return;
    char host[INET6_ADDRSTRLEN] = {};
    if (addr.ss_family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&addr);
      inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
      port = ntohs(in->sin_port);
    } else if (addr.ss_family == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
      inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
      port = ntohs(in6->sin6_port);
    }
    ip = host;
  }

  const socket_t sock_;
  const int read_ms_;
  const int write_ms_;
  char buffer_[4096];
  size_t pos_ = 0;
  size_t len_ = 0;
};

// httplib's TaskQueue with a bound: `threads` serve connections, at most `max_pending` wait for
// one; connections beyond that go to one reject thread (429, then close), and when even its queue
// is full they are closed on the accepting thread.
class BoundedPool final : public httplib::TaskQueue {
 public:
  BoundedPool(int threads, int max_pending) : threads_(threads), max_pending_(max_pending) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
    rejecter_ = std::thread([this] { Reject(); });
  }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (busy_ + static_cast<int>(jobs_.size()) < threads_ + max_pending_) {
        jobs_.push_back(std::move(fn));
        cv_.notify_one();
        return;
      }
      if (rejects_.size() < kMaxRejectQueue) {
        rejects_.push_back(std::move(fn));
        reject_cv_.notify_one();
        return;
      }
    }
    t_mode = Mode::kDrop;
    fn();
    t_mode = Mode::kServe;
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    cv_.notify_all();
    reject_cv_.notify_all();
    for (auto& t : workers_) t.join();
    rejecter_.join();
  }

 private:
  static constexpr size_t kMaxRejectQueue = 1024;

  void Work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return shutdown_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // shutdown_ and nothing left
        fn = std::move(jobs_.front());
        jobs_.pop_front();
        ++busy_;
      }
      fn();
      std::lock_guard<std::mutex> lock(mu_);
      --busy_;
    }
  }

  void Reject() {
    t_mode = Mode::kReject;
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        reject_cv_.wait(lock, [&] { return shutdown_ || !rejects_.empty(); });
        if (rejects_.empty()) return;
        fn = std::move(rejects_.front());
        rejects_.pop_front();
      }
      fn();
    }
  }

  const int threads_;
  const int max_pending_;
  std::vector<std::thread> workers_;
  std::thread rejecter_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable reject_cv_;
  std::deque<std::function<void()>> jobs_;
  std::deque<std::function<void()>> rejects_;
  int busy_ = 0;
  bool shutdown_ = false;
};

}  // namespace

HttpServer::HttpServer(HttpServerOptions options) : options_(std::move(options)) {
  set_keep_alive_max_count(1000);
  set_payload_max_length(options_.max_body_bytes);
  const int threads = std::max(1, options_.threads);
  const int pending = std::max(0, options_.max_pending_connections);
  new_task_queue = [threads, pending] { return new BoundedPool(threads, pending); };
}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Start(const std::string& host, int port) {
  ENGRAM_ASSIGN_OR_RETURN(port_, StartHttpListener(*this, "HTTP", host, port, thread_));
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (is_running()) stop();
  if (thread_.joinable()) thread_.join();
}

bool HttpServer::ClientGone() {
  if (t_socket == INVALID_SOCKET) return false;
  short revents = 0;
  if (PollOne(t_socket, POLLIN | POLLRDHUP, 0, &revents) <= 0) return false;
  if (revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)) return true;
  if (revents & POLLIN) {
    char c;
    const ssize_t n = recv(t_socket, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
  return false;
}

bool HttpServer::process_and_close_socket(socket_t sock) {
  if (t_mode == Mode::kDrop) {
    CloseSocket(sock);
    return false;
  }
  if (t_mode == Mode::kReject) {
    Reject(sock);
    return false;
  }
  // The keep-alive loop of httplib's process_server_socket_core, with the socket kept for
  // ClientGone(). Waits for the next request in short slices so Stop() is noticed.
  t_socket = sock;
  SocketStream stream(sock, options_.read_timeout, options_.write_timeout);
  bool ret = false;
  size_t count = keep_alive_max_count_;
  auto next_request = [&] {
    const absl::Time until = absl::Now() + options_.keep_alive_timeout;
    while (svr_sock_ != INVALID_SOCKET) {
      const int r = PollOne(sock, POLLIN, 50);
      if (r < 0) return false;
      if (r > 0) return true;
      if (absl::Now() >= until) return false;
    }
    return false;
  };
  while (count > 0 && next_request()) {
    const bool close_connection = count == 1;
    bool connection_closed = false;
    ret = process_request(stream, close_connection, connection_closed, nullptr);
    if (!ret || connection_closed) break;
    --count;
  }
  t_socket = INVALID_SOCKET;
  CloseSocket(sock);
  return ret;
}

void HttpServer::Reject(socket_t sock) {
  rejected_.fetch_add(1);
  // Read the request head first (briefly), so the client is not reset while still sending.
  std::string head;
  char buf[4096];
  const absl::Time until = absl::Now() + absl::Milliseconds(200);
  while (head.find("\r\n\r\n") == std::string::npos && head.size() < 65536 && absl::Now() < until) {
    if (PollOne(sock, POLLIN, 20) <= 0) continue;
    const ssize_t n = recv(sock, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) break;
    head.append(buf, static_cast<size_t>(n));
  }
  const std::string response =
      absl::StrCat("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n",
                   "Retry-After: 1\r\nConnection: close\r\nContent-Length: ",
                   options_.overload_body.size(), "\r\n\r\n", options_.overload_body);
  size_t sent = 0;
  while (sent < response.size()) {
    if (PollOne(sock, POLLOUT, 200) <= 0) break;
    const ssize_t n = send(sock, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  // Half-close and drain what the client still sends (its body), then close.
  shutdown(sock, SHUT_WR);
  const absl::Time drain_until = absl::Now() + absl::Milliseconds(200);
  while (absl::Now() < drain_until && PollOne(sock, POLLIN, 20) > 0) {
    if (recv(sock, buf, sizeof(buf), MSG_DONTWAIT) <= 0) break;
  }
  close(sock);
}

}  // namespace engram
