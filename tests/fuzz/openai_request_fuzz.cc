// Fuzz target: the OpenAI-compatible HTTP API's request path before scheduling
// (server/openai_api.cc): the body parsed as JSON, read as a completion or chat request
// (ParseCompletionRequest, ParseChatRequest with the ChatML template), and the resulting
// GenerateRequest validated against the demo model (server/request.cc), as OpenAiApi::Generate
// does.
//
// Input: ENDPOINT_BYTE then the body. ENDPOINT_BYTE odd: /v1/chat/completions, even:
// /v1/completions. The model is models/demo-cpu, loaded once.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "model/model.h"
#include "nlohmann/json.hpp"
#include "server/chat_template.h"
#include "server/openai_api.h"
#include "server/request.h"

namespace {

struct Fixture {
  std::unique_ptr<const engram::Model> model;
  absl::StatusOr<engram::ChatTemplate> chat_template = absl::UnknownError("unset");
};

const Fixture& Get() {
  static const Fixture* fixture = [] {
    auto* f = new Fixture();
    auto m = engram::Model::Load(ENGRAM_FUZZ_DEMO_MODEL);
    if (!m.ok()) std::abort();
    f->model = *std::move(m);
    // The ChatML template as a model ships it (the golden file the chat template test uses).
    std::ifstream in(ENGRAM_FUZZ_SOURCE_DIR "/tests/server/testdata/chat_template_golden.json");
    const nlohmann::json golden = nlohmann::json::parse(in, nullptr, false);
    if (golden.is_discarded()) std::abort();
    f->chat_template =
        engram::ChatTemplate::FromSource(golden["templates"]["chatml"].get<std::string>());
    if (!f->chat_template.ok()) std::abort();
    return f;
  }();
  return *fixture;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  (void)Get();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Fixture& f = Get();
  const bool chat = (data[0] & 1) != 0;
  const nlohmann::json body = nlohmann::json::parse(data + 1, data + size, nullptr,
                                                    /*allow_exceptions=*/false);
  if (body.is_discarded()) return 0;
  const std::string model_name = f.model->name();
  absl::StatusOr<engram::OpenAiRequest> parsed =
      chat ? engram::ParseChatRequest(body, model_name, f.chat_template, f.model->tokenizer())
           : engram::ParseCompletionRequest(body, model_name);
  if (!parsed.ok()) {
    (void)engram::OpenAiErrorBody(parsed.status());
    return 0;
  }
  engram::RequestLimits limits;
  limits.max_context_tokens = f.model->config().max_position_embeddings;
  const absl::Time now = absl::Now();
  auto params = engram::ValidateGenerateRequest(parsed->generate, *f.model, limits, now,
                                                absl::InfiniteFuture());
  if (!params.ok()) (void)engram::OpenAiErrorBody(params.status());
  return 0;
}
