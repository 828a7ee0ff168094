#include "server/worker_config.h"

#include <optional>
#include <set>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/config_util.h"
#include "common/grpc_tls.h"
#include "common/engram_config.h"
#include "common/flags_help.h"
#include "common/log.h"
#include "common/status.h"

// Flags are optional-valued so "not given" is distinguishable from "given the default value";
// defaults live in the struct only (worker_config.h), never twice.
ABSL_FLAG(std::optional<std::string>, config, std::nullopt,
          "JSON config file (see worker_config.h)");
ABSL_FLAG(std::optional<std::string>, listen, std::nullopt, "gRPC listen address host:port");
ABSL_FLAG(std::optional<std::string>, metrics_host, std::nullopt, "/metrics host");
ABSL_FLAG(std::optional<int>, metrics_port, std::nullopt, "/metrics port (0 = any, -1 = off)");
ABSL_FLAG(std::optional<int>, max_receive_message_bytes, std::nullopt,
          "largest request message accepted, in bytes (default 4 MiB)");
ABSL_FLAG(std::optional<absl::Duration>, drain_timeout, std::nullopt, "SIGTERM drain timeout");
ABSL_FLAG(std::optional<std::string>, port_file, std::nullopt, "write bound ports here as JSON");
ABSL_FLAG(std::optional<std::string>, http_host, std::nullopt, "OpenAI-compatible HTTP API host");
ABSL_FLAG(std::optional<int>, http_port, std::nullopt,
          "OpenAI-compatible HTTP API port (0 = any, -1 = off)");
ABSL_FLAG(std::optional<int>, http_threads, std::nullopt,
          "HTTP connection threads (0 = max running + max queued + 8)");
ABSL_FLAG(std::optional<int>, http_max_pending_connections, std::nullopt,
          "HTTP connections waiting for a thread before 429");
ABSL_FLAG(std::optional<absl::Duration>, http_keep_alive_timeout, std::nullopt,
          "idle HTTP keep-alive timeout");
ABSL_FLAG(std::optional<absl::Duration>, http_request_timeout, std::nullopt,
          "deadline of HTTP requests without X-Request-Timeout (0 = none)");
ABSL_FLAG(std::optional<std::string>, model, std::nullopt, "model directory");
ABSL_FLAG(std::optional<int>, threads, std::nullopt, "CPU backbone threads (0 = all)");
ABSL_FLAG(std::optional<std::string>, device, std::nullopt, "backbone device: cuda|cpu|auto");
ABSL_FLAG(std::optional<double>, gpu_memory_fraction, std::nullopt,
          "share of GPU memory for weights, workspace and KV cache");
ABSL_FLAG(std::optional<bool>, cuda_graphs, std::nullopt, "replay decode steps from CUDA graphs");
ABSL_FLAG(std::optional<std::string>, memory, std::nullopt, "engram-memory address host:port");
ABSL_FLAG(std::optional<bool>, shared_memory, std::nullopt, "read rows from the tier's arena");
ABSL_FLAG(std::optional<absl::Duration>, reconnect_initial_backoff, std::nullopt,
          "first reconnect delay");
ABSL_FLAG(std::optional<absl::Duration>, reconnect_max_backoff, std::nullopt,
          "largest reconnect delay");
ABSL_FLAG(std::optional<absl::Duration>, rows_timeout, std::nullopt,
          "longest wait for Engram rows at a layer");
ABSL_FLAG(std::optional<int>, max_rows_per_batch, std::nullopt, "row ids per Prefetch message");
ABSL_FLAG(std::optional<int>, max_running_requests, std::nullopt, "sequences per batch");
ABSL_FLAG(std::optional<int>, max_queued_requests, std::nullopt,
          "waiting requests before RESOURCE_EXHAUSTED");
ABSL_FLAG(std::optional<int>, prefill_chunk_tokens, std::nullopt,
          "prompt tokens per sequence per step");
ABSL_FLAG(std::optional<int>, max_step_tokens, std::nullopt, "tokens per step");
ABSL_FLAG(std::optional<int>, default_max_tokens, std::nullopt,
          "max_tokens when a request gives 0");
