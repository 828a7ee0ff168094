// RMSNorm fused with the residual add that precedes it, and the final norm of each item's last
// token.
#ifndef ENGRAM_MODEL_KERNELS_RMS_NORM_CUH_
#define ENGRAM_MODEL_KERNELS_RMS_NORM_CUH_

#include "model/kernels/common.cuh"

namespace engram::kernels {

// For each row t < T of the f32 residual stream h: [T, H]
//   if add:     h[t, :] += add[t, :] (+ bias[:] when bias is not null)
//   if out:     out[t, :] = bf16(h[t, :] / sqrt(mean(h[t, :]^2) + eps) * weight[:])
// add: [T, H] f32 or null; bias: [H] f32 or null (only with add); weight: [H] f32; out: [T, H] bf16
// or null (then only the add happens). The CPU reference is RmsNorm/AddInPlace of model/cpu_ops.h.
absl::Status LaunchAddRmsNorm(float* h, const float* add, const float* bias, const float* weight,
                              float eps, int T, int H, bf16* out, cudaStream_t stream);

// out[b, :] = bf16(RMSNorm(x[rows[b], :]) * weight)      x: [T, H] f32; rows: [B]; out: [B, H].
// The final norm of the last token of each item, gathered for the LM head.
absl::Status LaunchGatherRmsNorm(const float* x, const int32_t* rows, int B, const float* weight,
                                 float eps, int H, bf16* out, cudaStream_t stream);

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_RMS_NORM_CUH_
