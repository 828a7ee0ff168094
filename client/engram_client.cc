#include "client/engram_client.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace engram {

EngramClient::EngramClient(std::shared_ptr<grpc::Channel> channel, EngramClientOptions options)
    : channel_(std::move(channel)), stub_(v1::Inference::NewStub(channel_)), options_(options) {}

absl::StatusOr<std::unique_ptr<EngramClient>> EngramClient::Connect(const std::string& address,
                                                                    EngramClientOptions options) {
  if (address.empty() || address.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("server address \"", address, "\" is not host:port"));
  }
  grpc::ChannelArguments args;
  // Prompts can be long; the default 4 MiB receive limit is plenty for responses.
  args.SetMaxSendMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  return std::unique_ptr<EngramClient>(new EngramClient(std::move(channel), options));
}

void EngramClient::Prepare(grpc::ClientContext* context) const {
  if (options_.timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  }
  context->set_wait_for_ready(options_.wait_for_ready);
}

absl::Status EngramClient::Generate(
    const v1::GenerateRequest& request,
    const std::function<bool(const v1::GenerateResponse&)>& on_response) {
  grpc::ClientContext context;
  Prepare(&context);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub_->Generate(&context, request);
  v1::GenerateResponse response;
  bool cancelled = false;
  while (reader->Read(&response)) {
    if (!on_response(response)) {
      cancelled = true;
      context.TryCancel();
      break;
    }
  }
  // After TryCancel the stream must still be drained before Finish.
  while (cancelled && reader->Read(&response)) {
  }
  grpc::Status status = reader->Finish();
  if (cancelled) return absl::CancelledError("Generate cancelled by the caller");
  return FromGrpcStatus(status);
}

absl::StatusOr<GenerateResult> EngramClient::GenerateAll(const v1::GenerateRequest& request) {
  GenerateResult result;
  absl::Status status = Generate(request, [&](const v1::GenerateResponse& r) {
    result.request_id = r.request_id();
    result.token_ids.insert(result.token_ids.end(), r.token_ids().begin(), r.token_ids().end());
    result.text += r.text();
    if (r.finish_reason() != v1::FINISH_REASON_UNSPECIFIED)
      result.finish_reason = r.finish_reason();
    if (r.has_usage()) result.usage = r.usage();
    ++result.messages;
    return true;
  });
  if (!status.ok()) return status;
  return result;
}

absl::StatusOr<v1::TokenizeResponse> EngramClient::Tokenize(const std::string& text,
                                                            bool add_special_tokens) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::TokenizeRequest request;
  request.set_text(text);
  request.set_add_special_tokens(add_special_tokens);
  v1::TokenizeResponse response;
  absl::Status status = FromGrpcStatus(stub_->Tokenize(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::GetModelInfoResponse> EngramClient::GetModelInfo() {
  grpc::ClientContext context;
  Prepare(&context);
  v1::GetModelInfoResponse response;
  absl::Status status =
      FromGrpcStatus(stub_->GetModelInfo(&context, v1::GetModelInfoRequest(), &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<bool> EngramClient::Abort(const std::string& request_id) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::AbortRequest request;
  request.set_request_id(request_id);
  v1::AbortResponse response;
  absl::Status status = FromGrpcStatus(stub_->Abort(&context, request, &response));
  if (!status.ok()) return status;
  return response.found();
}

absl::StatusOr<bool> EngramClient::IsServing(const std::string& service) {
  grpc::ClientContext context;
  Prepare(&context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  auto stub = grpc::health::v1::Health::NewStub(channel_);
  absl::Status status = FromGrpcStatus(stub->Check(&context, request, &response));
  if (!status.ok()) return status;
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

}  // namespace engram