ABSL_FLAG(std::optional<int>, max_context_tokens, std::nullopt, "context window (0 = model's)");
ABSL_FLAG(std::optional<std::string>, cold_rows, std::nullopt,
          "sequences whose Engram rows are not resident: sit-out (the others go on) or wait (the "
          "step waits for them)");
ABSL_FLAG(std::optional<bool>, reflection, std::nullopt, "serve gRPC reflection (for grpcurl)");
ABSL_FLAG(std::optional<std::string>, tls_cert, std::nullopt,
          "PEM certificate (chain) of the gRPC port; enables TLS");
ABSL_FLAG(std::optional<std::string>, tls_key, std::nullopt, "PEM private key of --tls-cert");
ABSL_FLAG(std::optional<std::string>, tls_client_ca, std::nullopt,
          "PEM CA of client certificates; clients without one are refused (mTLS)");
ABSL_FLAG(std::optional<std::string>, memory_tls_ca, std::nullopt,
          "PEM CA of engram-memory's certificate; enables TLS to the tier");
ABSL_FLAG(std::optional<std::string>, memory_tls_cert, std::nullopt,
          "PEM client certificate for engram-memory (mutual TLS)");
ABSL_FLAG(std::optional<std::string>, memory_tls_key, std::nullopt,
          "PEM private key of --memory-tls-cert");
ABSL_FLAG(std::optional<std::string>, log_level, std::nullopt, "debug|info|warning|error");

namespace engram {
namespace {

// Calls `visit(dotted_key, field)` for every field: the single list behind JSON input, output
// and the unknown-key check.
template <typename Config, typename Visitor>
void VisitFields(Config& c, Visitor&& visit) {
  visit("server.listen", c.server.listen);
  visit("server.metrics_host", c.server.metrics_host);
  visit("server.metrics_port", c.server.metrics_port);
  visit("server.max_receive_message_bytes", c.server.max_receive_message_bytes);
  visit("server.drain_timeout", c.server.drain_timeout);
  visit("server.port_file", c.server.port_file);
  visit("server.reflection", c.server.reflection);
  visit("server.tls_cert", c.server.tls_cert);
  visit("server.tls_key", c.server.tls_key);
  visit("server.tls_client_ca", c.server.tls_client_ca);
  visit("http.host", c.http.host);
  visit("http.port", c.http.port);
  visit("http.threads", c.http.threads);
  visit("http.max_pending_connections", c.http.max_pending_connections);
  visit("http.keep_alive_timeout", c.http.keep_alive_timeout);
  visit("http.request_timeout", c.http.request_timeout);
  visit("model.dir", c.model.dir);
  visit("model.threads", c.model.threads);
  visit("model.device", c.model.device);
  visit("model.gpu_memory_fraction", c.model.gpu_memory_fraction);
  visit("model.cuda_graphs", c.model.cuda_graphs);
  visit("memory_tier.address", c.memory_tier.address);
  visit("memory_tier.shared_memory", c.memory_tier.shared_memory);
  visit("memory_tier.reconnect_initial_backoff", c.memory_tier.reconnect_initial_backoff);
  visit("memory_tier.reconnect_max_backoff", c.memory_tier.reconnect_max_backoff);
  visit("memory_tier.rows_timeout", c.memory_tier.rows_timeout);
  visit("memory_tier.max_rows_per_batch", c.memory_tier.max_rows_per_batch);
  visit("memory_tier.tls_ca", c.memory_tier.tls_ca);
  visit("memory_tier.tls_cert", c.memory_tier.tls_cert);
  visit("memory_tier.tls_key", c.memory_tier.tls_key);
  visit("scheduler.max_running_requests", c.scheduler.max_running_requests);
  visit("scheduler.max_queued_requests", c.scheduler.max_queued_requests);
  visit("scheduler.prefill_chunk_tokens", c.scheduler.prefill_chunk_tokens);
  visit("scheduler.max_step_tokens", c.scheduler.max_step_tokens);
  visit("scheduler.default_max_tokens", c.scheduler.default_max_tokens);
  visit("scheduler.max_context_tokens", c.scheduler.max_context_tokens);
  visit("scheduler.cold_rows", c.scheduler.cold_rows);
  visit("log_level", c.log_level);
}

nlohmann::json::json_pointer Pointer(absl::string_view dotted) {
  std::string p;
  for (absl::string_view part : absl::StrSplit(dotted, '.')) absl::StrAppend(&p, "/", part);
  return nlohmann::json::json_pointer(p);
}

nlohmann::json ToJsonValue(const std::string& v) { return v; }
nlohmann::json ToJsonValue(int v) { return v; }
nlohmann::json ToJsonValue(bool v) { return v; }
nlohmann::json ToJsonValue(double v) { return v; }
nlohmann::json ToJsonValue(absl::Duration v) { return absl::FormatDuration(v); }

absl::Status FromJsonValue(const nlohmann::json& j, absl::string_view key, std::string* out) {
  if (!j.is_string()) return absl::InvalidArgumentError(absl::StrCat(key, " must be a string"));
  *out = j.get<std::string>();
  return absl::OkStatus();
}
absl::Status FromJsonValue(const nlohmann::json& j, absl::string_view key, int* out) {
  if (!JsonIntValue(j, out)) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, " must be an integer in [", INT32_MIN, ", ", INT32_MAX, "]"));
  }
  return absl::OkStatus();
}
absl::Status FromJsonValue(const nlohmann::json& j, absl::string_view key, bool* out) {
  if (!j.is_boolean())
    return absl::InvalidArgumentError(absl::StrCat(key, " must be true or false"));
  *out = j.get<bool>();
  return absl::OkStatus();
}
absl::Status FromJsonValue(const nlohmann::json& j, absl::string_view key, double* out) {
  if (!j.is_number()) return absl::InvalidArgumentError(absl::StrCat(key, " must be a number"));
  *out = j.get<double>();
  return absl::OkStatus();
}
absl::Status FromJsonValue(const nlohmann::json& j, absl::string_view key, absl::Duration* out) {
  if (!j.is_string() || !absl::ParseDuration(j.get<std::string>(), out)) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, " must be a duration string such as \"250ms\" or \"30s\""));
  }
  return absl::OkStatus();
}

