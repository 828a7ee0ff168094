#include "server/openai_api.h"

#include <cmath>
#include <deque>
#include <limits>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/memory_trim.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "server/scheduler.h"
#include "server/worker_config.h"
#include "server/worker_metrics.h"

namespace engram {

using nlohmann::json;

// ---- Status -> HTTP ----------------------------------------------------------------------------

HttpError HttpErrorOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return {200, ""};
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return {400, "invalid_request_error"};
    case absl::StatusCode::kNotFound:
      return {404, "not_found_error"};
    case absl::StatusCode::kAlreadyExists:
      return {409, "conflict_error"};
    case absl::StatusCode::kResourceExhausted:
      return {429, "overloaded_error"};
    case absl::StatusCode::kCancelled:
      return {499, "cancelled"};
    case absl::StatusCode::kUnimplemented:
      return {501, "not_implemented_error"};
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kFailedPrecondition:
      return {503, "service_unavailable_error"};
    case absl::StatusCode::kDeadlineExceeded:
      return {504, "timeout_error"};
    default:
      return {500, "server_error"};
  }
}

namespace {

std::string Dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json ErrorJson(const absl::Status& status) {
  return {{"error",
           {{"message", std::string(status.message())},
            {"type", HttpErrorOf(status.code()).type},
            {"param", nullptr},
            {"code", absl::StatusCodeToString(status.code())}}}};
}

}  // namespace

std::string OpenAiErrorBody(const absl::Status& status) { return Dump(ErrorJson(status)); }

// ---- Request parsing ---------------------------------------------------------------------------

namespace {

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

// body[key] when present and not null.
const json* Field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status IntField(const json& body, const char* key, int64_t lo, int64_t hi,
                      std::optional<int64_t>* out) {
  const json* v = Field(body, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number_integer()) return Invalid(absl::StrCat(key, " must be an integer"));
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return Invalid(absl::StrCat(key, " must be in [", lo, ", ", hi, "]"));
  }
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) return Invalid(absl::StrCat(key, " must be in [", lo, ", ", hi, "], got ", x));
  *out = x;
  return absl::OkStatus();
}

absl::Status NumberField(const json& body, const char* key, double lo, double hi,
                         std::optional<double>* out) {
  const json* v = Field(body, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_number()) return Invalid(absl::StrCat(key, " must be a number"));
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) {
    return Invalid(absl::StrCat(key, " must be in [", lo, ", ", hi, "], got ", x));
  }
  *out = x;
  return absl::OkStatus();
}

absl::Status BoolField(const json& body, const char* key, bool* out) {
  const json* v = Field(body, key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_boolean()) return Invalid(absl::StrCat(key, " must be true or false"));
  *out = v->get<bool>();
  return absl::OkStatus();
}

// Token ids from a JSON array of integers.
absl::Status TokenIds(const json& array, const std::string& what,
                      google::protobuf::RepeatedField<uint32_t>* out) {
  for (size_t i = 0; i < array.size(); ++i) {
    const json& id = array[i];
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        (id.is_number_unsigned() && id.get<uint64_t>() > std::numeric_limits<uint32_t>::max()) ||
        id.get<int64_t>() > std::numeric_limits<uint32_t>::max()) {
      return Invalid(absl::StrCat(what, "[", i, "] is not a token id (an integer in [0, 2^32))"));
    }
    out->Add(static_cast<uint32_t>(id.get<int64_t>()));
  }
  return absl::OkStatus();
}

// A parameter the worker does not implement: accepted only at its no-op value.
absl::Status Unsupported(const json& body, const char* key, const json& neutral,
                         absl::string_view why = "") {
  const json* v = Field(body, key);
  if (v == nullptr || *v == neutral) return absl::OkStatus();
  if (neutral.is_object() && v->is_object() && v->empty()) return absl::OkStatus();
  if (neutral.is_array() && v->is_array() && v->empty()) return absl::OkStatus();
  return Invalid(absl::StrCat(key, " is not supported by this server", why.empty() ? "" : " (",
                              why, why.empty() ? "" : ")"));
}

