// The decoder-only transformer with Engram modules, on the CPU in f32 (the reference backend).
//
// Per block i (Llama as in docs/architecture.md contract 2; Engram as in docs/engram-reference.md
// §1.5-1.6 with hc_mult = 1):
//   h += Engram_i(rows, h)                  only when i is in engram_layer_ids (before attention)
//   h += o_proj(Attention(RoPE(q), RoPE(k), v) over the KV cache)  of RMSNorm(h)
//   h += down_proj(SiLU(gate_proj(x)) * up_proj(x))               of x = RMSNorm(h)
// then logits = lm_head(RMSNorm(h)) of each item's last token.
//
// A step runs a batch of items (sequences with their new tokens: a prefill chunk or one decode
// token). The linear layers run over all tokens of the batch at once, split across a small thread
// pool; attention and the Engram modules run per item. Every output element is computed in the same
// order whatever the batch or chunking, so a sequence's logits do not depend on its batch-mates or
// on how its prompt was chunked.
#ifndef ENGRAM_MODEL_CPU_BACKBONE_H_
#define ENGRAM_MODEL_CPU_BACKBONE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/kv_cache.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace engram {

class Model;
class EngramModule;      // model/engram_module.h
struct EngramConvState;  // model/engram_module.h
class ThreadPool;        // model/thread_pool.h

// Per-sequence state owned by the scheduler: KV cache, Engram conv states, position. Created by
// CpuBackbone::NewSequence(max_tokens). Not thread-safe; one step at a time per sequence.
class SequenceState {
 public:
  ~SequenceState();
  SequenceState(const SequenceState&) = delete;
  SequenceState& operator=(const SequenceState&) = delete;

  // Tokens already processed (the position of the next token).
  int position() const { return position_; }
  // Most tokens the sequence can ever hold (prompt + generated).
  int max_tokens() const { return max_tokens_; }

 private:
  friend class CpuBackbone;
  SequenceState(const ModelConfig& config, int max_tokens);

  int position_ = 0;
  int max_tokens_;
  KvCache kv_;
  // One per Engram layer index; null entries when the conv is disabled (engram_kernel_size 0).
  std::vector<std::unique_ptr<EngramConvState>> conv_;
};

// One item of a batched step: a sequence and its new tokens (a prefill chunk or one decode token).
struct BatchItem {
  SequenceState* sequence;
  absl::Span<const uint32_t> tokens;
};

// Supplies the Engram rows of an item for an Engram layer. Called by the forward pass exactly when
// it reaches that layer (that is where the worker waits for prefetched rows). Returns [tokens,
// d_mem] f32 rows in (order, head) column order, or an error (e.g. UNAVAILABLE when the memory tier
// is gone) which fails the step for that item only.
//
// Call pattern: from the thread that called Forward, in layer order, for each Engram layer index
// all live items in item order; at most once per (item, layer); never for an item that has already
// failed. The returned span must stay valid until the next Rows call.
class EngramRowSource {
 public:
  virtual ~EngramRowSource() = default;
  virtual absl::StatusOr<absl::Span<const float>> Rows(size_t item, int engram_layer_index) = 0;
};

struct CpuBackboneOptions {
  // Threads for the linear layers (including the caller's). 0 = hardware concurrency, at most 8.
  int threads = 0;
};

class CpuBackbone {
 public:
  // `model` must outlive the backbone.
  explicit CpuBackbone(const Model& model, CpuBackboneOptions options = {});
  // Without a Model (tests, golden checks): config, backbone weights and one Engram module per
  // entry of config.engram.layer_ids, all borrowed.
  CpuBackbone(const ModelConfig& config, const BackboneWeights& weights,
              std::vector<const EngramModule*> engram_modules, CpuBackboneOptions options = {});
  ~CpuBackbone();
  CpuBackbone(const CpuBackbone&) = delete;
  CpuBackbone& operator=(const CpuBackbone&) = delete;

  const ModelConfig& config() const { return config_; }
  int vocab_size() const { return config_.vocab_size; }

  // A fresh sequence that can hold up to `max_tokens` tokens, clamped to [1,
  // max_position_embeddings]. Memory grows with use, not with max_tokens.
  std::unique_ptr<SequenceState> NewSequence(int max_tokens) const;

  // Runs the batch; writes the next-token logits of each item's last token to logits[item * vocab].
  // Per-item failures are reported in item_status (the other items still complete).
  //
  // An item fails with INVALID_ARGUMENT (no tokens, a token id >= vocab_size), OUT_OF_RANGE (the
  // tokens do not fit: position + tokens > max_tokens) or the error its EngramRowSource returned.
  // A successful item's sequence advances by its token count; a failed item's sequence keeps its
  // position and conv states (the step can be retried or the sequence dropped) and its logits are
  // unspecified. The returned Status is not OK only when the call itself is malformed (null
  // pointers, one sequence twice in the batch); then no sequence changes.
  // Not thread-safe: one Forward at a time per backbone (the scheduler's loop thread).
  absl::Status Forward(absl::Span<const BatchItem> items, EngramRowSource& rows, float* logits,
                       std::vector<absl::Status>* item_status);

 private:
  struct Scratch;

  const ModelConfig& config_;
  const BackboneWeights& weights_;
  std::vector<const EngramModule*> engram_modules_;  // [engram layer index]
  std::vector<int> engram_index_of_layer_;           // [layer] -> engram layer index or -1
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Scratch> scratch_;
};

}  // namespace engram

#endif  // ENGRAM_MODEL_CPU_BACKBONE_H_
