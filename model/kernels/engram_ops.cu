// The Engram module's gate and short conv on the GPU (engram_ops.cuh; the CPU reference is
// EngramModule::Forward of model/engram_module.h, hc_mult = 1).
//
// Parallelisation and memory:
//   - Gate: one CTA of 256 threads per token. One pass over the row accumulates the three sums
//     the gate needs, sum(k^2), sum(h^2) and sum((k w1)(h w2)), so the row is read once; one block
//     reduction of the three (CUB), then s = sum((k w1)(h w2)) r1 r2 / sqrt(H), which equals the
//     CPU's <RMSNorm1(k), RMSNorm2(h)> / sqrt(H) (the per-row scales r1, r2 factor out of the dot).
//     A second pass writes u = a (v + b_V).
//   - Conv: two kernels, because a position's conv reads the normalised inputs of up to (K-1) d
//     earlier rows of its item: first one CTA per row writes RMSNorm3(u) to `normed` (f32, and the
//     scratch the commit reads), then one CTA per row and a thread per channel sums the K taps,
//     each from the step's `normed` when the tapped position is in the item's rows of this step,
//     from the item's ring when it is older, or zero before the sequence start. Channels are
//     contiguous in every source, so every tap is a coalesced row read; the rows are reused by
//     K positions and stay in L2.
//   - Commit: one CTA per item copies its last min(n, R) normalised rows into its ring. The conv
//     never writes the rings, so a step that fails before the commit leaves every history as it was
//     (the CPU contract of EngramConvState).
//
// Arithmetic mirrors the CPU: eps FLT_EPSILON for the gate norms and 1e-5 for the conv norm, the
// signed square root clamped at 1e-6, sigmoid 1 / (1 + exp(-x)), taps accumulated in order j =
// 0..K-1 from zero, Y = u + SiLU(acc), h += Y. The sums of squares are f32 trees where the CPU uses
// double (relative difference ~1e-6 at H = 8192).
#include "model/kernels/engram_ops.cuh"

#include <algorithm>
#include <cub/block/block_reduce.cuh>

#include "absl/strings/str_cat.h"

