// InferenceService: engram.v1.Inference over the gRPC callback API
// (proto/engram/v1/inference.proto).
//
// Generate validates the request (server/request.h), submits it to the Scheduler and streams the
// scheduler's events back as GenerateResponse messages. The scheduler never waits for a slow
// client: events queue in the call's outbox and are merged into one message while a write is in
// flight. A client that goes away (or whose deadline passes) cancels its request at the next step
// boundary; Abort ends one by request id.
//
// This file and memory_tier's service are the only places that turn an absl::Status into a gRPC
// status (common/grpc_status.h). Until Attach() is called (while the model loads) every method
// answers UNAVAILABLE.
//
// The methods take their requests as bytes and parse them here: when gRPC's callback handlers
// cannot parse a request (garbage, or a string field that is not UTF-8) they answer UNIMPLEMENTED
// with no message, which tells the client nothing; here it is INVALID_ARGUMENT naming the message.
#ifndef ENGRAM_SERVER_INFERENCE_SERVICE_H_
#define ENGRAM_SERVER_INFERENCE_SERVICE_H_

#include <atomic>
#include <string>

#include "engram/v1/inference.grpc.pb.h"
#include "server/request.h"

namespace engram {

class Model;
class Scheduler;
class WorkerMetrics;

struct InferenceServiceOptions {
  RequestLimits limits;
  // Reported by GetModelInfo.
  std::string backend = "cpu";
  std::string memory_tier_address;
};

// engram.v1.Inference with every method taking and returning serialized messages.
using RawInferenceService = v1::Inference::WithRawCallbackMethod_Generate<
    v1::Inference::WithRawCallbackMethod_Tokenize<v1::Inference::WithRawCallbackMethod_GetModelInfo<
        v1::Inference::WithRawCallbackMethod_Abort<v1::Inference::Service>>>>;

class InferenceService final : public RawInferenceService {
 public:
  InferenceService(WorkerMetrics& metrics, InferenceServiceOptions options);

  // Starts answering with `model` and `scheduler` (both must outlive the gRPC server). Once.
  void Attach(const Model* model, Scheduler* scheduler);

  // engram.v1.GenerateRequest in, a stream of engram.v1.GenerateResponse out.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  // The unary methods: their engram.v1 request in `request`, the response into `response`.
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;

 private:
  struct Engine {
    const Model* model;
    Scheduler* scheduler;
  };
  // The attached engine, or UNAVAILABLE while loading.
  absl::StatusOr<Engine> engine() const;
  // The unary methods' work; errors become the call's status.
  absl::StatusOr<v1::TokenizeResponse> TokenizeText(const grpc::ByteBuffer& request) const;
  absl::StatusOr<v1::GetModelInfoResponse> ModelInfo(const grpc::ByteBuffer& request) const;
  absl::StatusOr<v1::AbortResponse> AbortRequest(const grpc::ByteBuffer& request) const;

  WorkerMetrics& metrics_;
  const InferenceServiceOptions options_;
  std::atomic<const Model*> model_{nullptr};
  std::atomic<Scheduler*> scheduler_{nullptr};
};

}  // namespace engram

#endif  // ENGRAM_SERVER_INFERENCE_SERVICE_H_
