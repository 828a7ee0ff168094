// Token embedding lookup: out[t, :] = f32(table[tokens[t], :]).
//
// Parallelisation: one CTA of 256 threads per token; the threads stride over the row. The op is a
// pure copy (2 bytes read, 4 written per element), so all that matters is moving whole 16-byte
// words: when H is a multiple of 8 and both base pointers are 16-byte aligned, each thread loads 8
// bf16 with one 16-byte load and stores them as two float4, and a warp moves 512 contiguous bytes
// of the table per instruction. Otherwise (H = 19, unaligned views) a scalar path copies one
// element per thread per step, still coalesced. No shared memory, no reuse: rows are random reads
// of the table, and occupancy (many rows in flight) hides their latency.
#include "model/kernels/embedding.cuh"

#include "absl/strings/str_cat.h"

namespace engram::kernels {
namespace {

constexpr int kThreads = 256;

// vec_per_row = H / 8 (16-byte words of bf16 per row).
__global__ void EmbeddingVec8Kernel(const uint4* __restrict__ table, int vec_per_row,
                                    const int32_t* __restrict__ tokens, float4* __restrict__ out) {
  const int64_t t = blockIdx.x;
  const uint4* src = table + static_cast<int64_t>(tokens[t]) * vec_per_row;
  float4* dst = out + t * vec_per_row * 2;
  for (int v = threadIdx.x; v < vec_per_row; v += kThreads) {
    const uint4 word = src[v];
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&word);
    const float2 a = __bfloat1622float2(pairs[0]);
    const float2 b = __bfloat1622float2(pairs[1]);
    const float2 c = __bfloat1622float2(pairs[2]);
    const float2 d = __bfloat1622float2(pairs[3]);
    dst[2 * v] = make_float4(a.x, a.y, b.x, b.y);
    dst[2 * v + 1] = make_float4(c.x, c.y, d.x, d.y);
  }
}

__global__ void EmbeddingScalarKernel(const bf16* __restrict__ table, int H,
                                      const int32_t* __restrict__ tokens, float* __restrict__ out) {
  const int64_t t = blockIdx.x;
  const bf16* src = table + static_cast<int64_t>(tokens[t]) * H;
  float* dst = out + t * H;
  for (int i = threadIdx.x; i < H; i += kThreads) dst[i] = __bfloat162float(src[i]);
}

bool Aligned(const void* p, uintptr_t alignment) {
  return reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

}  // namespace

absl::Status LaunchEmbedding(const bf16* table, int H, const int32_t* tokens, int T, float* out,
                             cudaStream_t stream) {
  if (T < 0 || H < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("embedding: need T >= 0 and H >= 1, got T = ", T, ", H = ", H));
  }
  if (T == 0) return absl::OkStatus();
  if (table == nullptr || tokens == nullptr || out == nullptr) {
    return absl::InvalidArgumentError("embedding: null table, tokens or out");
  }
  if (H % 8 == 0 && Aligned(table, 16) && Aligned(out, 16)) {
    EmbeddingVec8Kernel<<<T, kThreads, 0, stream>>>(reinterpret_cast<const uint4*>(table), H / 8,
                                                    tokens, reinterpret_cast<float4*>(out));
  } else {
    EmbeddingScalarKernel<<<T, kThreads, 0, stream>>>(table, H, tokens, out);
  }
  return LaunchStatus("embedding");
}

}  // namespace engram::kernels