namespace engram::kernels {
namespace {

constexpr int kThreads = 256;
// model/engram_module.h: kEngramGateNormEps (torch.finfo(float32).eps), kEngramConvNormEps and
// kEngramGateClamp. Repeated here because engram_kernels does not depend on the module's library;
// engram_ops_test checks the kernels against EngramModule::Forward at a scale where each eps
// changes the result.
constexpr float kGateNormEps = 1.1920928955078125e-07f;
constexpr float kConvNormEps = 1e-5f;
constexpr float kGateClamp = 1e-6f;

struct GateSums {
  float kk;  // sum of k^2
  float hh;  // sum of h^2
  float kh;  // sum of (k w1)(h w2)
};

struct GateSumsOp {
  __device__ GateSums operator()(const GateSums& a, const GateSums& b) const {
    return GateSums{a.kk + b.kk, a.hh + b.hh, a.kh + b.kh};
  }
};

__device__ __forceinline__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void EngramGateKernel(const float* __restrict__ vk, const float* __restrict__ value_bias,
                                 const float* __restrict__ key_bias,
                                 const float* __restrict__ key_norm,
                                 const float* __restrict__ query_norm,
                                 const float* __restrict__ hidden, int H, float* __restrict__ u) {
  using BlockReduce = cub::BlockReduce<GateSums, kThreads>;
  __shared__ BlockReduce::TempStorage temp;
  __shared__ float gate;
  const int64_t t = blockIdx.x;
  const float* v = vk + t * 2 * H;
  const float* k = v + H;
  const float* h = hidden + t * H;

  GateSums sums{0.0f, 0.0f, 0.0f};
  for (int i = threadIdx.x; i < H; i += kThreads) {
    float key = k[i];
    if (key_bias != nullptr) key += key_bias[i];  // the CPU's key = W_K e + b_K
    const float query = h[i];
    sums.kk += key * key;
    sums.hh += query * query;
    sums.kh += (key * key_norm[i]) * (query * query_norm[i]);
  }
  const GateSums total = BlockReduce(temp).Reduce(sums, GateSumsOp());  // valid in thread 0
  if (threadIdx.x == 0) {
    const float r1 = 1.0f / sqrtf(total.kk / static_cast<float>(H) + kGateNormEps);
    const float r2 = 1.0f / sqrtf(total.hh / static_cast<float>(H) + kGateNormEps);
    const float s = total.kh * r1 * r2 * (1.0f / sqrtf(static_cast<float>(H)));
    // sigmoid(sign(s) sqrt(max(|s|, 1e-6))); sign(0) = 0 gives exactly 0.5.
    const float sign = s > 0.0f ? 1.0f : (s < 0.0f ? -1.0f : 0.0f);
    gate = Sigmoid(sqrtf(fmaxf(fabsf(s), kGateClamp)) * sign);
  }
  __syncthreads();
  const float a = gate;
  float* out = u + t * H;
  for (int i = threadIdx.x; i < H; i += kThreads) {
    float value = v[i];
    if (value_bias != nullptr) value += value_bias[i];
    out[i] = a * value;
  }
}

// normed[t, :] = RMSNorm(u[t, :]) * weight with eps 1e-5.
__global__ void ConvNormKernel(const float* __restrict__ u, const float* __restrict__ weight, int H,
                               float* __restrict__ normed) {
  using BlockSum = cub::BlockReduce<float, kThreads>;
  __shared__ BlockSum::TempStorage temp;
  __shared__ float inv;
  const int64_t t = blockIdx.x;
  const float* x = u + t * H;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < H; i += kThreads) ss += x[i] * x[i];
  const float total = BlockSum(temp).Sum(ss);
  if (threadIdx.x == 0) inv = 1.0f / sqrtf(total / static_cast<float>(H) + kConvNormEps);
  __syncthreads();
  const float r = inv;
  float* out = normed + t * H;
  for (int i = threadIdx.x; i < H; i += kThreads) out[i] = (x[i] * r) * weight[i];
}

// hidden[t, c] += u[t, c] + SiLU(sum_j w[c, j] x(p - (K-1-j) d, c)), p the row's position.
__global__ void ConvKernel(const float* __restrict__ u, float* hidden, int H, int K, int dilation,
                           const float* __restrict__ conv_weight,
                           const int32_t* __restrict__ row_offsets,
                           const int32_t* __restrict__ start_positions,
                           const int32_t* __restrict__ item_of_row, float* const* histories,
                           const float* __restrict__ normed) {
  const int t = blockIdx.x;
  const int item = item_of_row[t];
  const int first_row = row_offsets[item];
  const int64_t start = start_positions[item];
  const int64_t p = start + (t - first_row);
  const int64_t ring = static_cast<int64_t>(K - 1) * dilation;
  // Only read when a tap reaches before the step, which needs ring > 0.
  const float* history = ring > 0 ? histories[item] : nullptr;
  for (int c = threadIdx.x; c < H; c += kThreads) {
    float acc = 0.0f;
    for (int j = 0; j < K; ++j) {
      const int64_t q = p - static_cast<int64_t>(K - 1 - j) * dilation;
      if (q < 0) continue;  // before the sequence start: zero padding
      const float x =
          q >= start ? normed[(first_row + (q - start)) * H + c] : history[(q % ring) * H + c];
      acc += conv_weight[static_cast<int64_t>(c) * K + j] * x;
    }
    const int64_t at = static_cast<int64_t>(t) * H + c;
    const float y = u[at] + acc * Sigmoid(acc);
    hidden[at] += y;
  }
}

// No conv: h += u.
__global__ void AddKernel(const float* __restrict__ u, int64_t n, float* hidden) {
  for (int64_t e = blockIdx.x * int64_t{kThreads} + threadIdx.x; e < n;
       e += int64_t{gridDim.x} * kThreads) {
    hidden[e] += u[e];
  }
}

__global__ void CommitKernel(const float* __restrict__ normed, int H, int64_t ring,
                             const int32_t* __restrict__ row_offsets,
                             const int32_t* __restrict__ start_positions,
                             const uint8_t* __restrict__ live, float* const* histories) {
  const int item = blockIdx.x;
  if (live[item] == 0) return;
  const int first_row = row_offsets[item];
  const int n = row_offsets[item + 1] - first_row;
  const int64_t keep = n < ring ? n : ring;
  const int64_t start = start_positions[item];
  const int64_t first = start + n - keep;  // oldest position copied
  float* history = histories[item];
  for (int64_t e = threadIdx.x; e < keep * H; e += kThreads) {
    const int64_t q = first + e / H;
    const int64_t c = e % H;
    history[(q % ring) * H + c] = normed[(first_row + (q - start)) * H + c];
  }
}

absl::Status CheckConvArgs(const EngramConvArgs& a, absl::string_view what) {
  if (a.T < 0 || a.H < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": need T >= 0 and H >= 1, got T = ", a.T, ", H = ", a.H));
  }
  if (a.kernel_size < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": kernel_size ", a.kernel_size, " < 0"));
  }
  if (a.kernel_size > 0) {
    if (a.dilation < 1) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": dilation ", a.dilation, " < 1"));
    }
    if (a.items < 0 || (a.T > 0 && a.items < 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": ", a.items, " items for ", a.T, " rows"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchEngramGate(const EngramGateArgs& a, cudaStream_t stream) {
  if (a.T < 0 || a.H < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("engram gate: need T >= 0 and H >= 1, got T = ", a.T, ", H = ", a.H));
  }
  if (a.T == 0) return absl::OkStatus();
  if (a.vk == nullptr || a.key_norm == nullptr || a.query_norm == nullptr || a.hidden == nullptr ||
      a.u == nullptr) {
    return absl::InvalidArgumentError("engram gate: null vk, key_norm, query_norm, hidden or u");
  }
  EngramGateKernel<<<a.T, kThreads, 0, stream>>>(a.vk, a.value_bias, a.key_bias, a.key_norm,
                                                 a.query_norm, a.hidden, a.H, a.u);
  return LaunchStatus("engram gate");
}

absl::Status LaunchEngramConv(const EngramConvArgs& a, cudaStream_t stream) {
  absl::Status st = CheckConvArgs(a, "engram conv");
  if (!st.ok()) return st;
  if (a.T == 0) return absl::OkStatus();
  if (a.u == nullptr || a.hidden == nullptr) {
    return absl::InvalidArgumentError("engram conv: null u or hidden");
  }
  if (a.kernel_size == 0) {
    const int64_t n = static_cast<int64_t>(a.T) * a.H;
    const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 132 * 16);
    AddKernel<<<static_cast<int>(blocks), kThreads, 0, stream>>>(a.u, n, a.hidden);
    return LaunchStatus("engram conv (none: h += u)");
  }
  const bool ring = a.kernel_size > 1;  // R = (K-1) d rows of history
  if (a.conv_norm == nullptr || a.conv_weight == nullptr || a.row_offsets == nullptr ||
      a.start_positions == nullptr || a.item_of_row == nullptr || a.normed == nullptr ||
      (ring && a.histories == nullptr)) {
    return absl::InvalidArgumentError(
        "engram conv: null conv_norm, conv_weight, row_offsets, start_positions, item_of_row, "
        "normed or (kernel_size > 1) histories");
  }
  ConvNormKernel<<<a.T, kThreads, 0, stream>>>(a.u, a.conv_norm, a.H, a.normed);
  if (absl::Status norm = LaunchStatus("engram conv norm"); !norm.ok()) return norm;
  ConvKernel<<<a.T, kThreads, 0, stream>>>(a.u, a.hidden, a.H, a.kernel_size, a.dilation,
                                           a.conv_weight, a.row_offsets, a.start_positions,
                                           a.item_of_row, a.histories, a.normed);
  return LaunchStatus("engram conv");
}

absl::Status LaunchEngramConvCommit(const EngramConvArgs& a, const uint8_t* live,
                                    cudaStream_t stream) {
  absl::Status st = CheckConvArgs(a, "engram conv commit");
  if (!st.ok()) return st;
  // No conv, or K = 1 (no history), or nothing in the step: nothing to keep.
  if (a.kernel_size <= 1 || a.T == 0 || a.items == 0) return absl::OkStatus();
  if (live == nullptr || a.normed == nullptr || a.row_offsets == nullptr ||
      a.start_positions == nullptr || a.histories == nullptr) {
    return absl::InvalidArgumentError(
        "engram conv commit: null live, normed, row_offsets, start_positions or histories");
  }
  const int64_t ring = static_cast<int64_t>(a.kernel_size - 1) * a.dilation;
  CommitKernel<<<a.items, kThreads, 0, stream>>>(a.normed, a.H, ring, a.row_offsets,
                                                 a.start_positions, live, a.histories);
  return LaunchStatus("engram conv commit");
}

}  // namespace engram::kernels
