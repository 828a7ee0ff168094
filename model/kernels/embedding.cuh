// Token embedding: the residual stream's first value.
#ifndef ENGRAM_MODEL_KERNELS_EMBEDDING_CUH_
#define ENGRAM_MODEL_KERNELS_EMBEDDING_CUH_

#include "model/kernels/common.cuh"

namespace engram::kernels {

// out[t, :] = f32(table[tokens[t], :])     table: [vocab, H] bf16; tokens: [T] (each < vocab, the
// caller checks); out: [T, H] f32.
absl::Status LaunchEmbedding(const bf16* table, int H, const int32_t* tokens, int T, float* out,
                             cudaStream_t stream);

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_EMBEDDING_CUH_