// Lists the dotted paths of every leaf in `j` (objects are descended, everything else is a leaf).
void LeafKeys(const nlohmann::json& j, const std::string& prefix, std::vector<std::string>* out) {
  if (!j.is_object()) {
    out->push_back(prefix);
    return;
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    LeafKeys(it.value(), prefix.empty() ? it.key() : prefix + "." + it.key(), out);
  }
}

template <typename T>
void Override(const absl::Flag<std::optional<T>>& flag, T* field) {
  if (std::optional<T> v = absl::GetFlag(flag)) *field = *v;
}

absl::Status Bad(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("worker config ", key, ": ", what));
}

}  // namespace

nlohmann::json WorkerConfig::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  VisitFields(*this, [&](absl::string_view key, const auto& field) {
    j[Pointer(key)] = ToJsonValue(field);
  });
  return j;
}

absl::Status ApplyJsonConfig(const nlohmann::json& json, WorkerConfig* config) {
  if (!json.is_object())
    return absl::InvalidArgumentError("worker config file must hold a JSON object");
  std::set<std::string> known;
  VisitFields(*config, [&](absl::string_view key, auto&) { known.insert(std::string(key)); });
  std::vector<std::string> leaves;
  LeafKeys(json, "", &leaves);
  for (const std::string& key : leaves) {
    if (!known.count(key))
      return absl::InvalidArgumentError(absl::StrCat("unknown worker config key ", key));
  }
  absl::Status status;
  VisitFields(*config, [&](absl::string_view key, auto& field) {
    if (!status.ok()) return;
    auto pointer = Pointer(key);
    if (json.contains(pointer)) status = FromJsonValue(json.at(pointer), key, &field);
  });
  return status;
}