// What completions and chat share: model, sampling, stopping, streaming, unsupported features.
absl::Status ParseCommon(const json& body, const std::string& model_name, OpenAiRequest* out) {
  if (const json* model = Field(body, "model")) {
    if (!model->is_string()) return Invalid("model must be a string");
    if (model->get<std::string>() != model_name) {
      return absl::NotFoundError(absl::StrCat("model \"", model->get<std::string>(),
                                              "\" is not served here; this worker serves \"",
                                              model_name, "\" (GET /v1/models)"));
    }
  }
  std::optional<int64_t> n;
  if (absl::Status s = IntField(body, "n", 1, 1, &n); !s.ok()) {
    return Invalid("n must be 1: one choice per request is supported");
  }
  for (auto [key, neutral] : std::initializer_list<std::pair<const char*, json>>{
           {"presence_penalty", 0},
           {"frequency_penalty", 0},
           {"repetition_penalty", 1},
           {"logit_bias", json::object()},
           {"top_logprobs", 0},
           {"tools", json::array()},
           {"functions", json::array()},
       }) {
    if (absl::Status s = Unsupported(body, key, neutral); !s.ok()) return s;
  }
  if (const json* format = Field(body, "response_format")) {
    if (!format->is_object() || format->value("type", "") != "text") {
      return Invalid("response_format is not supported by this server (only {\"type\": \"text\"})");
    }
  }

  v1::SamplingParams* sampling = out->generate.mutable_sampling();
  std::optional<double> temperature, top_p;
  if (absl::Status s = NumberField(body, "temperature", 0, 2, &temperature); !s.ok()) return s;
  // OpenAI's default temperature is 1 (the gRPC API's is 0, greedy).
  sampling->set_temperature(static_cast<float>(temperature.value_or(1.0)));
  if (absl::Status s = NumberField(body, "top_p", 0, 1, &top_p); !s.ok()) return s;
  if (top_p) {
    if (*top_p <= 0) return Invalid("top_p must be in (0, 1]");
    sampling->set_top_p(static_cast<float>(*top_p));
  }
  std::optional<int64_t> top_k;
  if (absl::Status s = IntField(body, "top_k", -1, INT32_MAX, &top_k); !s.ok()) return s;
  if (top_k && *top_k > 0) sampling->set_top_k(static_cast<uint32_t>(*top_k));  // -1, 0 = off
  if (const json* seed = Field(body, "seed")) {
    if (!seed->is_number_integer()) return Invalid("seed must be an integer");
    sampling->set_seed(seed->is_number_unsigned() ? seed->get<uint64_t>()
                                                  : static_cast<uint64_t>(seed->get<int64_t>()));
  }

  v1::StoppingCriteria* stopping = out->generate.mutable_stopping();
  if (const json* stop = Field(body, "stop")) {
    if (stop->is_string()) {
      stopping->add_stop(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string()) return Invalid(absl::StrCat("stop[", i, "] must be a string"));
        stopping->add_stop((*stop)[i].get<std::string>());
      }
    } else {
      return Invalid("stop must be a string or a list of strings");
    }
  }
  if (const json* ids = Field(body, "stop_token_ids")) {
    if (!ids->is_array()) return Invalid("stop_token_ids must be a list of token ids");
    if (absl::Status s = TokenIds(*ids, "stop_token_ids", stopping->mutable_stop_token_ids());
        !s.ok()) {
      return s;
    }
  }
  bool ignore_eos = false;
  if (absl::Status s = BoolField(body, "ignore_eos", &ignore_eos); !s.ok()) return s;
  stopping->set_ignore_eos(ignore_eos);
  // vLLM's default: special tokens are left out of the text.
  bool skip_special = true;
  if (absl::Status s = BoolField(body, "skip_special_tokens", &skip_special); !s.ok()) return s;
  out->generate.set_skip_special_tokens(skip_special);

  if (absl::Status s = BoolField(body, "stream", &out->stream); !s.ok()) return s;
  if (const json* options = Field(body, "stream_options")) {
    if (!options->is_object()) return Invalid("stream_options must be an object");
    if (!out->stream) return Invalid("stream_options is only allowed with stream: true");
    if (absl::Status s = BoolField(*options, "include_usage", &out->include_usage); !s.ok()) {
      return Invalid("stream_options.include_usage must be true or false");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseCompletionRequest(const json& body,
                                                     const std::string& model_name) {
  if (!body.is_object()) return Invalid("the request body must be a JSON object");
  OpenAiRequest out;
  if (absl::Status s = ParseCommon(body, model_name, &out); !s.ok()) return s;
  for (auto [key, neutral] : std::initializer_list<std::pair<const char*, json>>{
           {"best_of", 1}, {"echo", false}, {"suffix", ""}}) {
    if (absl::Status s = Unsupported(body, key, neutral); !s.ok()) return s;
  }
  if (const json* logprobs = Field(body, "logprobs")) {
    if (!(logprobs->is_boolean() && !logprobs->get<bool>())) {
      return Invalid("logprobs is not supported by this server");
    }
  }

  // prompt: "text", [ids], ["text"] or [[ids]]; several prompts are a batch, not supported.
  const json* prompt = Field(body, "prompt");
  if (prompt == nullptr) return Invalid("prompt is required");
  const json* one = prompt;
  if (prompt->is_array() && !prompt->empty() && (prompt->at(0).is_string() || prompt->at(0).is_array())) {
    if (prompt->size() != 1) {
      return Invalid(absl::StrCat("prompt holds ", prompt->size(),
                                  " prompts; send one prompt per request"));
    }
    one = &prompt->at(0);
  }
  if (one->is_string()) {
    out.generate.set_text(one->get<std::string>());
    if (one->get<std::string>().empty()) return Invalid("prompt is empty");
  } else if (one->is_array()) {
    if (one->empty()) return Invalid("prompt is empty");
    if (absl::Status s = TokenIds(*one, "prompt", out.generate.mutable_token_ids()->mutable_ids());
        !s.ok()) {
      return s;
    }
  } else {
    return Invalid("prompt must be a string, a list of token ids, or a list with one of them");
  }

  // OpenAI's default for completions is 16 tokens.
  std::optional<int64_t> max_tokens;
  if (absl::Status s = IntField(body, "max_tokens", 1, UINT32_MAX, &max_tokens); !s.ok()) return s;
  out.generate.mutable_stopping()->set_max_tokens(static_cast<uint32_t>(max_tokens.value_or(16)));
  return out;
}

absl::StatusOr<OpenAiRequest> ParseChatRequest(const json& body, const std::string& model_name,
                                               const absl::StatusOr<ChatTemplate>& chat_template,
                                               const Tokenizer& tokenizer) {
  if (!body.is_object()) return Invalid("the request body must be a JSON object");
  OpenAiRequest out;
  out.chat = true;
  if (absl::Status s = ParseCommon(body, model_name, &out); !s.ok()) return s;
  if (const json* logprobs = Field(body, "logprobs")) {
    if (!(logprobs->is_boolean() && !logprobs->get<bool>())) {
      return Invalid("logprobs is not supported by this server");
    }
  }
  if (!chat_template.ok()) {
    return Invalid(absl::StrCat("chat completions are not available for this model: ",
                                chat_template.status().message()));
  }

  const json* messages = Field(body, "messages");
  if (messages == nullptr || !messages->is_array() || messages->empty()) {
    return Invalid("messages is required: a non-empty list of {\"role\", \"content\"}");
  }
  std::vector<ChatMessage> conversation;
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string at = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return Invalid(absl::StrCat(at, " must be an object"));
    const json* role = Field(m, "role");
    if (role == nullptr || !role->is_string() || role->get<std::string>().empty()) {
      return Invalid(absl::StrCat(at, ".role is required (a string)"));
    }
    const json* content = Field(m, "content");
    ChatMessage message{role->get<std::string>(), ""};
    if (content == nullptr) {
      return Invalid(absl::StrCat(at, ".content is required"));
    } else if (content->is_string()) {
      message.content = content->get<std::string>();
    } else if (content->is_array()) {
      // Text parts joined with newlines (as vLLM does); other part types are not supported.
      for (size_t p = 0; p < content->size(); ++p) {
        const json& part = (*content)[p];
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          return Invalid(absl::StrCat(at, ".content[", p,
                                      "] is not a text part; only {\"type\": \"text\", \"text\": "
                                      "...} parts are supported"));
        }
        if (p > 0) message.content += "\n";
        message.content += part["text"].get<std::string>();
      }
    } else {
      return Invalid(absl::StrCat(at, ".content must be a string or a list of text parts"));
    }
    conversation.push_back(std::move(message));
  }
  bool add_generation_prompt = true;
  if (absl::Status s = BoolField(body, "add_generation_prompt", &add_generation_prompt); !s.ok()) {
    return s;
  }
  out.generate.set_text(chat_template->Render(conversation, add_generation_prompt));

  // The template's end of turn ends the answer.
  const std::string& eot = chat_template->end_of_turn();
  if (std::optional<uint32_t> id = tokenizer.TokenToId(eot)) {
    out.generate.mutable_stopping()->add_stop_token_ids(*id);
  } else {
    out.generate.mutable_stopping()->add_stop(eot);
  }

  // max_completion_tokens (current OpenAI name), else max_tokens; none = the server default.
  std::optional<int64_t> max_tokens;
  if (absl::Status s = IntField(body, "max_completion_tokens", 1, UINT32_MAX, &max_tokens);
      !s.ok()) {
    return s;
  }
  if (!max_tokens) {
    if (absl::Status s = IntField(body, "max_tokens", 1, UINT32_MAX, &max_tokens); !s.ok()) {
      return s;
    }
  }
  out.generate.mutable_stopping()->set_max_tokens(static_cast<uint32_t>(max_tokens.value_or(0)));
  return out;
}

