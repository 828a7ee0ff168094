// SwiGLU between the fused gate/up projection and the down projection.
#ifndef ENGRAM_MODEL_KERNELS_SWIGLU_CUH_
#define ENGRAM_MODEL_KERNELS_SWIGLU_CUH_

#include "model/kernels/common.cuh"

namespace engram::kernels {

// out[t, i] = bf16(SiLU(gate_up[t, i]) * gate_up[t, I + i])    gate_up: [T, 2I] f32 (gate columns
// first, then up); out: [T, I] bf16. The CPU reference is SwiGlu of model/cpu_ops.h.
absl::Status LaunchSwiGlu(const float* gate_up, int T, int I, bf16* out, cudaStream_t stream);

// out[i] = bf16(in[i]) for i < n (the Engram rows before their projection GEMM).
absl::Status LaunchToBf16(const float* in, int64_t n, bf16* out, cudaStream_t stream);

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_SWIGLU_CUH_
