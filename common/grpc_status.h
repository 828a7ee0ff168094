// The one conversion between absl::Status and grpc::Status (docs/architecture.md pattern 6).
//
// Abseil status codes are the google.rpc codes, so the mapping is one to one. Only the service
// files (memory_tier/memory_tier_service.cc, server/inference_service.cc) and client stubs call it.
#ifndef ENGRAM_COMMON_GRPC_STATUS_H_
#define ENGRAM_COMMON_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace engram {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace engram

#endif  // ENGRAM_COMMON_GRPC_STATUS_H_