// ---- The server --------------------------------------------------------------------------------

namespace {

constexpr absl::Duration kPoll = absl::Milliseconds(100);

// A request's events from the scheduler (its GenerateSink), taken by the HTTP thread. OnEvent
// never blocks the scheduler.
class HttpCall final : public GenerateSink {
 public:
  void OnEvent(GenerateEvent event) override {
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(event));
  }
  // Moves the queued events to *out, waiting up to `timeout` for the first.
  void Take(absl::Duration timeout, std::vector<GenerateEvent>* out) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return !events_.empty(); };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    for (auto& e : events_) out->push_back(std::move(e));
    events_.clear();
  }

 private:
  absl::Mutex mu_;
  std::deque<GenerateEvent> events_ ABSL_GUARDED_BY(mu_);
};

// A submitted request as its HTTP thread sees it. Used by one thread at a time (the connection's).
class Submitted {
 public:
  Submitted(std::shared_ptr<HttpCall> call, Scheduler* scheduler, uint64_t handle)
      : call_(std::move(call)), scheduler_(scheduler), handle_(handle) {}
  // A request left behind (the connection failed, the server stops) is cancelled.
  ~Submitted() { Cancel(); }
  Submitted(const Submitted&) = delete;
  Submitted& operator=(const Submitted&) = delete;

