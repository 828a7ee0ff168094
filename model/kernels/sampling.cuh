// Next-token sampling on the GPU: only the chosen ids go back to the host.
//
// The semantics are model/sampler.h's exactly, with the request's uniform draw made on the host
// (Sampler::NextUniform, one per sampled token) and passed in:
//   temperature == 0: the largest logit, the lowest id among equals (NaN never wins);
//   temperature  > 0: weights exp((logit - max) / temperature); with top_k = 0 and top_p = 1 the
//     candidates are all ids in id order; otherwise they are sorted by descending logit (ties:
//     lower id first), cut to top_k, then to the shortest prefix whose weight reaches top_p of the
//     total; the first candidate whose running weight sum exceeds uniform * total is chosen.
// Sums run in f32 on the GPU (double on the CPU), so a draw within rounding of a boundary may pick
// the neighbouring id; greedy is exact.
#ifndef ENGRAM_MODEL_KERNELS_SAMPLING_CUH_
#define ENGRAM_MODEL_KERNELS_SAMPLING_CUH_

#include <cstddef>

#include "model/kernels/common.cuh"

namespace engram::kernels {

struct SampleParams {
  float temperature = 0.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  float uniform = 0.0f;  // in [0, 1)
};

struct SampleArgs {
  const float* logits = nullptr;        // [B, V] f32
  const SampleParams* params = nullptr;  // [B], device memory
  int B = 0;
  int V = 0;
  int32_t* tokens = nullptr;  // [B] out, device memory
  // Whether any row has temperature > 0 and (top_k > 0 or top_p < 1): only then are rows sorted.
  bool any_sorted = false;
  // SampleWorkspaceBytes(B, V) bytes of device memory.
  void* workspace = nullptr;
};

size_t SampleWorkspaceBytes(int B, int V);

absl::Status LaunchSample(const SampleArgs& args, cudaStream_t stream);

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_SAMPLING_CUH_
