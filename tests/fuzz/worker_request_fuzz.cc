// Fuzz target: the worker's gRPC request path before scheduling (server/inference_service.cc):
// the raw request bytes parsed as the method's message (common/grpc_message.h ParseMessage, as
// the raw methods do) and validated against the demo model (server/request.cc
// ValidateGenerateRequest: text tokenized, token ids checked, sampling and stopping resolved) or
// tokenized (Tokenize).
//
// Input: METHOD_BYTE then the serialized request. METHOD_BYTE % 3: 0 Generate, 1 Tokenize,
// 2 Abort (parse only). The model is models/demo-cpu, loaded once.
#include <grpc/grpc.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "common/grpc_message.h"
#include "engram/v1/inference.pb.h"
#include "grpcpp/support/byte_buffer.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "server/request.h"

namespace {

const engram::Model& DemoModel() {
  static const engram::Model* model = [] {
    grpc_init();  // ByteBuffer and Slice use gRPC's core
    auto m = engram::Model::Load(ENGRAM_FUZZ_DEMO_MODEL);
    if (!m.ok()) std::abort();
    return m->release();
  }();
  return *model;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  (void)DemoModel();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const engram::Model& model = DemoModel();
  grpc::Slice slice(data + 1, size - 1);
  const grpc::ByteBuffer bytes(&slice, 1);
  switch (data[0] % 3) {
    case 0: {
      auto request = engram::ParseMessage<engram::v1::GenerateRequest>(bytes);
      if (!request.ok()) return 0;
      engram::RequestLimits limits;
      limits.max_context_tokens = model.config().max_position_embeddings;
      const absl::Time now = absl::Now();
      auto params = engram::ValidateGenerateRequest(*request, model, limits, now,
                                                    now + absl::Seconds(30));
      if (params.ok()) {
        // What the scheduler trusts after validation.
        if (params->prompt.empty() ||
            params->prompt.size() >= static_cast<size_t>(limits.max_context_tokens) ||
            params->stop.max_tokens < 1) {
          __builtin_trap();
        }
        for (uint32_t id : params->prompt) {
          if (id >= static_cast<uint32_t>(model.config().vocab_size)) __builtin_trap();
        }
      }
      break;
    }
    case 1: {
      auto request = engram::ParseMessage<engram::v1::TokenizeRequest>(bytes);
      if (!request.ok()) return 0;
      (void)model.tokenizer().Encode(request->text(), request->add_special_tokens());
      break;
    }
    default:
      (void)engram::ParseMessage<engram::v1::AbortRequest>(bytes);
      break;
  }
  return 0;
}