  // The next events, waiting up to `max_wait` (empty when none came). Checks the client every
  // kPoll and cancels the request once when it went away; the scheduler then sends the last
  // event at the next step boundary.
  std::vector<GenerateEvent> Next(absl::Duration max_wait) {
    std::vector<GenerateEvent> events;
    const absl::Time until = absl::Now() + max_wait;
    for (;;) {
      call_->Take(std::min(kPoll, until - absl::Now()), &events);
      if (!cancelled_ && HttpServer::ClientGone()) Cancel();
      if (!events.empty() || absl::Now() >= until) break;
    }
    for (const GenerateEvent& e : events) done_ = done_ || e.last;
    return events;
  }
  // All events up to the last one.
  std::vector<GenerateEvent> All() {
    std::vector<GenerateEvent> events;
    while (!done_) {
      for (GenerateEvent& e : Next(absl::Seconds(1))) events.push_back(std::move(e));
    }
    return events;
  }
  void Cancel() {
    if (cancelled_ || done_) return;
    cancelled_ = true;
    scheduler_->Cancel(handle_, absl::CancelledError("the HTTP client went away"));
  }
  bool done() const { return done_; }

 private:
  std::shared_ptr<HttpCall> call_;
  Scheduler* scheduler_;
  uint64_t handle_;
  bool cancelled_ = false;
  bool done_ = false;
};