absl::Status WorkerConfig::Validate() const {
  if (model.dir.empty()) return Bad("model.dir", "is required (--model DIR)");
  if (!memory_tier.address.empty() && memory_tier.address.find(':') == std::string::npos) {
    return Bad("memory_tier.address",
               absl::StrCat("\"", memory_tier.address, "\" is not host:port"));
  }
  if (server.listen.empty() || server.listen.find(':') == std::string::npos) {
    return Bad("server.listen", absl::StrCat("\"", server.listen, "\" is not host:port"));
  }
  if (absl::Status s =
          ValidateServerTls({server.tls_cert, server.tls_key, server.tls_client_ca});
      !s.ok()) {
    return Bad("server.tls_*", s.message());
  }
  if (absl::Status s =
          ValidateClientTls({memory_tier.tls_ca, memory_tier.tls_cert, memory_tier.tls_key});
      !s.ok()) {
    return Bad("memory_tier.tls_*", s.message());
  }
  if (server.max_receive_message_bytes < 4096) {
    return Bad("server.max_receive_message_bytes", "must be >= 4096");
  }
  if (server.metrics_port < -1 || server.metrics_port > 65535) {
    return Bad("server.metrics_port", "must be in [-1, 65535]");
  }
  if (server.drain_timeout < absl::ZeroDuration())
    return Bad("server.drain_timeout", "must be >= 0");
  if (http.port < -1 || http.port > 65535) return Bad("http.port", "must be in [-1, 65535]");
  if (http.threads < 0 || http.threads > 65536) return Bad("http.threads", "must be in [0, 65536]");
  if (http.max_pending_connections < 0)
    return Bad("http.max_pending_connections", "must be >= 0");
  if (http.keep_alive_timeout < absl::Seconds(1))
    return Bad("http.keep_alive_timeout", "must be >= 1s");
  if (http.request_timeout < absl::ZeroDuration())
    return Bad("http.request_timeout", "must be >= 0 (0 = none)");
  if (model.threads < 0 || model.threads > 1024)
    return Bad("model.threads", "must be in [0, 1024]");
  if (model.device != "auto" && model.device != "cpu" && model.device != "cuda") {
    return Bad("model.device", absl::StrCat("\"", model.device, "\" is not cuda, cpu or auto"));
  }
  if (!(model.gpu_memory_fraction > 0 && model.gpu_memory_fraction <= 1)) {
    return Bad("model.gpu_memory_fraction", "must be in (0, 1]");
  }
  if (memory_tier.reconnect_initial_backoff <= absl::ZeroDuration() ||
      memory_tier.reconnect_max_backoff < memory_tier.reconnect_initial_backoff) {
    return Bad("memory_tier.reconnect_*_backoff", "need 0 < initial <= max");
  }
  if (memory_tier.rows_timeout <= absl::ZeroDuration())
    return Bad("memory_tier.rows_timeout", "must be > 0");
  if (memory_tier.max_rows_per_batch < 1)
    return Bad("memory_tier.max_rows_per_batch", "must be >= 1");
  if (scheduler.max_running_requests < 1)
    return Bad("scheduler.max_running_requests", "must be >= 1");
  if (scheduler.max_queued_requests < 0)
    return Bad("scheduler.max_queued_requests", "must be >= 0");
  if (scheduler.prefill_chunk_tokens < 1)
    return Bad("scheduler.prefill_chunk_tokens", "must be >= 1");
  if (scheduler.max_step_tokens < scheduler.max_running_requests) {
    return Bad(
        "scheduler.max_step_tokens",
        "must be >= max_running_requests (every running sequence decodes one token per step)");
  }
  if (scheduler.default_max_tokens < 1) return Bad("scheduler.default_max_tokens", "must be >= 1");
  if (scheduler.max_context_tokens < 0) return Bad("scheduler.max_context_tokens", "must be >= 0");
  if (scheduler.cold_rows != "sit-out" && scheduler.cold_rows != "wait") {
    return Bad("scheduler.cold_rows",
               absl::StrCat("\"", scheduler.cold_rows, "\" is not sit-out or wait"));
  }
  LogLevel level;
  if (!ParseLogLevel(log_level, &level)) {
    return Bad("log_level",
               absl::StrCat("\"", log_level, "\" is not debug, info, warning or error"));
  }
  return absl::OkStatus();
}

constexpr char kWorkerUsage[] =
    "engram-worker --model DIR --memory HOST:PORT [--listen HOST:PORT] [--metrics-port P] "
    "[--config FILE] ...";

