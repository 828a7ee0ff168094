#include "server/request.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "model/engram_constants.h"
#include "model/model.h"
#include "model/tokenizer.h"

namespace engram {
namespace {

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

// The most bytes of text one token of `tokenizer` stands for (its longest decoded token), computed
// once per tokenizer.
size_t MaxTokenBytes(const Tokenizer& tokenizer) {
  static absl::Mutex mu(absl::kConstInit);
  static auto* cache = new absl::flat_hash_map<const Tokenizer*, size_t>();
  absl::MutexLock lock(&mu);
  auto it = cache->find(&tokenizer);
  if (it != cache->end()) return it->second;
  size_t longest = 1;
  for (uint32_t id = 0; id < tokenizer.size(); ++id) {
    const uint32_t one[1] = {id};
    longest = std::max(longest, tokenizer.Decode(one).size());
  }
  (*cache)[&tokenizer] = longest;
  return longest;
}

absl::Status CheckPromptLength(size_t tokens, const RequestLimits& limits) {
  if (tokens < static_cast<size_t>(limits.max_context_tokens)) return absl::OkStatus();
  return Invalid(absl::StrCat("prompt has ", tokens, " tokens; the context window is ",
                              limits.max_context_tokens, " tokens, so a prompt may have at most ",
                              limits.max_context_tokens - 1));
}

absl::StatusOr<std::vector<uint32_t>> ResolvePrompt(const v1::GenerateRequest& request,
                                                    const Model& model,
                                                    const RequestLimits& limits) {
  std::vector<uint32_t> prompt;
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (request.text().empty()) return Invalid("prompt text is empty");
      // Refused before tokenizing: no token covers more than MaxTokenBytes bytes of text, so a
      // text longer than the context times that cannot fit, whatever it says.
      if (const size_t limit = static_cast<size_t>(limits.max_context_tokens) *
                               MaxTokenBytes(model.tokenizer());
          request.text().size() > limit) {
        return Invalid(absl::StrCat("prompt text has ", request.text().size(),
                                    " bytes; the context window of ", limits.max_context_tokens,
                                    " tokens holds at most ", limit, " bytes of text"));
      }
      auto ids = model.tokenizer().Encode(request.text(), /*add_special_tokens=*/false);
      if (!ids.ok()) return Invalid(absl::StrCat("prompt text: ", ids.status().message()));
      prompt = *std::move(ids);
      if (prompt.empty()) return Invalid("prompt text has no tokens");
      if (absl::Status s = CheckPromptLength(prompt.size(), limits); !s.ok()) return s;
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      if (request.token_ids().ids().empty()) return Invalid("prompt token_ids is empty");
      // Before copying and the checks below (Compress copies again): a request may carry
      // millions of ids.
      if (absl::Status s = CheckPromptLength(request.token_ids().ids_size(), limits); !s.ok()) {
        return s;
      }
      prompt.assign(request.token_ids().ids().begin(), request.token_ids().ids().end());
      break;
    default:
      return Invalid("prompt is required: set text or token_ids");
  }
  const ModelConfig& config = model.config();
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] >= static_cast<uint32_t>(config.vocab_size)) {
      return Invalid(absl::StrCat("prompt token_ids[", i, "] = ", prompt[i],
                                  " is out of range [0, ", config.vocab_size, ")"));
    }
  }
  if (config.has_engram()) {
    // Ids inside the vocabulary can still be unassigned in the tokenizer (no Engram key).
    auto compressed = model.engram_constants().Compress(prompt);
    if (!compressed.ok()) return Invalid(absl::StrCat("prompt: ", compressed.status().message()));
  }
  return prompt;
}

absl::Status ResolveSampling(const v1::SamplingParams& in, SamplingParams* out) {
  if (!std::isfinite(in.temperature()) || in.temperature() < 0) {
    return Invalid(absl::StrCat("sampling.temperature must be >= 0, got ", in.temperature()));
  }
  out->temperature = in.temperature();
  if (in.top_k() > static_cast<uint32_t>(INT32_MAX)) return Invalid("sampling.top_k is too large");
  out->top_k = static_cast<int>(in.top_k());
  if (in.has_top_p()) {
    if (!(in.top_p() > 0.0f && in.top_p() <= 1.0f)) {
      return Invalid(absl::StrCat("sampling.top_p must be in (0, 1], got ", in.top_p()));
    }
    out->top_p = in.top_p();
  }
  out->seed = in.has_seed() ? in.seed() : absl::Uniform<uint64_t>(absl::BitGen());
  return ValidateSamplingParams(*out);
}

absl::Status ResolveStopping(const v1::StoppingCriteria& in, const ModelConfig& config,
                             const RequestLimits& limits, StopConditions* out) {
  out->max_tokens = in.max_tokens() == 0
                        ? limits.default_max_tokens
                        : static_cast<int>(std::min<uint32_t>(in.max_tokens(), INT32_MAX));
  if (in.stop_size() > limits.max_stop_strings) {
    return Invalid(absl::StrCat("stopping.stop has ", in.stop_size(), " strings; at most ",
                                limits.max_stop_strings, " are allowed"));
  }
  for (int i = 0; i < in.stop_size(); ++i) {
    const std::string& s = in.stop(i);
    if (s.empty()) return Invalid(absl::StrCat("stopping.stop[", i, "] is empty"));
    if (static_cast<int>(s.size()) > limits.max_stop_string_bytes) {
      return Invalid(absl::StrCat("stopping.stop[", i, "] is longer than ",
                                  limits.max_stop_string_bytes, " bytes"));
    }
    out->stop_strings.push_back(s);
  }
  for (int i = 0; i < in.stop_token_ids_size(); ++i) {
    if (in.stop_token_ids(i) >= static_cast<uint32_t>(config.vocab_size)) {
      return Invalid(absl::StrCat("stopping.stop_token_ids[", i, "] = ", in.stop_token_ids(i),
                                  " is out of range [0, ", config.vocab_size, ")"));
    }
    out->stop_token_ids.push_back(in.stop_token_ids(i));
  }
  out->eos_token_ids = config.eos_token_ids;
  out->ignore_eos = in.ignore_eos();
  return absl::OkStatus();
}

}  // namespace

std::string NewRequestId() {
  static thread_local absl::BitGen gen;
  return absl::StrFormat("gen-%016x", absl::Uniform<uint64_t>(gen));
}

absl::StatusOr<GenerateParams> ValidateGenerateRequest(const v1::GenerateRequest& request,
                                                       const Model& model,
                                                       const RequestLimits& limits,
                                                       absl::Time received, absl::Time deadline) {
  GenerateParams p;
  if (static_cast<int>(request.request_id().size()) > limits.max_request_id_bytes) {
    return Invalid(
        absl::StrCat("request_id is longer than ", limits.max_request_id_bytes, " bytes"));
  }
  p.request_id = request.request_id().empty() ? NewRequestId() : request.request_id();
  auto prompt = ResolvePrompt(request, model, limits);
  if (!prompt.ok()) return prompt.status();
  p.prompt = *std::move(prompt);
  absl::Status s = ResolveSampling(request.sampling(), &p.sampling);
  if (!s.ok()) return s;
  s = ResolveStopping(request.stopping(), model.config(), limits, &p.stop);
  if (!s.ok()) return s;
  p.skip_special_tokens = request.skip_special_tokens();
  p.received = received;
  p.deadline = deadline;
  return p;
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return v1::FINISH_REASON_UNSPECIFIED;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kContext:
      return v1::FINISH_REASON_CONTEXT;
    case FinishReason::kAborted:
      return v1::FINISH_REASON_ABORTED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

}  // namespace engram