const char* OpenAiFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
    case FinishReason::kContext:
      return "length";
    case FinishReason::kAborted:
      return "abort";
    default:
      return "stop";
  }
}

json Usage(uint32_t prompt, uint32_t completion) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

std::string Sse(const json& j) { return absl::StrCat("data: ", Dump(j), "\n\n"); }
constexpr char kDone[] = "data: [DONE]\n\n";

// The response objects of one request.
struct Answer {
  bool chat;
  std::string id;
  int64_t created;
  std::string model;

  json Base(bool chunk) const {
    const char* object = chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                              : "text_completion";
    return {{"id", id}, {"object", object}, {"created", created}, {"model", model}};
  }
  // The non-streaming body.
  json Full(const std::string& text, const GenerateEvent& last) const {
    json choice = {{"index", 0},
                   {"logprobs", nullptr},
                   {"finish_reason", OpenAiFinishReason(last.finish_reason)}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", text}};
    } else {
      choice["text"] = text;
    }
    json j = Base(false);
    j["choices"] = json::array({choice});
    j["usage"] = Usage(last.prompt_tokens, last.completion_tokens);
    return j;
  }
  // One streamed chunk; `finish` null while going on. The first chat chunk carries the role.
  std::string Chunk(const std::string& text, const char* finish, bool with_role) const {
    json choice = {{"index", 0},
                   {"logprobs", nullptr},
                   {"finish_reason", finish != nullptr ? json(finish) : json(nullptr)}};
    if (chat) {
      json delta = json::object();
      if (with_role) delta["role"] = "assistant";
      if (with_role || !text.empty()) delta["content"] = text;
      choice["delta"] = delta;
    } else {
      choice["text"] = text;
    }
    json j = Base(true);
    j["choices"] = json::array({choice});
    return Sse(j);
  }
  std::string UsageChunk(const GenerateEvent& last) const {
    json j = Base(true);
    j["choices"] = json::array();
    j["usage"] = Usage(last.prompt_tokens, last.completion_tokens);
    return Sse(j);
  }
};

// A streaming response: the state its content provider keeps between calls.
struct Stream {
  Stream(Answer a, std::shared_ptr<HttpCall> call, Scheduler* scheduler, uint64_t handle,
         bool usage)
      : answer(std::move(a)), run(std::move(call), scheduler, handle), include_usage(usage) {}

  // Server-sent events for `events`: a chunk per event with text, the finish chunk, the usage
  // chunk when asked, [DONE]. An error after the stream started is an OpenAI error object.
  std::string Format(const std::vector<GenerateEvent>& events) {
    std::string out;
    for (const GenerateEvent& e : events) {
      if (!e.last) {
        if (e.text.empty() && !(answer.chat && !sent_role)) continue;
        out += answer.Chunk(e.text, nullptr, answer.chat && !sent_role);
        sent_role = true;
        continue;
      }
      if (!e.status.ok()) {
        out += Sse(ErrorJson(e.status));
      } else {
        out += answer.Chunk(e.text, OpenAiFinishReason(e.finish_reason), answer.chat && !sent_role);
        sent_role = true;
        if (include_usage) out += answer.UsageChunk(e);
      }
      out += kDone;
    }
    return out;
  }

  Answer answer;
  Submitted run;
  bool include_usage;
  bool sent_role = false;
  std::vector<GenerateEvent> pending;  // taken before the stream started
};

