// The decoder-only transformer with Engram modules on one GPU: the Backbone (model/backbone.h)
// the worker runs in production.
//
// Per block l (the same computation as the CPU reference, model/cpu_backbone.h, in bf16 with f32
// accumulation and an f32 residual stream):
//   h += Engram_l(rows, h)                 when l is an Engram layer (before attention)
//   h += o_proj(GQA(RoPE(q), RoPE(k), v))  of x = RMSNorm(h), over the paged KV cache
//   h += down_proj(SiLU(gate(x)) * up(x))  of x = RMSNorm(h)
// then the logits of each item's last token, and the next token sampled on the GPU; only the
// sampled ids come back to the host (the logits too when the caller asks).
//
// Memory. Weights are bf16 in HBM (q/k/v and gate/up fused into one matrix each); norms, biases
// and the Engram module's small vectors are f32. The KV cache is paged (model/kernels/common.cuh):
// blocks of block_tokens positions handed to sequences by a free list; its size is what the
// weights, the activations of the largest step and the workspaces leave of gpu_memory_fraction of
// the device. Activations are sized once for max_step_tokens tokens and max_batch_sequences
// items, so a step allocates nothing.
//
// Steps. The rows of a step are ordered decode items first (one token each), then prefill chunks.
// A step of decode items only is replayed from a CUDA graph captured once per batch-size bucket
// (padded rows compute into the reserved KV block 0 and are discarded). The forward pass is split
// into segments at the Engram layers: the host waits for an Engram layer's rows only when the GPU
// has been handed every layer before it, so the wait overlaps their compute.
#ifndef ENGRAM_MODEL_CUDA_CUDA_BACKBONE_H_
#define ENGRAM_MODEL_CUDA_CUDA_BACKBONE_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/row_format.h"
#include "model/backbone.h"
#include "model/weights.h"

namespace engram {

class Model;
class EngramModule;

// Cumulative count of rows gathered per source (kernels::RowSource order: HBM cache, staging,
// table, missing) for one Engram layer.
struct EngramRowCounts {
  uint64_t hbm = 0, staging = 0, table = 0, missing = 0;
};

struct CudaBackboneOptions {
  // Share of the device's memory the backbone may fill, KV cache included. (0, 1].
  double gpu_memory_fraction = 0.9;
  // Most items (sequences) in one step, and most tokens.
  int max_batch_sequences = 256;
  int max_step_tokens = 8192;
  // Replay pure decode steps from captured CUDA graphs.
  bool cuda_graphs = true;
  // Linear layers of at most kernels::kGemvMaxRows rows through the project's GEMV kernel instead
  // of cuBLASLt (model/cuda/gemm.h).
  bool gemv = true;
  // Positions per KV block: 16, 32 or 64.
  int block_tokens = 32;
  // CUDA device ordinal.
  int device = 0;
  // Empty, or one table per Engram layer (config.engram.layer_ids order): row sources may then
  // answer with row ids (EngramRows::Where::kRowIds).
  std::vector<EngramDeviceTable> engram_tables;
};

class CudaBackbone : public Backbone {
 public:
  // `model` must outlive the backbone.
  static absl::StatusOr<std::unique_ptr<CudaBackbone>> Create(const Model& model,
                                                              const CudaBackboneOptions& options);
  // Without a Model (tests, golden checks): config, backbone weights and one Engram module per
  // entry of config.engram.layer_ids; all are copied to the device, nothing is kept.
  static absl::StatusOr<std::unique_ptr<CudaBackbone>> Create(
      const ModelConfig& config, const BackboneWeights& weights,
      const std::vector<const EngramModule*>& engram_modules, const CudaBackboneOptions& options);
  ~CudaBackbone() override;

  const ModelConfig& config() const override { return config_; }
  std::string device_name() const override { return device_name_; }
  std::unique_ptr<SequenceState> NewSequence(int max_tokens) override;
  KvCapacity kv_capacity() const override;
  int64_t BlocksNeeded(const SequenceState& sequence, int tokens) const override;
  absl::Status Reserve(SequenceState& sequence, int tokens) override;
  absl::Status Step(absl::Span<const BatchItem> items, EngramRowSource& rows,
                    StepOutput* out) override;
  uint64_t graph_replays() const override { return graph_replays_; }

  // Bytes of device memory held by the weights and by the KV cache.
  size_t weight_bytes() const;
  size_t kv_cache_bytes() const;
  // Rows gathered by id so far, per source, for Engram layer index `li`; the HBM cache's rows.
  EngramRowCounts engram_row_counts(int li) const;
  uint64_t hbm_cache_rows(int li) const;

  // Device buffers and step state (cuda_backbone.cc only).
  struct Impl;

 private:
  friend class CudaSequenceState;
  CudaBackbone(const ModelConfig& config, const CudaBackboneOptions& options);

  const ModelConfig config_;
  const CudaBackboneOptions options_;
  std::string device_name_;
  uint64_t graph_replays_ = 0;
  std::unique_ptr<Impl> impl_;
};

}  // namespace engram

#endif  // ENGRAM_MODEL_CUDA_CUDA_BACKBONE_H_
