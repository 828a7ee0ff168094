// RoPE on the fused q/k/v projection, fused with the write of k and v into the paged KV cache.
#ifndef ENGRAM_MODEL_KERNELS_ROPE_CUH_
#define ENGRAM_MODEL_KERNELS_ROPE_CUH_

#include <vector>

#include "model/kernels/common.cuh"

namespace engram::kernels {

struct RopeKvAppendArgs {
  // [T, (Nq + 2 Nkv) D] f32: per token the q heads, then the k heads, then the v heads (the output
  // of one GEMM with the concatenated q/k/v weights).
  const float* qkv = nullptr;
  // [(Nq + 2 Nkv) D] f32 added to qkv before RoPE, or null (Llama has none, Qwen2 has q/k/v bias).
  const float* bias = nullptr;
  // [T]: position of each token (RoPE angle and nothing else).
  const int32_t* positions = nullptr;
  // [T]: KV slot of each token (common.cuh): where its k and v are written.
  const int32_t* slots = nullptr;
  // [max_positions, D/2] each: cos and sin of position * theta^(-2i/D) (RopeTable).
  const float* cos = nullptr;
  const float* sin = nullptr;
  int T = 0;
  int num_heads = 0;     // Nq
  int num_kv_heads = 0;  // Nkv
  int head_dim = 0;      // D, even
  int block_tokens = 0;
  // Outputs: q after RoPE, [T, Nq, D] bf16; k (after RoPE) and v into one layer's pools.
  bf16* q_out = nullptr;
  bf16* k_cache = nullptr;
  bf16* v_cache = nullptr;
};

// Llama's rotate_half convention, per head and i < D/2:
//   out[i] = x[i] cos - x[i + D/2] sin;   out[i + D/2] = x[i + D/2] cos + x[i] sin.
// The CPU reference is ApplyRopeAngles of model/cpu_ops.h.
absl::Status LaunchRopeKvAppend(const RopeKvAppendArgs& args, cudaStream_t stream);

// The host tables of RopeKvAppendArgs::cos/sin: [max_positions, head_dim / 2] each, row p holding
// the angles of position p, exactly the values RopeAngles of model/cpu_ops.h computes (it is called
// here), so the GPU rotates with the CPU reference's cos and sin.
void RopeTable(int max_positions, int head_dim, float theta, std::vector<float>* cos,
               std::vector<float>* sin);

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_ROPE_CUH_
