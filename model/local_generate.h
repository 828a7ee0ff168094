// In-process reference generation: Model + a Backbone (the CPU one by default) + Sampler, with the Engram rows read
// straight from the model's own safetensors tables (no memory tier, no scheduler).
//
// This is the yardstick of the end-to-end tests: the worker's streamed output must equal
// LocalGenerate token for token under greedy sampling. It follows the same rules as the worker:
// the prompt is prefilled (in chunks of prefill_chunk tokens when set), then one token per step;
// the token ids are hashed with the model's frozen constants (common/ngram_hash.h) and the rows
// decoded to f32 (common/row_format.h); stopping as in model/sampler.h.
#ifndef ENGRAM_MODEL_LOCAL_GENERATE_H_
#define ENGRAM_MODEL_LOCAL_GENERATE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/ngram_hash.h"
#include "model/cpu_backbone.h"
#include "model/model.h"
#include "model/sampler.h"

namespace engram {

// An EngramRowSource over the model's tables (model.layers.{i}.engram.multi_head_embedding.
// embedding.weight, any float dtype) for a batch of sequences. Each sequence carries its own
// hashing history (the last N-1 compressed ids), so rows are right for chunked prefill and decode
// alike.
class TableRowSource : public EngramRowSource {
 public:
  // Hashing history of one sequence: its last N-1 compressed ids (positions before the start
  // hash as the pad id).
  struct History {
    NgramState state;
  };

  static absl::StatusOr<std::unique_ptr<TableRowSource>> Create(const Model& model);
  ~TableRowSource() override;

  std::unique_ptr<History> NewHistory() const;

  // Computes the row ids of a step's items and advances each history by its item's tokens;
  // histories[i] belongs to items[i].sequence. Call once per step, before Forward. INVALID_ARGUMENT
  // for a token id outside the tokenizer's map.
  absl::Status Prepare(absl::Span<const BatchItem> items, absl::Span<History* const> histories);

  // Rows of item `item` for Engram layer index `engram_layer_index`: (tokens, d_mem) f32.
  absl::StatusOr<absl::Span<const float>> Rows(size_t item, int engram_layer_index) override;

 private:
  explicit TableRowSource(const Model& model);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct LocalGenerateOptions {
  SamplingParams sampling;
  StopConditions stop;
  // Prefill the prompt in chunks of this many tokens; 0 = all at once.
  int prefill_chunk = 0;
  // Context window for the sequence; 0 = the model's max_position_embeddings.
  int max_context = 0;
  // Threads of the backbone; 0 = its default.
  int threads = 0;
  // Leave special tokens out of the text (GenerateRequest.skip_special_tokens).
  bool skip_special_tokens = false;
};

struct LocalGenerateResult {
  // Generated ids (without the prompt; an eos / stop token that ended the run is not included).
  std::vector<uint32_t> tokens;
  // Their text (decoded incrementally as the worker streams it), cut before a matched stop string.
  std::string text;
  FinishReason finish_reason = FinishReason::kNone;
};

// Generates from `prompt` (token ids, non-empty, all < vocab_size, shorter than the context) on
// `backbone` (which must run `model`).
absl::StatusOr<LocalGenerateResult> LocalGenerate(const Model& model, Backbone& backbone,
                                                  absl::Span<const uint32_t> prompt,
                                                  const LocalGenerateOptions& options);
// The same on a CpuBackbone of options.threads threads.
absl::StatusOr<LocalGenerateResult> LocalGenerate(const Model& model,
                                                  absl::Span<const uint32_t> prompt,
                                                  const LocalGenerateOptions& options);

}  // namespace engram

#endif  // ENGRAM_MODEL_LOCAL_GENERATE_H_
