// Grouped-query attention over the paged KV cache: a decode kernel (one new token per sequence)
// and a prefill kernel (a chunk of new tokens per sequence, causal, attending to the sequence's
// whole cached prefix). Both read keys and values that LaunchRopeKvAppend already wrote, so a
// chunk's own keys come from the cache too. Query head h reads KV head h / (Nq / Nkv); scale is
// usually 1/sqrt(D). The CPU reference is Attention of model/cpu_ops.h (PagedAttentionReference in
// model/kernels/attention_reference.h lays a paged cache out for it).
#ifndef ENGRAM_MODEL_KERNELS_ATTENTION_CUH_
#define ENGRAM_MODEL_KERNELS_ATTENTION_CUH_

#include <cstddef>

#include "model/kernels/common.cuh"

namespace engram::kernels {

struct AttentionShape {
  int num_heads = 0;     // Nq, a multiple of num_kv_heads
  int num_kv_heads = 0;  // Nkv
  int head_dim = 0;      // D: 64 or 128
  int block_tokens = 0;  // positions per KV block (16, 32 or 64)
  float scale = 0.0f;
};

struct DecodeAttentionArgs {
  const bf16* q = nullptr;  // [B, Nq, D]
  bf16* out = nullptr;      // [B, Nq, D]
  const bf16* k_cache = nullptr;  // one layer's pools (common.cuh)
  const bf16* v_cache = nullptr;
  const int32_t* block_tables = nullptr;  // [B, max_blocks]
  int max_blocks = 0;
  // [B]: tokens in the cache for each sequence, the new one included (>= 1). Sequence b's query is
  // at position context_lens[b] - 1 and attends to positions [0, context_lens[b]).
  const int32_t* context_lens = nullptr;
  int batch = 0;
  // The KV length is split into num_splits parts processed by separate blocks and merged (flash
  // decoding) so that few sequences still fill the GPU. Fixed by the caller per batch size (it must
  // not depend on the context lengths, so that a captured CUDA graph stays valid).
  int num_splits = 1;
  // DecodeAttentionWorkspaceBytes(batch, shape, num_splits) bytes of device memory (unused when
  // num_splits == 1).
  void* workspace = nullptr;
  AttentionShape shape;
};

// A split count that fills `sm_count` SMs for `batch` sequences (1 when the batch already does).
int DecodeAttentionSplits(int batch, const AttentionShape& shape, int sm_count);
size_t DecodeAttentionWorkspaceBytes(int batch, const AttentionShape& shape, int num_splits);

absl::Status LaunchDecodeAttention(const DecodeAttentionArgs& args, cudaStream_t stream);

struct PrefillAttentionArgs {
  // [T, Nq, D]: the step's prefill rows, item after item (item i owns rows
  // [q_offsets[i], q_offsets[i + 1])).
  const bf16* q = nullptr;
  bf16* out = nullptr;  // [T, Nq, D]
  const bf16* k_cache = nullptr;
  const bf16* v_cache = nullptr;
  const int32_t* block_tables = nullptr;  // [items, max_blocks]
  int max_blocks = 0;
  const int32_t* q_offsets = nullptr;  // [items + 1], q_offsets[0] = 0, q_offsets[items] = T
  // [items]: tokens in the cache after this chunk. Row j of item i (chunk length n) is at position
  // context_lens[i] - n + j and attends to positions [0, that position] (causal).
  const int32_t* context_lens = nullptr;
  int items = 0;
  int max_q_len = 0;  // longest chunk (host-known; sizes the grid)
  AttentionShape shape;
};

absl::Status LaunchPrefillAttention(const PrefillAttentionArgs& args, cudaStream_t stream);

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_ATTENTION_CUH_
