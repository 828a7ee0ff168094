// SwiGLU (out = bf16(SiLU(gate) * up)) and the plain f32 -> bf16 conversion.
//
// Parallelisation: both are elementwise and memory-bound (8 bytes read, 2 written per output for
// SwiGLU), so a flat grid-stride loop over the outputs with 256-thread CTAs and enough CTAs to fill
// every SM several times over. When the row length (I) is a multiple of 4 and the pointers are
// aligned, each thread handles 4 consecutive outputs: two float4 loads (gate and up) and one 8-byte
// store, so every warp access is a whole number of 32-byte sectors. Otherwise one element per
// thread. ToBf16 has no rows: the aligned body runs in float4 words and the last n % 4 elements
// one by one.
//
// Arithmetic: SiLU(g) = g / (1 + exp(-g)) with the accurate expf, the CPU reference's formula; the
// f32 result is rounded to bf16 once (round to nearest even).
#include "model/kernels/swiglu.cuh"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace engram::kernels {
namespace {

constexpr int kThreads = 256;
// Enough CTAs for every SM of an H100 (132) to hold 16 of them; larger inputs loop.
constexpr int64_t kMaxBlocks = 132 * 16;

__device__ __forceinline__ float SiluMul(float g, float u) { return (g / (1.0f + expf(-g))) * u; }

int Blocks(int64_t work) {
  return static_cast<int>(std::min<int64_t>(kMaxBlocks, (work + kThreads - 1) / kThreads));
}

bool Aligned(const void* p, uintptr_t alignment) {
  return reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

// quads = I / 4: the 4-element groups of a row.
__global__ void SwiGluVec4Kernel(const float4* __restrict__ gate_up, int64_t T, int quads,
                                 uint2* __restrict__ out) {
  const int64_t total = T * quads;
  for (int64_t e = blockIdx.x * int64_t{kThreads} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * kThreads) {
    const int64_t t = e / quads;
    const int64_t q = e - t * quads;
    const float4 g = gate_up[t * 2 * quads + q];
    const float4 u = gate_up[t * 2 * quads + quads + q];
    const __nv_bfloat162 lo = __floats2bfloat162_rn(SiluMul(g.x, u.x), SiluMul(g.y, u.y));
    const __nv_bfloat162 hi = __floats2bfloat162_rn(SiluMul(g.z, u.z), SiluMul(g.w, u.w));
    uint2 word;
    word.x = *reinterpret_cast<const uint32_t*>(&lo);
    word.y = *reinterpret_cast<const uint32_t*>(&hi);
    out[e] = word;
  }
}

__global__ void SwiGluScalarKernel(const float* __restrict__ gate_up, int64_t T, int I,
                                   bf16* __restrict__ out) {
  const int64_t total = T * I;
  for (int64_t e = blockIdx.x * int64_t{kThreads} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * kThreads) {
    const int64_t t = e / I;
    const int64_t i = e - t * I;
    out[e] = __float2bfloat16_rn(SiluMul(gate_up[t * 2 * I + i], gate_up[t * 2 * I + I + i]));
  }
}

// vec: in is 16-byte and out 8-byte aligned; then elements [0, 4 * (n / 4)) go as float4 words.
__global__ void ToBf16Kernel(const float* __restrict__ in, int64_t n, bool vec,
                             bf16* __restrict__ out) {
  const int64_t stride = int64_t{gridDim.x} * kThreads;
  const int64_t first = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t quads = n / 4;
    const float4* in4 = reinterpret_cast<const float4*>(in);
    uint2* out4 = reinterpret_cast<uint2*>(out);
    for (int64_t e = first; e < quads; e += stride) {
      const float4 v = in4[e];
      const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y);
      const __nv_bfloat162 hi = __floats2bfloat162_rn(v.z, v.w);
      uint2 word;
      word.x = *reinterpret_cast<const uint32_t*>(&lo);
      word.y = *reinterpret_cast<const uint32_t*>(&hi);
      out4[e] = word;
    }
    done = quads * 4;
  }
  for (int64_t e = done + first; e < n; e += stride) out[e] = __float2bfloat16_rn(in[e]);
}

}  // namespace

absl::Status LaunchSwiGlu(const float* gate_up, int T, int I, bf16* out, cudaStream_t stream) {
  if (T < 0 || I < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("swiglu: need T >= 0 and I >= 1, got T = ", T, ", I = ", I));
  }
  if (T == 0) return absl::OkStatus();
  if (gate_up == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("swiglu: null gate_up or out");
  }
  if (I % 4 == 0 && Aligned(gate_up, 16) && Aligned(out, 8)) {
    const int quads = I / 4;
    SwiGluVec4Kernel<<<Blocks(int64_t{T} * quads), kThreads, 0, stream>>>(
        reinterpret_cast<const float4*>(gate_up), T, quads, reinterpret_cast<uint2*>(out));
  } else {
    SwiGluScalarKernel<<<Blocks(int64_t{T} * I), kThreads, 0, stream>>>(gate_up, T, I, out);
  }
  return LaunchStatus("swiglu");
}

absl::Status LaunchToBf16(const float* in, int64_t n, bf16* out, cudaStream_t stream) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("to_bf16: n = ", n, " < 0"));
  if (n == 0) return absl::OkStatus();
  if (in == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("to_bf16: null in or out");
  }
  const bool vec = Aligned(in, 16) && Aligned(out, 8);
  ToBf16Kernel<<<Blocks(vec ? (n + 3) / 4 : n), kThreads, 0, stream>>>(in, n, vec, out);
  return LaunchStatus("to_bf16");
}

}  // namespace engram::kernels