std::string WorkerFlagsHelp() {
  return absl::StrCat(
      FlagsHelp(kWorkerUsage, __FILE__),
      "\nDefaults (the keys of a --config file; a flag given overrides the file):\n",
      WorkerConfig().ToJson().dump(2), "\n");
}

absl::StatusOr<WorkerConfig> ParseWorkerCommandLine(int argc, char** argv) {
  std::vector<std::string> args = UnderscoreFlagNames(argc, argv);
  std::vector<char*> ptrs;
  for (std::string& a : args) ptrs.push_back(a.data());
  absl::SetProgramUsageMessage(kWorkerUsage);
  std::vector<char*> rest = absl::ParseCommandLine(static_cast<int>(ptrs.size()), ptrs.data());
  if (rest.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", rest[1], "\""));
  }

  WorkerConfig c;
  if (std::optional<std::string> file = absl::GetFlag(FLAGS_config)) {
    ENGRAM_ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(*file));
    ENGRAM_RETURN_IF_ERROR(Annotate(ApplyJsonConfig(j, &c), *file));
  }
  Override(FLAGS_listen, &c.server.listen);
  Override(FLAGS_metrics_host, &c.server.metrics_host);
  Override(FLAGS_metrics_port, &c.server.metrics_port);
  Override(FLAGS_max_receive_message_bytes, &c.server.max_receive_message_bytes);
  Override(FLAGS_drain_timeout, &c.server.drain_timeout);
  Override(FLAGS_port_file, &c.server.port_file);
  Override(FLAGS_reflection, &c.server.reflection);
  Override(FLAGS_tls_cert, &c.server.tls_cert);
  Override(FLAGS_tls_key, &c.server.tls_key);
  Override(FLAGS_tls_client_ca, &c.server.tls_client_ca);
  Override(FLAGS_memory_tls_ca, &c.memory_tier.tls_ca);
  Override(FLAGS_memory_tls_cert, &c.memory_tier.tls_cert);
  Override(FLAGS_memory_tls_key, &c.memory_tier.tls_key);
  Override(FLAGS_http_host, &c.http.host);
  Override(FLAGS_http_port, &c.http.port);
  Override(FLAGS_http_threads, &c.http.threads);
  Override(FLAGS_http_max_pending_connections, &c.http.max_pending_connections);
  Override(FLAGS_http_keep_alive_timeout, &c.http.keep_alive_timeout);
  Override(FLAGS_http_request_timeout, &c.http.request_timeout);
  Override(FLAGS_model, &c.model.dir);
  Override(FLAGS_threads, &c.model.threads);
  Override(FLAGS_device, &c.model.device);
  Override(FLAGS_gpu_memory_fraction, &c.model.gpu_memory_fraction);
  Override(FLAGS_cuda_graphs, &c.model.cuda_graphs);
  Override(FLAGS_memory, &c.memory_tier.address);
  Override(FLAGS_shared_memory, &c.memory_tier.shared_memory);
  Override(FLAGS_reconnect_initial_backoff, &c.memory_tier.reconnect_initial_backoff);
  Override(FLAGS_reconnect_max_backoff, &c.memory_tier.reconnect_max_backoff);
  Override(FLAGS_rows_timeout, &c.memory_tier.rows_timeout);
  Override(FLAGS_max_rows_per_batch, &c.memory_tier.max_rows_per_batch);
  Override(FLAGS_max_running_requests, &c.scheduler.max_running_requests);
  Override(FLAGS_max_queued_requests, &c.scheduler.max_queued_requests);
  Override(FLAGS_prefill_chunk_tokens, &c.scheduler.prefill_chunk_tokens);
  Override(FLAGS_max_step_tokens, &c.scheduler.max_step_tokens);
  Override(FLAGS_default_max_tokens, &c.scheduler.default_max_tokens);
  Override(FLAGS_max_context_tokens, &c.scheduler.max_context_tokens);
  Override(FLAGS_cold_rows, &c.scheduler.cold_rows);
  Override(FLAGS_log_level, &c.log_level);
  ENGRAM_RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace engram
