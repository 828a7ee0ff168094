// The Engram module's elementwise part on the GPU (hc_mult = 1), after the value and key
// projections have run as one GEMM of the gathered rows with [W_V; W_K] (model/engram_module.h has
// the formulas and the CPU reference):
//   LaunchEngramGate:  u = a * (v + b_V),  a = sigmoid(sign(s) sqrt(max(|s|, 1e-6))),
//                      s = <RMSNorm1(k + b_K), RMSNorm2(h)> / sqrt(H)       (eps FLT_EPSILON)
//   LaunchEngramConv:  h += u + SiLU(DepthwiseCausalConv(RMSNorm3(u)))      (eps 1e-5)
//                      or h += u when the module has no conv (kernel_size 0)
//   LaunchEngramConvCommit: each live sequence's conv history advances past the step's positions.
// The conv history of a sequence is a device ring of R = (K-1) * dilation rows of H floats holding
// the normalised conv inputs RMSNorm3(u) of its last R positions: position p sits in row p % R;
// zeros stand for positions before the sequence start. The conv of a step reads the rings as they
// were before the step (older positions) and the step's own normalised inputs (positions of the
// step), and writes nothing to the rings; LaunchEngramConvCommit writes them once the whole step is
// known to have succeeded, so a failed sequence keeps its history (the CPU contract of
// EngramConvState).
#ifndef ENGRAM_MODEL_KERNELS_ENGRAM_OPS_CUH_
#define ENGRAM_MODEL_KERNELS_ENGRAM_OPS_CUH_

#include "model/kernels/common.cuh"

namespace engram::kernels {

struct EngramGateArgs {
  const float* vk = nullptr;          // [T, 2H] f32: v in columns [0, H), k in [H, 2H)
  const float* value_bias = nullptr;  // [H] or null
  const float* key_bias = nullptr;    // [H] or null
  const float* key_norm = nullptr;    // [H] norm1 weight
  const float* query_norm = nullptr;  // [H] norm2 weight
  const float* hidden = nullptr;      // [T, H] f32 residual stream before the module
  int T = 0;
  int H = 0;
  float* u = nullptr;  // [T, H] f32 out
};

absl::Status LaunchEngramGate(const EngramGateArgs& args, cudaStream_t stream);

// Rows of the step are grouped by item (sequence): item i owns rows [row_offsets[i],
// row_offsets[i + 1]) at positions start_positions[i] + (row - row_offsets[i]).
struct EngramConvArgs {
  const float* u = nullptr;  // [T, H] from LaunchEngramGate
  float* hidden = nullptr;   // [T, H] f32 residual stream: += Y
  int T = 0;
  int H = 0;
  int kernel_size = 0;  // K; 0 = no conv (then h += u and the other fields are unused)
  int dilation = 1;
  const float* conv_norm = nullptr;    // [H] RMSNorm3 weight
  const float* conv_weight = nullptr;  // [H, K] (PyTorch's [H, 1, K])
  int items = 0;
  const int32_t* row_offsets = nullptr;      // [items + 1]
  const int32_t* start_positions = nullptr;  // [items]
  const int32_t* item_of_row = nullptr;      // [T]
  float* const* histories = nullptr;         // [items] device pointers to the rings
  float* normed = nullptr;  // [T, H] scratch out: RMSNorm3(u), kept for LaunchEngramConvCommit
};

absl::Status LaunchEngramConv(const EngramConvArgs& args, cudaStream_t stream);

// Writes the last min(n_i, R) normalised inputs of each item with live[i] != 0 into its ring
// (same fields as the conv; `normed` is read).
absl::Status LaunchEngramConvCommit(const EngramConvArgs& args, const uint8_t* live,
                                    cudaStream_t stream);

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_ENGRAM_OPS_CUH_
