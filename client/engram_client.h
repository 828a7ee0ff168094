// EngramClient: the C++ client library of engram-worker's public API (engram.v1.Inference).
//
// A thin layer over the generated stub: one channel, a default per-call deadline, absl::Status
// results (through the one conversion in common/grpc_status.h) and a callback for the streamed
// Generate messages.
//
//   ENGRAM_ASSIGN_OR_RETURN(auto client, EngramClient::Connect("127.0.0.1:50051"));
//   engram::v1::GenerateRequest request;
//   request.set_text("The capital of France is");
//   request.mutable_stopping()->set_max_tokens(32);
//   absl::Status s = client->Generate(request, [](const engram::v1::GenerateResponse& r) {
//     std::cout << r.text() << std::flush;
//     return true;  // false cancels the call (the server sees the client go away)
//   });
//
// Thread-safe: one client may serve calls from many threads (a gRPC channel multiplexes them).
#ifndef ENGRAM_CLIENT_ENGRAM_CLIENT_H_
#define ENGRAM_CLIENT_ENGRAM_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engram/v1/inference.grpc.pb.h"
#include "grpcpp/channel.h"

namespace engram {

struct EngramClientOptions {
  // Deadline of each call, from its start; InfiniteDuration() = none. Default 5 minutes.
  absl::Duration timeout = absl::Minutes(5);
  // Wait for the server to become reachable instead of failing fast when it is not (gRPC
  // wait_for_ready). Default false.
  bool wait_for_ready = false;
};

// Everything one Generate call returned, collected (GenerateAll).
struct GenerateResult {
  std::string request_id;
  std::vector<uint32_t> token_ids;
  std::string text;
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
  // Number of streamed messages.
  int messages = 0;
};

class EngramClient {
 public:
  // Creates a channel to `address` (host:port). Does not wait for the server; calls fail with
  // UNAVAILABLE while it is unreachable (unless wait_for_ready).
  static absl::StatusOr<std::unique_ptr<EngramClient>> Connect(const std::string& address,
                                                               EngramClientOptions options = {});

  // Streams a generation: `on_response` runs for every message, in order, on the calling thread;
  // returning false cancels the call (Generate then returns CANCELLED). Returns the call's final
  // status: OK after the last message (finish_reason set), otherwise the server's error.
  absl::Status Generate(const v1::GenerateRequest& request,
                        const std::function<bool(const v1::GenerateResponse&)>& on_response);
  // Generate, collecting the stream.
  absl::StatusOr<GenerateResult> GenerateAll(const v1::GenerateRequest& request);

  absl::StatusOr<v1::TokenizeResponse> Tokenize(const std::string& text,
                                                bool add_special_tokens = false);
  absl::StatusOr<v1::GetModelInfoResponse> GetModelInfo();
  // True when a running or queued request with this id was found and cancelled.
  absl::StatusOr<bool> Abort(const std::string& request_id);
  // grpc.health.v1 Check of `service` ("" = the whole server): true when SERVING.
  absl::StatusOr<bool> IsServing(const std::string& service = "");

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  EngramClient(std::shared_ptr<grpc::Channel> channel, EngramClientOptions options);
  void Prepare(grpc::ClientContext* context) const;

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
  EngramClientOptions options_;
};

}  // namespace engram

#endif  // ENGRAM_CLIENT_ENGRAM_CLIENT_H_
