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

class InferenceService final : public v1::Inference::CallbackService {
 public:
  InferenceService(WorkerMetrics& metrics, InferenceServiceOptions options);

  // Starts answering with `model` and `scheduler` (both must outlive the gRPC server). Once.
  void Attach(const Model* model, Scheduler* scheduler);

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::GetModelInfoResponse* response) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const v1::AbortRequest* request,
                                  v1::AbortResponse* response) override;

 private:
  struct Engine {
    const Model* model;
    Scheduler* scheduler;
  };
  // The attached engine, or UNAVAILABLE while loading.
  absl::StatusOr<Engine> engine() const;

  WorkerMetrics& metrics_;
  const InferenceServiceOptions options_;
  std::atomic<const Model*> model_{nullptr};
  std::atomic<Scheduler*> scheduler_{nullptr};
};

}  // namespace engram

#endif  // ENGRAM_SERVER_INFERENCE_SERVICE_H_
