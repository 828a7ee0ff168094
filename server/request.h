// The request types of engram-worker: a validated Generate request (GenerateParams), the events the
// scheduler streams back for it (GenerateEvent) and where they go (GenerateSink).
//
// The gRPC GenerateRequest is checked once, here, against the model's limits; everything after
// (scheduler, backbone) trusts GenerateParams. Every problem is INVALID_ARGUMENT with a message
// naming the field, e.g. "prompt has 1030 tokens; the context window is 1024 tokens".
#ifndef ENGRAM_SERVER_REQUEST_H_
#define ENGRAM_SERVER_REQUEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "engram/v1/inference.pb.h"
#include "model/sampler.h"

namespace engram {

class Model;

// A Generate request after validation; what the scheduler runs.
struct GenerateParams {
  // The client's id, or one the server assigned ("gen-<16 hex digits>").
  std::string request_id;
  // Prompt token ids: non-empty, each < vocab_size and known to the Engram token map, and
  // prompt.size() < the context window.
  std::vector<uint32_t> prompt;
  SamplingParams sampling;
  // max_tokens is already resolved (request value or the server default) and >= 1.
  StopConditions stop;
  bool skip_special_tokens = false;
  // When the request arrived, and when it must be done (InfiniteFuture = no deadline).
  absl::Time received = absl::InfinitePast();
  absl::Time deadline = absl::InfiniteFuture();
  // Benchmarks only (never set from a client request): the n-th generated token is replaced by
  // replay_tokens[n] while there is one (teacher forcing), so a sequence decodes a given text and
  // its Engram rows follow that text's n-gram statistics (bench/throughput_bench.cc).
  std::vector<uint32_t> replay_tokens;
};

// Limits a request is validated against.
struct RequestLimits {
  // Context window in tokens (prompt + generated).
  int max_context_tokens = 0;
  // max_tokens of a request that leaves it 0.
  int default_max_tokens = 256;
  // Most stop strings, and the longest one, in bytes.
  int max_stop_strings = 16;
  int max_stop_string_bytes = 256;
  // Longest client-chosen request id, in bytes.
  int max_request_id_bytes = 256;
};

// Validates `request` and resolves it into GenerateParams (tokenizing a text prompt with the
// model's tokenizer, drawing a random seed when none is given). `received` and `deadline` are
// copied into the result.
absl::StatusOr<GenerateParams> ValidateGenerateRequest(const v1::GenerateRequest& request,
                                                       const Model& model,
                                                       const RequestLimits& limits,
                                                       absl::Time received, absl::Time deadline);

// A new server-assigned request id.
std::string NewRequestId();

// What the scheduler tells a request's stream: after each step, the tokens it produced (and
// their text), and once, at the end, the finish reason with usage, or an error.
struct GenerateEvent {
  std::vector<uint32_t> token_ids;
  std::string text;
  // kNone until the last event.
  FinishReason finish_reason = FinishReason::kNone;
  // Set on the last event: OK with finish_reason set, or the error that ended the request.
  absl::Status status;
  bool last = false;
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
};

// Receives a request's events, in order, from the scheduler's loop thread. Exactly one event has
// last = true and nothing follows it. Implementations must not block (the whole batch waits).
class GenerateSink {
 public:
  virtual ~GenerateSink() = default;
  virtual void OnEvent(GenerateEvent event) = 0;
};

// The wire form of a FinishReason.
v1::FinishReason ToProto(FinishReason reason);

}  // namespace engram

#endif  // ENGRAM_SERVER_REQUEST_H_
