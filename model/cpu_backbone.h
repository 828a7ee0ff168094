// The decoder-only transformer with Engram modules, on the CPU in f32: the reference backend of
// the Backbone interface (model/backbone.h).
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
#include "model/backbone.h"
#include "model/kv_cache.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace engram {

class Model;
class EngramModule;      // model/engram_module.h
struct EngramConvState;  // model/engram_module.h
class ThreadPool;        // model/thread_pool.h

// The CPU backbone's sequence state: a KV cache that grows on the heap, the Engram conv states.
class CpuSequenceState : public SequenceState {
 public:
  ~CpuSequenceState() override;

 private:
  friend class CpuBackbone;
  CpuSequenceState(const ModelConfig& config, int max_tokens);

  KvCache kv_;
  // One per Engram layer index; null entries when the conv is disabled (engram_kernel_size 0).
  std::vector<std::unique_ptr<EngramConvState>> conv_;
};

struct CpuBackboneOptions {
  // Threads for the linear layers (including the caller's). 0 = hardware concurrency, at most 8.
  int threads = 0;
};

class CpuBackbone : public Backbone {
 public:
  // `model` must outlive the backbone.
  explicit CpuBackbone(const Model& model, CpuBackboneOptions options = {});
  // Without a Model (tests, golden checks): config, backbone weights and one Engram module per
  // entry of config.engram.layer_ids, all borrowed.
  CpuBackbone(const ModelConfig& config, const BackboneWeights& weights,
              std::vector<const EngramModule*> engram_modules, CpuBackboneOptions options = {});
  ~CpuBackbone() override;
  CpuBackbone(const CpuBackbone&) = delete;
  CpuBackbone& operator=(const CpuBackbone&) = delete;

  // ---- Backbone ----
  const ModelConfig& config() const override { return config_; }
  std::string device_name() const override { return "cpu"; }
  // Memory grows with use, not with max_tokens.
  std::unique_ptr<SequenceState> NewSequence(int max_tokens) override;
  // Unbounded: the cache grows on the heap.
  KvCapacity kv_capacity() const override { return KvCapacity{}; }
  int64_t BlocksNeeded(const SequenceState&, int) const override { return 0; }
  absl::Status Reserve(SequenceState&, int) override { return absl::OkStatus(); }
  // Forward into logits, then each item's sampler (model/sampler.h) on its row.
  absl::Status Step(absl::Span<const BatchItem> items, EngramRowSource& rows,
                    StepOutput* out) override;

  // The logits half of Step: runs the batch and writes the next-token logits of each item's last token to logits[item * vocab].
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
  std::vector<float> step_logits_;  // Step's [items, vocab] when the caller wants none
};

}  // namespace engram

#endif  // ENGRAM_MODEL_CPU_BACKBONE_H_
