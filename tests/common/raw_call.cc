#include "tests/common/raw_call.h"

#include <chrono>
#include <cstdint>

#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"

namespace engram::testing {

RawCallResult RawCall(const std::string& address, const std::string& method,
                      const std::vector<std::string>& requests) {
  grpc::GenericStub stub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&context, method, &cq);
  // Each operation is waited for before the next; `ok` is false when the server already ended.
  auto wait = [&](intptr_t tag) {
    void* got;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&got, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(got), tag);
    return ok;
  };
  RawCallResult result;
  call->StartCall(reinterpret_cast<void*>(1));
  if (wait(1)) {
    bool open = true;
    for (const std::string& request : requests) {
      grpc::Slice slice(request);
      call->Write(grpc::ByteBuffer(&slice, 1), reinterpret_cast<void*>(2));
      open = wait(2);
      if (!open) break;
    }
    if (open) {
      call->WritesDone(reinterpret_cast<void*>(3));
      wait(3);
    }
    // Every response is read (Finish waits for that).
    for (;;) {
      grpc::ByteBuffer response;
      call->Read(&response, reinterpret_cast<void*>(4));
      if (!wait(4)) break;
      std::vector<grpc::Slice> slices;
      EXPECT_TRUE(response.Dump(&slices).ok());
      std::string& bytes = result.responses.emplace_back();
      for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  call->Finish(&result.status, reinterpret_cast<void*>(5));
  wait(5);
  return result;
}

}  // namespace engram::testing
