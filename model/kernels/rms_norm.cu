// RMSNorm fused with the residual add before it (LaunchAddRmsNorm), and the gathered final norm
// (LaunchGatherRmsNorm).
//
// Parallelisation: one CTA of 256 threads per row; H (up to 8192) is strided over the threads, so
// a thread owns at most 32 elements. The first pass adds the residual, writes h back and
// accumulates the sum of squares; a block reduction (CUB: warp shuffles, then one shared-memory
// step across the 8 warps) gives the row's mean square in f32, and the second pass re-reads the
// thread's own elements of h (just written by the same thread, so no barrier is needed for them;
// they come from L1/L2, not HBM) and writes the bf16 output. When H is a multiple of 4 and every
// pointer is aligned, the passes use float4 loads/stores and 8-byte bf16 stores; otherwise a
// scalar path handles any H (1, 19, 111...).
//
// Precision: the sum of squares is an f32 tree (per-thread serial, then the reduction); the CPU
// reference sums in double. For H <= 8192 the relative difference of the mean square is ~1e-6,
// far below the bf16 rounding of the output (2^-9).
#include "model/kernels/rms_norm.cuh"

#include <cub/block/block_reduce.cuh>

#include "absl/strings/str_cat.h"

namespace engram::kernels {
namespace {

constexpr int kThreads = 256;
using BlockSum = cub::BlockReduce<float, kThreads>;

// h_row += add_row (+ bias) when add is not null; returns this thread's partial sum of squares of
// the (updated) row. kVec = 4: the pointers are float4-aligned and H % 4 == 0. h is read again
// after this pass, so it is never declared __restrict__ (which could let the compiler read it
// through the non-coherent read-only path).
template <int kVec>
__device__ float AddAndSquares(float* h, const float* __restrict__ add,
                               const float* __restrict__ bias, int H) {
  float ss = 0.0f;
  if constexpr (kVec == 4) {
    float4* h4 = reinterpret_cast<float4*>(h);
    const float4* a4 = reinterpret_cast<const float4*>(add);
    const float4* b4 = reinterpret_cast<const float4*>(bias);
    for (int i = threadIdx.x; i < H / 4; i += kThreads) {
      float4 v = h4[i];
      if (add != nullptr) {
        float4 d = a4[i];
        // (add + bias) first: the CPU adds the bias inside the projection, then the residual.
        if (bias != nullptr) {
          const float4 b = b4[i];
          d = make_float4(d.x + b.x, d.y + b.y, d.z + b.z, d.w + b.w);
        }
        v = make_float4(v.x + d.x, v.y + d.y, v.z + d.z, v.w + d.w);
        h4[i] = v;
      }
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  } else {
    for (int i = threadIdx.x; i < H; i += kThreads) {
      float v = h[i];
      if (add != nullptr) {
        float d = add[i];
        if (bias != nullptr) d += bias[i];
        v += d;
        h[i] = v;
      }
      ss += v * v;
    }
  }
  return ss;
}

// out = bf16((x * inv) * weight), the CPU's order of operations.
template <int kVec>
__device__ void ScaleToBf16(const float* x, float inv, const float* __restrict__ weight, int H,
                            bf16* __restrict__ out) {
  if constexpr (kVec == 4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const float4* w4 = reinterpret_cast<const float4*>(weight);
    __nv_bfloat162* o2 = reinterpret_cast<__nv_bfloat162*>(out);
    for (int i = threadIdx.x; i < H / 4; i += kThreads) {
      const float4 v = x4[i];
      const float4 w = w4[i];
      o2[2 * i] = __floats2bfloat162_rn((v.x * inv) * w.x, (v.y * inv) * w.y);
      o2[2 * i + 1] = __floats2bfloat162_rn((v.z * inv) * w.z, (v.w * inv) * w.w);
    }
  } else {
    for (int i = threadIdx.x; i < H; i += kThreads) {
      out[i] = __float2bfloat16_rn((x[i] * inv) * weight[i]);
    }
  }
}

// 1 / sqrt(mean square + eps) of the row, from each thread's partial sum; every thread gets it.
__device__ float InverseRms(float partial, float eps, int H) {
  __shared__ BlockSum::TempStorage temp;
  __shared__ float inv;
  const float total = BlockSum(temp).Sum(partial);  // valid in thread 0 only
  if (threadIdx.x == 0) inv = 1.0f / sqrtf(total / static_cast<float>(H) + eps);
  __syncthreads();
  return inv;
}

// Thread's partial sum of squares of a read-only row.
template <int kVec>
__device__ float SumOfSquares(const float* __restrict__ x, int H) {
  float ss = 0.0f;
  if constexpr (kVec == 4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int i = threadIdx.x; i < H / 4; i += kThreads) {
      const float4 v = x4[i];
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  } else {
    for (int i = threadIdx.x; i < H; i += kThreads) ss += x[i] * x[i];
  }
  return ss;
}

template <int kVec>
__global__ void AddRmsNormKernel(float* h, const float* __restrict__ add,
                                 const float* __restrict__ bias, const float* __restrict__ weight,
                                 float eps, int H, bf16* __restrict__ out) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * H;
  const float ss = AddAndSquares<kVec>(h + row, add == nullptr ? nullptr : add + row, bias, H);
  if (out == nullptr) return;  // the same for the whole block: no barrier is skipped by some only
  const float inv = InverseRms(ss, eps, H);
  ScaleToBf16<kVec>(h + row, inv, weight, H, out + row);
}

template <int kVec>
__global__ void GatherRmsNormKernel(const float* __restrict__ x, const int32_t* __restrict__ rows,
                                    const float* __restrict__ weight, float eps, int H,
                                    bf16* __restrict__ out) {
  const float* in = x + static_cast<int64_t>(rows[blockIdx.x]) * H;
  const float ss = SumOfSquares<kVec>(in, H);
  const float inv = InverseRms(ss, eps, H);
  ScaleToBf16<kVec>(in, inv, weight, H, out + static_cast<int64_t>(blockIdx.x) * H);
}

bool Aligned(const void* p, uintptr_t alignment) {
  return reinterpret_cast<uintptr_t>(p) % alignment == 0;  // null is aligned
}

}  // namespace

absl::Status LaunchAddRmsNorm(float* h, const float* add, const float* bias, const float* weight,
                              float eps, int T, int H, bf16* out, cudaStream_t stream) {
  if (T < 0 || H < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("add+rms_norm: need T >= 0 and H >= 1, got T = ", T, ", H = ", H));
  }
  if (bias != nullptr && add == nullptr) {
    return absl::InvalidArgumentError("add+rms_norm: bias is only added with add");
  }
  if (T == 0 || (add == nullptr && out == nullptr)) return absl::OkStatus();  // nothing to do
  if (h == nullptr) return absl::InvalidArgumentError("add+rms_norm: null h");
  if (out != nullptr && weight == nullptr) {
    return absl::InvalidArgumentError("add+rms_norm: null weight with an output");
  }
  const bool vec = H % 4 == 0 && Aligned(h, 16) && Aligned(add, 16) && Aligned(bias, 16) &&
                   Aligned(weight, 16) && Aligned(out, 8);
  if (vec) {
    AddRmsNormKernel<4><<<T, kThreads, 0, stream>>>(h, add, bias, weight, eps, H, out);
  } else {
    AddRmsNormKernel<1><<<T, kThreads, 0, stream>>>(h, add, bias, weight, eps, H, out);
  }
  return LaunchStatus("add+rms_norm");
}

absl::Status LaunchGatherRmsNorm(const float* x, const int32_t* rows, int B, const float* weight,
                                 float eps, int H, bf16* out, cudaStream_t stream) {
  if (B < 0 || H < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("gather+rms_norm: need B >= 0 and H >= 1, got B = ", B, ", H = ", H));
  }
  if (B == 0) return absl::OkStatus();
  if (x == nullptr || rows == nullptr || weight == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("gather+rms_norm: null x, rows, weight or out");
  }
  const bool vec = H % 4 == 0 && Aligned(x, 16) && Aligned(weight, 16) && Aligned(out, 8);
  if (vec) {
    GatherRmsNormKernel<4><<<B, kThreads, 0, stream>>>(x, rows, weight, eps, H, out);
  } else {
    GatherRmsNormKernel<1><<<B, kThreads, 0, stream>>>(x, rows, weight, eps, H, out);
  }
  return LaunchStatus("gather+rms_norm");
}

}  // namespace engram::kernels
