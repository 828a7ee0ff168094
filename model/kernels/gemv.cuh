// Linear layers of a few rows (decode at small batches): out[T, N] (f32) = x[T, K] (bf16) .
// w[N, K]^T (bf16), accumulated in f32, for T <= kGemvMaxRows. At these T a linear layer is a pass
// over its weights and nothing else, so what matters is reading them at the HBM's rate; Gemm
// (model/cuda/gemm.h) sends such shapes here and the rest to cuBLASLt. The CPU backbone's linear
// layer is MatMul of model/cpu_ops.h; tests/gpu/gemm_test.cc holds both GPU paths to a
// double-precision product of the same bf16 inputs.
#ifndef ENGRAM_MODEL_KERNELS_GEMV_CUH_
#define ENGRAM_MODEL_KERNELS_GEMV_CUH_

#include "model/kernels/common.cuh"

namespace engram::kernels {

inline constexpr int kGemvMaxRows = 8;

// True when LaunchGemv takes this shape: 1 <= T <= kGemvMaxRows, K a multiple of 8 and x, w
// 16-byte aligned (rows are read as 16-byte words).
bool GemvSupports(const bf16* x, const bf16* w, int T, int K);

// out[t, n] = sum_k x[t, k] * w[n, k], all row-major; out is overwritten. INVALID_ARGUMENT when
// !GemvSupports(x, w, T, K) or N < 1.
absl::Status LaunchGemv(const bf16* x, const bf16* w, int T, int N, int K, float* out,
                        cudaStream_t stream);

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_GEMV_CUH_
