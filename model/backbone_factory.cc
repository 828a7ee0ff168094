#include "model/backbone_factory.h"

#include "absl/strings/str_cat.h"
#include "model/cpu_backbone.h"
#include "model/model.h"
#if ENGRAM_HAVE_CUDA
#include <cuda_runtime.h>

#include "model/cuda/cuda_backbone.h"
#endif

namespace engram {

bool CudaDeviceVisible() {
#if ENGRAM_HAVE_CUDA
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) {
    cudaGetLastError();  // no driver: not an error of the caller's
    return false;
  }
  return devices > 0;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Backbone>> CreateBackbone(const Model& model,
                                                         const BackboneOptions& options) {
  std::string device = options.device;
  if (device == "auto") device = CudaDeviceVisible() ? "cuda" : "cpu";
  if (device == "cpu") {
    if (!options.engram_tables.empty()) {
      return absl::InvalidArgumentError(
          "Engram tables read by row id need the CUDA backbone; the CPU backbone reads rows by "
          "value");
    }
    return std::make_unique<CpuBackbone>(model, CpuBackboneOptions{.threads = options.threads});
  }
  if (device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("device \"", options.device, "\" is not cuda, cpu or auto"));
  }
#if ENGRAM_HAVE_CUDA
  if (!CudaDeviceVisible()) {
    return absl::FailedPreconditionError("--device cuda: no CUDA device is visible");
  }
  CudaBackboneOptions cuda;
  cuda.gpu_memory_fraction = options.gpu_memory_fraction;
  cuda.max_batch_sequences = options.max_batch_sequences;
  cuda.max_step_tokens = options.max_step_tokens;
  cuda.cuda_graphs = options.cuda_graphs;
  cuda.gemv = options.gemv;
  cuda.engram_tables = options.engram_tables;
  absl::StatusOr<std::unique_ptr<CudaBackbone>> b = CudaBackbone::Create(model, cuda);
  if (!b.ok()) return b.status();
  return std::unique_ptr<Backbone>(std::move(*b));
#else
  return absl::FailedPreconditionError(
      "--device cuda: this build has no CUDA backbone (built without nvcc)");
#endif
}

}  // namespace engram
