// Linear layers on the GPU through cuBLASLt: out[T, N] (f32) = x[T, K] (bf16) . w[N, K]^T (bf16),
// accumulated in f32. The algorithm of each (T, N, K) is chosen once by cuBLASLt's heuristic and
// cached, so a step pays only the launch. The workspace is allocated once, which also keeps the
// calls capturable into CUDA graphs.
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
  static absl::StatusOr<std::unique_ptr<Gemm>> Create(size_t workspace_bytes = 32 << 20);
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

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<uint8_t> workspace_;
  absl::flat_hash_map<std::tuple<int, int, int>, std::unique_ptr<Plan>> plans_;
};

}  // namespace engram

#endif  // ENGRAM_MODEL_CUDA_GEMM_H_