// Messages of the shared validation name the gRPC fields ("sampling.top_p"); here they name the
// OpenAI ones ("top_p").
absl::Status WithHttpNames(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kInvalidArgument) return status;
  return absl::InvalidArgumentError(absl::StrReplaceAll(
      status.message(), {{"sampling.", ""}, {"stopping.", ""}, {"prompt token_ids[", "prompt["}}));
}

}  // namespace

OpenAiApiOptions MakeOpenAiApiOptions(const WorkerConfig& config, const RequestLimits& limits,
                                      const std::string& model_name) {
  OpenAiApiOptions o;
  o.limits = limits;
  o.model_name = model_name;
  o.model_dir = config.model.dir;
  // Every request the scheduler can hold may wait on its own connection, plus a few for health
  // checks and /v1/models.
  o.http.threads = config.http.threads > 0 ? config.http.threads
                                           : config.scheduler.max_running_requests +
                                                 config.scheduler.max_queued_requests + 8;
  o.http.max_pending_connections = config.http.max_pending_connections;
  o.http.keep_alive_timeout = config.http.keep_alive_timeout;
  o.default_timeout = config.http.request_timeout;
  return o;
}

OpenAiApi::OpenAiApi(WorkerMetrics& metrics, OpenAiApiOptions options)
    : metrics_(metrics),
      options_(std::move(options)),
      created_(absl::ToUnixSeconds(absl::Now())),
      server_(options_.http) {
  Register();
}

OpenAiApi::~OpenAiApi() { server_.Stop(); }

absl::Status OpenAiApi::Start(const std::string& host, int port) {
  return server_.Start(host, port);
}

void OpenAiApi::Attach(const Model* model, Scheduler* scheduler) {
  chat_template_ = ChatTemplate::Load(options_.model_dir);
  if (chat_template_->ok()) {
    ENGRAM_LOG(INFO).With("template", (*chat_template_)->name())
        << "HTTP chat completions enabled";
  } else {
    ENGRAM_LOG(INFO).With("reason", chat_template_->status().message())
        << "HTTP chat completions unavailable";
  }
  scheduler_.store(scheduler);
  model_.store(model);
}

void OpenAiApi::Stop(absl::Duration grace) {
  const absl::Time until = absl::Now() + grace;
  while (open_streams_.load() > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(10));
  server_.Stop();
}

void OpenAiApi::Fail(httplib::Response& res, const absl::Status& status, bool count) {
  if (count) metrics_.requests(status.code()).Increment();
  const HttpError e = HttpErrorOf(status.code());
  res.status = e.status;
  if (e.status == 429 || e.status == 503) res.set_header("Retry-After", "1");
  res.set_content(OpenAiErrorBody(status), "application/json");
}

void OpenAiApi::Register() {
  // After a large body, the parse and the tokenization are freed once the handler returns.
  server_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Generate(req, res, /*chat=*/false);
    TrimMemorySoon(req.body.size());
  });
  server_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Generate(req, res, /*chat=*/true);
    TrimMemorySoon(req.body.size());
  });
  server_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json model = {{"id", options_.model_name},
                  {"object", "model"},
                  {"created", created_},
                  {"owned_by", "engram-serve"},
                  {"max_model_len", options_.limits.max_context_tokens}};
    res.set_content(Dump({{"object", "list"}, {"data", json::array({model})}}),
                    "application/json");
  });
  server_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    absl::Status status = model_.load() == nullptr
                              ? absl::UnavailableError("the worker is still loading its model")
                              : (readiness_ ? readiness_() : absl::OkStatus());
    if (!status.ok()) return Fail(res, status, /*count=*/false);
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  // Errors httplib answers itself (no route, body too large, unparsable request) as JSON too.
  server_.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    absl::Status status;
    if (res.status == 404 || res.status == 405) {
      status = absl::NotFoundError(absl::StrCat("no route ", req.method, " ", req.path));
    } else if (res.status == 413) {
      status = absl::InvalidArgumentError("the request body is too large");
    } else {
      status = absl::InvalidArgumentError(absl::StrCat("HTTP error ", res.status));
    }
    res.set_content(OpenAiErrorBody(status), "application/json");
    return httplib::Server::HandlerResponse::Handled;
  }));
  server_.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        res.status = 500;
        res.set_content(OpenAiErrorBody(absl::InternalError("internal error")), "application/json");
      });
}

