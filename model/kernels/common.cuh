// Shared definitions of the CUDA kernels: the bf16 type, the launch-error check every launcher ends
// with, and the paged KV-cache layout the attention and RoPE kernels agree on.
//
// Paged KV cache (model/cuda/kv_cache.h owns the memory). Per layer there is one key pool and one
// value pool, each [num_blocks, Nkv, block_tokens, D] bf16: a block holds block_tokens consecutive
// positions of one sequence, head-major inside the block so that one KV head's tile of a block
// (block_tokens x D) is contiguous. A sequence's block table lists its blocks in position order;
// position p lives in block table[p / block_tokens] at offset p % block_tokens. A token's "slot" is
// block * block_tokens + offset. Block 0 is never handed to a sequence: padded rows of a captured
// decode graph write there.
#ifndef ENGRAM_MODEL_KERNELS_COMMON_CUH_
#define ENGRAM_MODEL_KERNELS_COMMON_CUH_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace engram::kernels {

using bf16 = __nv_bfloat16;

// OK, or INTERNAL naming `what` and the launch error (cudaGetLastError; not asynchronous faults).
inline absl::Status LaunchStatus(absl::string_view what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " launch: ", cudaGetErrorString(err)));
}

// Offset of (block, kv head, offset in block) in a [num_blocks, Nkv, block_tokens, D] pool, in
// elements.
__host__ __device__ inline int64_t KvIndex(int64_t block, int head, int offset, int num_kv_heads,
                                           int block_tokens, int head_dim) {
  return ((block * num_kv_heads + head) * block_tokens + offset) * static_cast<int64_t>(head_dim);
}

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_COMMON_CUH_
