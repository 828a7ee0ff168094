#include "server/inference_service.h"

#include <chrono>
#include <deque>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_message.h"
#include "common/grpc_status.h"
#include "common/memory_trim.h"
#include "common/status.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "server/scheduler.h"
#include "server/worker_metrics.h"

namespace engram {
namespace {

// Ends a unary call with `result`: the response, or the error.
template <typename Response>
grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* context,
                                 const absl::StatusOr<Response>& result, grpc::ByteBuffer* out) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (result.ok()) SerializeMessage(*result, out);
  reactor->Finish(result.ok() ? grpc::Status::OK : ToGrpcStatus(result.status()));
  return reactor;
}

// gRPC's "no deadline" is a time point far in the future; keep it infinite here.
absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  auto deadline = context.deadline();
  if (deadline >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

// One Generate call: the gRPC reactor and the scheduler's sink in one object.
//
// Lifetime: gRPC deletes nothing; OnDone (after Finish) drops the reactor's reference. The
// scheduler holds another reference until it has sent the last event, so whichever finishes last
// frees the call. Finish is called exactly once, after the last event, and nothing touches the
// reactor after it.
class GenerateCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                           public GenerateSink,
                           public std::enable_shared_from_this<GenerateCall> {
 public:
  GenerateCall(WorkerMetrics& metrics, std::string request_id)
      : metrics_(metrics), request_id_(std::move(request_id)) {}

  // Keeps the call alive until OnDone.
  void Hold(std::shared_ptr<GenerateCall> self) { self_ = std::move(self); }

  // Submits to the scheduler; on failure ends the call with the error.
  void Start(Scheduler& scheduler, GenerateParams params) {
    auto handle = scheduler.Submit(std::move(params), shared_from_this());
    if (!handle.ok()) {
      Reject(handle.status());
      return;
    }
    bool cancel;
    {
      absl::MutexLock lock(&mu_);
      scheduler_ = &scheduler;
      handle_ = *handle;
      cancel = client_gone_ && TakeCancelLocked();
    }
    if (cancel) SendCancel();
  }

  // Ends a call that never reached the scheduler.
  void Reject(const absl::Status& status) {
    metrics_.requests(status.code()).Increment();
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
    }
    Finish(ToGrpcStatus(status));
  }

  void OnEvent(GenerateEvent event) override {
    Step step;
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      events_.push_back(std::move(event));
      step = NextLocked();
    }
    Perform(step);
  }

  void OnWriteDone(bool ok) override {
    Step step;
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        // The client is gone; the scheduler sends a last event after the cancellation.
        client_gone_ = true;
        cancel = TakeCancelLocked();
      }
      step = NextLocked();
    }
    if (cancel) SendCancel();
    Perform(step);
  }

  void OnCancel() override {
    bool cancel;
    {
      absl::MutexLock lock(&mu_);
      client_gone_ = true;
      cancel = TakeCancelLocked();
    }
    if (cancel) SendCancel();
  }

  void OnDone() override {
    // May free this object (when the scheduler already dropped its reference): nothing after it.
    std::shared_ptr<GenerateCall> self = std::move(self_);
  }

 private:
  // What to do with the stream after an event or a finished write. gRPC calls are made outside the
  // lock: a reaction may run on another thread at once.
  struct Step {
    enum { kNone, kWrite, kWriteAndFinish, kFinish } action = kNone;
    grpc::Status status;
  };

  bool TakeCancelLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (scheduler_ == nullptr || cancel_sent_ || finished_) return false;
    cancel_sent_ = true;
    return true;
  }
  // scheduler_ and handle_ are fixed once set.
  void SendCancel() {
    scheduler_->Cancel(handle_, absl::CancelledError("the client cancelled the call or went away"));
  }

  // Merges every queued event into one message (a slow client gets fewer, larger messages); the
  // last event finishes the call.
  Step NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Step step;
    if (writing_ || finished_ || events_.empty()) return step;
    v1::GenerateResponse response;
    response.set_request_id(request_id_);
    bool last = false;
    absl::Status status;
    while (!events_.empty()) {
      GenerateEvent& e = events_.front();
      for (uint32_t id : e.token_ids) response.add_token_ids(id);
      response.mutable_text()->append(e.text);
      if (e.last) {
        last = true;
        status = e.status;
        response.set_finish_reason(ToProto(e.finish_reason));
        response.mutable_usage()->set_prompt_tokens(e.prompt_tokens);
        response.mutable_usage()->set_completion_tokens(e.completion_tokens);
      }
      events_.pop_front();
    }
    SerializeMessage(response, &response_);
    if (!last) {
      writing_ = true;
      step.action = Step::kWrite;
      return step;
    }
    finished_ = true;
    if (!status.ok() || client_gone_) {
      step.action = Step::kFinish;
      step.status = ToGrpcStatus(status.ok() ? absl::CancelledError("cancelled") : status);
      return step;
    }
    step.action = Step::kWriteAndFinish;
    return step;
  }

  void Perform(const Step& step) {
    switch (step.action) {
      case Step::kNone:
        return;
      case Step::kWrite:
        StartWrite(&response_);
        return;
      case Step::kWriteAndFinish:
        StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
        return;
      case Step::kFinish:
        Finish(step.status);
        return;
    }
  }

  WorkerMetrics& metrics_;
  const std::string request_id_;
  std::shared_ptr<GenerateCall> self_;
  absl::Mutex mu_;
  // Set once under mu_ by Start; read after observing them set (TakeCancelLocked).
  Scheduler* scheduler_ = nullptr;
  uint64_t handle_ = 0;
  bool client_gone_ ABSL_GUARDED_BY(mu_) = false;
  bool cancel_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<GenerateEvent> events_ ABSL_GUARDED_BY(mu_);
  // The serialized GenerateResponse: written under mu_ only while no write is in flight; read by
  // gRPC during the write.
  grpc::ByteBuffer response_;
};

}  // namespace

