// Paged causal attention for any even head_dim up to 256: the fallback of the CUDA backbone for
// models whose heads are too narrow for the tensor-core kernels of attention.cuh (the tiny test and
// demo models use head_dim 8 and 16). One kernel serves decode and prefill rows alike; it is
// correct and simple, not fast.
#ifndef ENGRAM_MODEL_KERNELS_ATTENTION_GENERIC_CUH_
#define ENGRAM_MODEL_KERNELS_ATTENTION_GENERIC_CUH_

#include "model/kernels/attention.cuh"

namespace engram::kernels {

struct GenericAttentionArgs {
  const bf16* q = nullptr;  // [T, Nq, D]
  bf16* out = nullptr;      // [T, Nq, D]
  const bf16* k_cache = nullptr;
  const bf16* v_cache = nullptr;
  const int32_t* block_tables = nullptr;  // [items, max_blocks]
  int max_blocks = 0;
  // [T]: item of each row, and the row's position (it attends to positions [0, position]).
  const int32_t* item_of_row = nullptr;
  const int32_t* positions = nullptr;
  int T = 0;
  AttentionShape shape;
};

absl::Status LaunchGenericAttention(const GenericAttentionArgs& args, cudaStream_t stream);

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_ATTENTION_GENERIC_CUH_
