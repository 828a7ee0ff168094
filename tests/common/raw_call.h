// Test helper: one gRPC call with requests given as raw bytes, whatever the method's types, so a
// test can send what a generated stub never would (garbage, a string field that is not UTF-8).
#ifndef ENGRAM_TESTS_COMMON_RAW_CALL_H_
#define ENGRAM_TESTS_COMMON_RAW_CALL_H_

#include <string>
#include <vector>

#include "grpcpp/support/status.h"

namespace engram::testing {

struct RawCallResult {
  grpc::Status status;
  std::vector<std::string> responses;  // every response message, serialized
};

// Calls `method` ("/package.Service/Method") at `address`: writes `requests` in order (stopping if
// the server has ended the call), half-closes, reads every response and returns the final status.
// Works for unary and streaming methods alike; waits at most 10 s.
RawCallResult RawCall(const std::string& address, const std::string& method,
                      const std::vector<std::string>& requests);

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_COMMON_RAW_CALL_H_