InferenceService::InferenceService(WorkerMetrics& metrics, InferenceServiceOptions options)
    : metrics_(metrics), options_(std::move(options)) {}

void InferenceService::Attach(const Model* model, Scheduler* scheduler) {
  scheduler_.store(scheduler);
  model_.store(model);
}

absl::StatusOr<InferenceService::Engine> InferenceService::engine() const {
  const Model* model = model_.load();
  if (model == nullptr) return absl::UnavailableError("the worker is still loading its model");
  return Engine{model, scheduler_.load()};
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* bytes) {
  const absl::Time received = absl::Now();
  absl::StatusOr<v1::GenerateRequest> request = ParseMessage<v1::GenerateRequest>(*bytes);
  absl::StatusOr<Engine> engine = this->engine();
  absl::StatusOr<GenerateParams> params =
      !engine.ok()    ? absl::StatusOr<GenerateParams>(engine.status())
      : !request.ok() ? absl::StatusOr<GenerateParams>(request.status())
                      : ValidateGenerateRequest(*request, *engine->model, options_.limits, received,
                                                DeadlineOf(*context));
  // Messages carry the request id, the one the server assigned when the client left it empty.
  auto call = std::make_shared<GenerateCall>(
      metrics_, params.ok() ? params->request_id : (request.ok() ? request->request_id() : ""));
  call->Hold(call);
  if (!params.ok()) {
    call->Reject(params.status());
  } else {
    call->Start(*engine->scheduler, *std::move(params));
  }
  // The request's text and its tokenization are freed by now.
  TrimMemorySoon(bytes->Length());
  return call.get();
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const grpc::ByteBuffer* request,
                                                     grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = Answer(context, TokenizeText(*request), response);
  TrimMemorySoon(request->Length());
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::GetModelInfo(grpc::CallbackServerContext* context,
                                                         const grpc::ByteBuffer* request,
                                                         grpc::ByteBuffer* response) {
  return Answer(context, ModelInfo(*request), response);
}

grpc::ServerUnaryReactor* InferenceService::Abort(grpc::CallbackServerContext* context,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* response) {
  return Answer(context, AbortRequest(*request), response);
}

absl::StatusOr<v1::TokenizeResponse> InferenceService::TokenizeText(
    const grpc::ByteBuffer& bytes) const {
  ENGRAM_ASSIGN_OR_RETURN(Engine engine, this->engine());
  ENGRAM_ASSIGN_OR_RETURN(v1::TokenizeRequest request, ParseMessage<v1::TokenizeRequest>(bytes));
  const Tokenizer& tokenizer = engine.model->tokenizer();
  auto ids = tokenizer.Encode(request.text(), request.add_special_tokens());
  if (!ids.ok()) return absl::InvalidArgumentError(ids.status().message());
  v1::TokenizeResponse response;
  for (uint32_t id : *ids) {
    response.add_ids(id);
    response.add_tokens(tokenizer.IdToToken(id).value_or(""));
  }
  return response;
}

absl::StatusOr<v1::GetModelInfoResponse> InferenceService::ModelInfo(
    const grpc::ByteBuffer& bytes) const {
  ENGRAM_ASSIGN_OR_RETURN(Engine engine, this->engine());
  ENGRAM_RETURN_IF_ERROR(ParseMessage<v1::GetModelInfoRequest>(bytes).status());
  const ModelConfig& c = engine.model->config();
  v1::GetModelInfoResponse response;
  response.set_model(engine.model->name());
  response.set_vocab_size(c.vocab_size);
  response.set_max_context(c.max_position_embeddings);
  response.set_num_layers(c.num_hidden_layers);
  response.set_hidden_size(c.hidden_size);
  for (int layer : c.engram.layer_ids) response.add_engram_layer_ids(layer);
  if (!c.eos_token_ids.empty()) response.set_eos_token_id(c.eos_token_ids[0]);
  for (uint32_t id : c.eos_token_ids) response.add_eos_token_ids(id);
  response.set_backend(options_.backend);
  response.set_max_context_tokens(options_.limits.max_context_tokens);
  response.set_memory_tier(options_.memory_tier_address);
  return response;
}

absl::StatusOr<v1::AbortResponse> InferenceService::AbortRequest(
    const grpc::ByteBuffer& bytes) const {
  ENGRAM_ASSIGN_OR_RETURN(Engine engine, this->engine());
  ENGRAM_ASSIGN_OR_RETURN(v1::AbortRequest request, ParseMessage<v1::AbortRequest>(bytes));
  if (request.request_id().empty()) return absl::InvalidArgumentError("request_id is required");
  v1::AbortResponse response;
  response.set_found(engine.scheduler->Abort(request.request_id()));
  return response;
}

}  // namespace engram
