// Chooses and builds the backbone of a model: `--device cuda|cpu|auto` on engram-worker and
// `engram model run`.
#ifndef ENGRAM_MODEL_BACKBONE_FACTORY_H_
#define ENGRAM_MODEL_BACKBONE_FACTORY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/backbone.h"

namespace engram {

class Model;

struct BackboneOptions {
  // "cuda", "cpu" or "auto" (cuda when this build has CUDA and a GPU is visible, else cpu).
  std::string device = "auto";
  // CPU backbone threads (0 = its default).
  int threads = 0;
  // CUDA backbone: the share of the GPU's memory it may fill (the KV cache takes what weights and
  // workspace leave), the most sequences and tokens of one step, whether decode steps replay CUDA
  // graphs, whether few-row linear layers use the own GEMV kernel (model/cuda/gemm.h).
  double gpu_memory_fraction = 0.9;
  int max_batch_sequences = 256;
  int max_step_tokens = 8192;
  bool cuda_graphs = true;
  bool gemv = true;
  // CUDA backbone: empty, or one table per Engram layer that the GPU reads by row id (the memory
  // tier's resident arenas, with an optional HBM hot-row cache); row sources may then answer with
  // row ids. Refused (INVALID_ARGUMENT) for the CPU backbone, which reads rows by value only.
  std::vector<EngramDeviceTable> engram_tables;
};

// True when this build has the CUDA backbone and a CUDA device is visible.
bool CudaDeviceVisible();

// The backbone for `model` (which must outlive it). FAILED_PRECONDITION for "cuda" when the build
// has no CUDA or no device is visible; INVALID_ARGUMENT for an unknown device name.
absl::StatusOr<std::unique_ptr<Backbone>> CreateBackbone(const Model& model,
                                                         const BackboneOptions& options);

}  // namespace engram

#endif  // ENGRAM_MODEL_BACKBONE_FACTORY_H_
