// OpenAiApi: the worker's OpenAI-compatible HTTP API (docs/http-api.md), next to the gRPC service.
//
//   POST /v1/completions        prompt as text or token ids; stream with server-sent events
//   POST /v1/chat/completions   when the model's chat template is one the worker renders
//                               (server/chat_template.h); else 400 naming the reason
//   GET  /v1/models             the served model
//   GET  /health                200 while serving; 503 with the reason while loading, draining or
//                               while the memory tier is away
//
// A request is turned into the gRPC GenerateRequest, validated by the same function
// (server/request.h) and submitted to the same Scheduler as Generate, so its semantics are
// Generate's: continuous batching, stop strings and ids, seeds, deadlines (header
// X-Request-Timeout: seconds, else --http-request-timeout), cancellation when the client goes away
// (HttpServer::ClientGone), Abort by request id (header X-Request-Id). Errors are OpenAI-style JSON
// with the HTTP status of HttpErrorOf(), the one place that maps a Status to HTTP.
//
// Served by HttpServer (cpp-httplib with a bounded thread pool; server/http_server.h).
#ifndef ENGRAM_SERVER_OPENAI_API_H_
#define ENGRAM_SERVER_OPENAI_API_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engram/v1/inference.pb.h"
#include "nlohmann/json.hpp"
#include "server/chat_template.h"
#include "server/http_server.h"
#include "server/request.h"

namespace engram {

class Model;
class Scheduler;
struct WorkerConfig;
class Tokenizer;
class WorkerMetrics;

// ---- Status -> HTTP (the one mapping) ----------------------------------------------------------

struct HttpError {
  int status;        // HTTP status code
  const char* type;  // OpenAI error "type"
};
// INVALID_ARGUMENT/OUT_OF_RANGE 400, NOT_FOUND 404, ALREADY_EXISTS 409, RESOURCE_EXHAUSTED 429,
// CANCELLED 499, UNIMPLEMENTED 501, UNAVAILABLE/FAILED_PRECONDITION 503 (memory tier away or
// without the table, draining, loading), DEADLINE_EXCEEDED 504, anything else 500.
HttpError HttpErrorOf(absl::StatusCode code);
// {"error": {"message": ..., "type": ..., "param": null, "code": "<status code name>"}}
std::string OpenAiErrorBody(const absl::Status& status);

// ---- Requests ----------------------------------------------------------------------------------

// An OpenAI request after parsing: the GenerateRequest to validate and submit, and how to answer.
struct OpenAiRequest {
  bool chat = false;
  bool stream = false;
  // stream_options.include_usage: a last chunk with the usage before [DONE].
  bool include_usage = false;
  v1::GenerateRequest generate;
};

// POST /v1/completions body. `model_name`: the served model; a request naming another gets
// NOT_FOUND. Unsupported parameters (n > 1, best_of > 1, echo, suffix, logprobs, penalties,
// logit_bias) are INVALID_ARGUMENT naming them, never silently ignored.
absl::StatusOr<OpenAiRequest> ParseCompletionRequest(const nlohmann::json& body,
                                                     const std::string& model_name);
// POST /v1/chat/completions body: the messages rendered with `chat_template` (an error when the
// model has none the worker can render: INVALID_ARGUMENT with that reason). The template's end of
// turn stops the generation (a stop token id when `tokenizer` has it as one token, else a stop
// string).
absl::StatusOr<OpenAiRequest> ParseChatRequest(
    const nlohmann::json& body, const std::string& model_name,
    const absl::StatusOr<ChatTemplate>& chat_template, const Tokenizer& tokenizer);

// ---- The server --------------------------------------------------------------------------------

struct OpenAiApiOptions {
  RequestLimits limits;
  // The served model ("id" in /v1/models) and its directory (for the chat template).
  std::string model_name;
  std::string model_dir;
  HttpServerOptions http;
  // Deadline of a request without X-Request-Timeout; 0 = none.
  absl::Duration default_timeout = absl::ZeroDuration();
};

// The options of the worker's HTTP API from its config (http.* and the scheduler's limits).
OpenAiApiOptions MakeOpenAiApiOptions(const WorkerConfig& config, const RequestLimits& limits,
                                      const std::string& model_name);

class OpenAiApi {
 public:
  OpenAiApi(WorkerMetrics& metrics, OpenAiApiOptions options);
  ~OpenAiApi();
  OpenAiApi(const OpenAiApi&) = delete;
  OpenAiApi& operator=(const OpenAiApi&) = delete;

  // What /health answers once attached: OK while serving, else the reason (503). Set before
  // Attach().
  void SetReadiness(std::function<absl::Status()> readiness) { readiness_ = std::move(readiness); }
  // Binds and serves (port 0 = any). Until Attach() every generation request answers 503.
  absl::Status Start(const std::string& host, int port);
  int port() const { return server_.port(); }
  // Starts answering with `model` and `scheduler` (both outlive this object). Once.
  void Attach(const Model* model, Scheduler* scheduler);
  // After the scheduler stopped: lets open streams write their last events (up to `grace`), then
  // stops the server.
  void Stop(absl::Duration grace = absl::Seconds(2));

 private:
  void Register();
  void Generate(const httplib::Request& req, httplib::Response& res, bool chat);
  void Fail(httplib::Response& res, const absl::Status& status, bool count);

  WorkerMetrics& metrics_;
  const OpenAiApiOptions options_;
  const int64_t created_;  // unix seconds, for /v1/models
  std::function<absl::Status()> readiness_;
  HttpServer server_;
  std::atomic<const Model*> model_{nullptr};
  std::atomic<Scheduler*> scheduler_{nullptr};
  std::optional<absl::StatusOr<ChatTemplate>> chat_template_;  // set by Attach
  std::atomic<int> open_streams_{0};
};

}  // namespace engram

#endif  // ENGRAM_SERVER_OPENAI_API_H_
