// HttpServer: cpp-httplib's Server (Debian's libcpp-httplib 0.11) with the three things a
// long-polling inference API needs and the stock server lacks:
//
//   1. A bounded thread pool. httplib serves a connection on one thread from start to end (a
//      streaming response, a non-streaming request waiting for its tokens, an idle keep-alive);
//      the stock pool queues connections without limit. Here at most `threads` connections are
//      served and `max_pending_connections` wait for a thread; a connection beyond that is
//      answered at once with 429 and an OpenAI-style JSON error (a separate, single thread does
//      this, so an overload never starves the served connections).
//   2. Client disconnect detection: ClientGone() tells a handler (or a streaming content
//      provider) whose client closed or reset its connection while the handler waits for the
//      scheduler; the handler then cancels the request. httplib 0.11 gives handlers no access to
//      the socket, so this class serves each connection itself (process_and_close_socket: the
//      keep-alive loop and a buffered socket Stream, both as in httplib) and keeps the socket in
//      a thread-local for the handler.
//   3. Start/Stop that cannot race (Stop right after Start): StartHttpListener
//      (common/metrics_server.h), as the metrics server does.
//
// Handlers are registered with the httplib API (Get, Post, ...) before Start().
#ifndef ENGRAM_SERVER_HTTP_SERVER_H_
#define ENGRAM_SERVER_HTTP_SERVER_H_

#include <atomic>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "httplib.h"

namespace engram {

struct HttpServerOptions {
  // Connections served at once (threads), and connections waiting for a thread.
  int threads = 16;
  int max_pending_connections = 64;
  // Idle keep-alive connections are closed after this.
  absl::Duration keep_alive_timeout = absl::Seconds(5);
  // Reading a request / writing a response chunk gives up after these (a client that stops
  // reading a stream holds its thread at most write_timeout per chunk, also at shutdown).
  absl::Duration read_timeout = absl::Seconds(30);
  absl::Duration write_timeout = absl::Seconds(10);
  // Largest request body; larger ones get 413.
  size_t max_body_bytes = 64 << 20;
  // The body of the 429 answer to a connection beyond the pool (JSON).
  std::string overload_body =
      R"({"error":{"message":"too many open HTTP connections; retry later","type":"overloaded_error","param":null,"code":"RESOURCE_EXHAUSTED"}})";
};

class HttpServer : public httplib::Server {
 public:
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer() override;
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds (port 0 = any) and serves in a background thread; returns once the loop runs.
  absl::Status Start(const std::string& host, int port);
  int port() const { return port_; }
  // Stops accepting, lets the connections being served end (handlers must return by
  // themselves) and joins every thread. Idempotent.
  void Stop();

  // From a handler or content provider only: true when the client of the connection this thread
  // serves has closed or reset it (a request it sent after this one still counts as present).
  static bool ClientGone();

  // Connections refused with 429 because the pool and its queue were full.
  uint64_t overload_rejections() const { return rejected_.load(); }

 private:
  bool process_and_close_socket(socket_t sock) override;
  void Reject(socket_t sock);

  const HttpServerOptions options_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<uint64_t> rejected_{0};
};

}  // namespace engram

#endif  // ENGRAM_SERVER_HTTP_SERVER_H_
