// Choosing the next token from logits, and deciding when a generation stops.
//
// Sampling semantics (the order vLLM and Hugging Face apply them):
//   temperature == 0   greedy: the largest logit (the lowest id among equals); no randomness used.
//   temperature  > 0   softmax(logits / temperature), then keep the top_k most likely tokens
//                      (0 = all), then the smallest set of the most likely ones whose probability
//                      reaches top_p (always at least one), renormalise and draw.
// Each request owns a Sampler seeded with its seed; every draw consumes exactly one 64-bit number
// of the request's own generator (SplitMix64), so a request's tokens depend only on its seed and
// its logits: reproducible across runs, machines and batch compositions.
#ifndef ENGRAM_MODEL_SAMPLER_H_
#define ENGRAM_MODEL_SAMPLER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace engram {

struct SamplingParams {
  // 0 = greedy. Must be >= 0 and finite.
  float temperature = 0.0f;
  // Keep only the k most likely tokens; 0 = no limit. Must be >= 0.
  int top_k = 0;
  // Nucleus mass in (0, 1]; 1 = no cut.
  float top_p = 1.0f;
  // Seed of the request's generator.
  uint64_t seed = 0;
};

// INVALID_ARGUMENT naming the field ("temperature must be >= 0, got -1").
absl::Status ValidateSamplingParams(const SamplingParams& params);

// Reusable buffers of SampleWithUniform, so a sampler does not allocate per token.
struct SampleScratch {
  std::vector<uint32_t> order;  // candidate ids
  std::vector<double> probs;    // their weights
};

// The token chosen from `logits` (one value per vocabulary id; must not be empty) for the uniform
// draw u in [0, 1): the whole selection of the semantics above with the randomness taken out, so
// that the GPU sampler (model/kernels/sampling.cuh), which gets u from the host, is tested against
// it. u is not used when the choice is greedy (temperature <= 0 or a single logit).
uint32_t SampleWithUniform(absl::Span<const float> logits, const SamplingParams& params, double u,
                           SampleScratch* scratch);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);

  // The next token from `logits` (one value per vocabulary id; must not be empty). Draws one
  // uniform exactly when the choice is not greedy (temperature > 0 and more than one logit).
  uint32_t Sample(absl::Span<const float> logits);

  // Uniform in [0, 1) with 53 random bits: the request's next draw. Public for the GPU sampler,
  // which makes the same draws on the host and the selection on the device.
  double NextUniform();

  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  uint64_t state_;
  SampleScratch scratch_;
};

// Greedy choice: index of the largest value, the lowest one among equals.
uint32_t ArgMax(absl::Span<const float> logits);

// ---- Stopping ----------------------------------------------------------------------------------

enum class FinishReason {
  kNone,     // still running
  kLength,   // max_tokens generated
  kStop,     // a stop token id or stop string matched
  kEos,      // the model's end-of-sequence token
  kContext,  // the context window is full
  kAborted,  // cancelled by the client
};

// "none", "length", "stop", "eos", "context", "aborted".
absl::string_view FinishReasonName(FinishReason reason);

struct StopConditions {
  // Most tokens to generate; must be >= 1.
  int max_tokens = 16;
  // Ids that end the generation with kStop.
  std::vector<uint32_t> stop_token_ids;
  // The model's end-of-sequence ids (ModelConfig::eos_token_ids); end with kEos unless ignore_eos.
  std::vector<uint32_t> eos_token_ids;
  bool ignore_eos = false;
  // Texts that end the generation with kStop; the matched text is not returned (StopStringMatcher).
  std::vector<std::string> stop_strings;
};

// Checks a newly sampled `token`; `generated` counts the tokens generated so far including it.
// Precedence: eos (unless ignore_eos), then stop token ids, then length. A token that ends the
// generation with kEos or kStop is not part of the output (neither its id nor its text is
// returned); one that reaches max_tokens is.
FinishReason CheckStopToken(const StopConditions& stop, uint32_t token, int generated);

// Watches streamed text for stop strings. Text that could still be the beginning of a stop string
// is held back until it is decided.
class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stop_strings);

  // Appends `piece`; returns the text now safe to emit. On a match sets *stopped and returns the
  // text before the stop string; later calls return nothing.
  std::string Push(absl::string_view piece, bool* stopped);
  // At the end of the generation: the text still held back (empty after a match).
  std::string Flush();

  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  size_t longest_ = 0;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace engram

#endif  // ENGRAM_MODEL_SAMPLER_H_
