// Linear layers on the GPU: out[T, N] (f32) = x[T, K] (bf16) . w[N, K]^T (bf16), accumulated in
// f32. Through cuBLASLt, except few-row shapes (T <= kernels::kGemvMaxRows: decode at small
// batches), which go to the project's own GEMV kernel (model/kernels/gemv.cuh) when `gemv` is on:
// there a linear layer is one pass over its weights and the kernel's only job is to read them at
// the HBM's rate (docs/benchmarks.md compares the two at B=1). The cuBLASLt algorithm of each
// (T, N, K) is chosen once by its heuristic and cached, so a step pays only the launch. The
// workspace is allocated once, which also keeps the calls capturable into CUDA graphs.
#ifndef ENGRAM_MODEL_CUDA_GEMM_H_
#define ENGRAM_MODEL_CUDA_GEMM_H_

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <memory>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/cuda/device_buffer.h"

namespace engram {

class Gemm {
 public:
  static absl::StatusOr<std::unique_ptr<Gemm>> Create(bool gemv = true,
                                                       size_t workspace_bytes = 32 << 20);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // out[T, N] = x[T, K] . w[N, K]^T, all row-major; out is overwritten. T may be 0 (no-op).
  absl::Status Run(const __nv_bfloat16* x, const __nv_bfloat16* w, int T, int N, int K, float* out,
                   cudaStream_t stream);

 private:
  struct Plan;
  Gemm() = default;
  absl::StatusOr<const Plan*> PlanFor(int T, int N, int K);

  bool gemv_ = true;
  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<uint8_t> workspace_;
  absl::flat_hash_map<std::tuple<int, int, int>, std::unique_ptr<Plan>> plans_;
};

}  // namespace engram

#endif  // ENGRAM_MODEL_CUDA_GEMM_H_
