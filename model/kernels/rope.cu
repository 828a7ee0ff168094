// RoPE on the fused q/k/v projection output, fused with the append of k and v to the paged KV
// cache.
//
// Parallelisation: one CTA of 256 threads per token. A thread handles one rotation pair (i, i +
// D/2) of one q or k head at a time: the pairs of all q heads, then all k heads, are one flat index
// space strided over the CTA, so consecutive threads read consecutive floats of the qkv row and of
// the cos/sin row (coalesced) and write consecutive bf16 of q_out or of the key block. Then the
// same threads copy the v heads. The token's cos/sin row (D/2 floats each) is read by every head:
// it stays in L1 after the first, so there is no shared-memory staging. Each token writes only its
// own slot, so there is no synchronisation at all; the kernel is a few microseconds of pure memory
// traffic, noise next to the projection GEMM that precedes it.
//
// Arithmetic: x + bias in f32 (as the CPU's projection adds its bias), then the CPU reference's
// a*c - b*s and b*c + a*s in f32 (the compiler may fuse one multiply-add: ~1 ulp of f32), then one
// rounding to bf16.
#include "model/kernels/rope.cuh"

#include "absl/strings/str_cat.h"
#include "model/cpu_ops.h"

namespace engram::kernels {
namespace {

constexpr int kThreads = 256;

__global__ void RopeKvAppendKernel(const float* __restrict__ qkv, const float* __restrict__ bias,
                                   const int32_t* __restrict__ positions,
                                   const int32_t* __restrict__ slots,
                                   const float* __restrict__ cos_table,
                                   const float* __restrict__ sin_table, int num_heads,
                                   int num_kv_heads, int head_dim, int block_tokens,
                                   bf16* __restrict__ q_out, bf16* __restrict__ k_cache,
                                   bf16* __restrict__ v_cache) {
  const int64_t t = blockIdx.x;
  const int half = head_dim / 2;
  const int64_t width = static_cast<int64_t>(num_heads + 2 * num_kv_heads) * head_dim;
  const float* row = qkv + t * width;
  const float* c = cos_table + static_cast<int64_t>(positions[t]) * half;
  const float* s = sin_table + static_cast<int64_t>(positions[t]) * half;
  const int64_t slot = slots[t];
  const int64_t block = slot / block_tokens;
  const int offset = static_cast<int>(slot % block_tokens);

  // Rotated heads: q heads [0, Nq), then k heads [Nq, Nq + Nkv).
  const int pairs = (num_heads + num_kv_heads) * half;
  for (int idx = threadIdx.x; idx < pairs; idx += kThreads) {
    const int head = idx / half;
    const int i = idx - head * half;
    const int col = head * head_dim + i;
    float a = row[col];
    float b = row[col + half];
    if (bias != nullptr) {
      a += bias[col];
      b += bias[col + half];
    }
    const float out_lo = a * c[i] - b * s[i];
    const float out_hi = b * c[i] + a * s[i];
    bf16* dst;
    if (head < num_heads) {
      dst = q_out + (t * num_heads + head) * head_dim;
    } else {
      dst =
          k_cache + KvIndex(block, head - num_heads, offset, num_kv_heads, block_tokens, head_dim);
    }
    dst[i] = __float2bfloat16_rn(out_lo);
    dst[i + half] = __float2bfloat16_rn(out_hi);
  }

  // v heads: copied (+ bias) into the value pool.
  const int v_begin = (num_heads + num_kv_heads) * head_dim;
  for (int idx = threadIdx.x; idx < num_kv_heads * head_dim; idx += kThreads) {
    const int head = idx / head_dim;
    const int d = idx - head * head_dim;
    float v = row[v_begin + idx];
    if (bias != nullptr) v += bias[v_begin + idx];
    v_cache[KvIndex(block, head, offset, num_kv_heads, block_tokens, head_dim) + d] =
        __float2bfloat16_rn(v);
  }
}

}  // namespace

absl::Status LaunchRopeKvAppend(const RopeKvAppendArgs& a, cudaStream_t stream) {
  if (a.T < 0) return absl::InvalidArgumentError(absl::StrCat("rope+kv append: T = ", a.T, " < 0"));
  if (a.num_heads < 1 || a.num_kv_heads < 1 || a.head_dim < 2 || a.head_dim % 2 != 0 ||
      a.block_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rope+kv append: need num_heads >= 1, num_kv_heads >= 1, an even head_dim >= 2 and "
        "block_tokens >= 1; got ",
        a.num_heads, ", ", a.num_kv_heads, ", ", a.head_dim, ", ", a.block_tokens));
  }
  if (a.T == 0) return absl::OkStatus();
  if (a.qkv == nullptr || a.positions == nullptr || a.slots == nullptr || a.cos == nullptr ||
      a.sin == nullptr || a.q_out == nullptr || a.k_cache == nullptr || a.v_cache == nullptr) {
    return absl::InvalidArgumentError(
        "rope+kv append: null qkv, positions, slots, cos, sin, q_out, k_cache or v_cache");
  }
  RopeKvAppendKernel<<<a.T, kThreads, 0, stream>>>(a.qkv, a.bias, a.positions, a.slots, a.cos,
                                                   a.sin, a.num_heads, a.num_kv_heads, a.head_dim,
                                                   a.block_tokens, a.q_out, a.k_cache, a.v_cache);
  return LaunchStatus("rope+kv append");
}

void RopeTable(int max_positions, int head_dim, float theta, std::vector<float>* cos,
               std::vector<float>* sin) {
  const size_t n = static_cast<size_t>(max_positions > 0 ? max_positions : 0) * (head_dim / 2);
  cos->assign(n, 0.0f);
  sin->assign(n, 0.0f);
  if (n == 0) return;
  // Position p is row p: RopeAngles from start position 0 over max_positions tokens.
  RopeAngles(max_positions, head_dim, /*start_position=*/0, theta, cos->data(), sin->data());
}

}  // namespace engram::kernels