void OpenAiApi::Generate(const httplib::Request& req, httplib::Response& res, bool chat) {
  const absl::Time received = absl::Now();
  const Model* model = model_.load();
  Scheduler* scheduler = scheduler_.load();
  if (model == nullptr) {
    return Fail(res, absl::UnavailableError("the worker is still loading its model"), true);
  }
  const json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    return Fail(res, absl::InvalidArgumentError("the request body is not valid JSON"), true);
  }
  absl::StatusOr<OpenAiRequest> parsed =
      chat ? ParseChatRequest(body, options_.model_name, *chat_template_, model->tokenizer())
           : ParseCompletionRequest(body, options_.model_name);
  if (!parsed.ok()) return Fail(res, parsed.status(), true);
  parsed->generate.set_request_id(req.get_header_value("X-Request-Id"));

  absl::Duration timeout = options_.default_timeout;
  if (req.has_header("X-Request-Timeout")) {
    double seconds = 0;
    if (!absl::SimpleAtod(req.get_header_value("X-Request-Timeout"), &seconds) ||
        !std::isfinite(seconds) || seconds <= 0) {
      return Fail(res,
                  absl::InvalidArgumentError(
                      "header X-Request-Timeout must be a positive number of seconds"),
                  true);
    }
    timeout = absl::Seconds(seconds);
  }
  const absl::Time deadline =
      timeout > absl::ZeroDuration() ? received + timeout : absl::InfiniteFuture();
  absl::StatusOr<GenerateParams> params =
      ValidateGenerateRequest(parsed->generate, *model, options_.limits, received, deadline);
  if (!params.ok()) return Fail(res, WithHttpNames(params.status()), true);
  const std::string request_id = params->request_id;
  auto call = std::make_shared<HttpCall>();
  absl::StatusOr<uint64_t> handle = scheduler->Submit(*std::move(params), call);
  if (!handle.ok()) return Fail(res, handle.status(), true);
  res.set_header("X-Request-Id", request_id);
  Answer answer{chat, absl::StrCat(chat ? "chatcmpl-" : "cmpl-", request_id),
                absl::ToUnixSeconds(received), model->name()};

  if (!parsed->stream) {
    Submitted run(call, scheduler, *handle);
    std::string text;
    const std::vector<GenerateEvent> events = run.All();
    for (const GenerateEvent& e : events) text += e.text;
    const GenerateEvent& last = events.back();
    // The scheduler counted the request (requests_total) when it ended it.
    if (!last.status.ok()) return Fail(res, last.status, false);
    res.set_content(Dump(answer.Full(text, last)), "application/json");
    return;
  }

  auto stream = std::make_shared<Stream>(std::move(answer), call, scheduler, *handle,
                                         parsed->include_usage);
  // Wait for the first event, so that a request that fails before its first token (the memory
  // tier away at admission, a deadline in the queue) still gets its HTTP status.
  while (stream->pending.empty()) stream->pending = stream->run.Next(absl::Seconds(1));
  if (stream->run.done() && !stream->pending.back().status.ok()) {
    return Fail(res, stream->pending.back().status, false);
  }
  ++open_streams_;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [stream](size_t, httplib::DataSink& sink) {
        std::vector<GenerateEvent> events = std::move(stream->pending);
        stream->pending.clear();
        if (events.empty()) events = stream->run.Next(absl::Seconds(1));
        const std::string out = stream->Format(events);
        // A failed write: the client is gone; the releaser cancels the request.
        if (!out.empty() && !sink.write(out.data(), out.size())) return false;
        if (stream->run.done()) sink.done();
        return true;
      },
      [this, stream](bool) {
        stream->run.Cancel();  // no-op once the last event was taken
        --open_streams_;
      });
}

}  // namespace engram
