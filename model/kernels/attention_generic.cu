// Parallelisation: one warp per (row, query head). Lanes split the positions: lane j scores
// positions j, j + 32, ... (a whole D-wide dot product each, from the paged cache), keeping its
// own running max, sum and D-wide weighted value sum (online softmax); the warp then merges the
// 32 partial states. D <= 256 floats of accumulator per lane live in local memory, which is fine
// for the small models this kernel exists for.
#include "model/kernels/attention_generic.cuh"

namespace engram::kernels {
namespace {

constexpr int kMaxHeadDim = 256;
constexpr int kWarpsPerBlock = 4;

__global__ void GenericAttentionKernel(GenericAttentionArgs a) {
  const int warp = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int Nq = a.shape.num_heads, D = a.shape.head_dim, bt = a.shape.block_tokens;
  if (warp >= a.T * Nq) return;
  const int row = warp / Nq, head = warp % Nq;
  const int kv_head = head / (Nq / a.shape.num_kv_heads);
  const int item = a.item_of_row[row];
  const int last = a.positions[row];
  const int32_t* table = a.block_tables + static_cast<int64_t>(item) * a.max_blocks;
  const bf16* q = a.q + (static_cast<int64_t>(row) * Nq + head) * D;

  float acc[kMaxHeadDim];
  for (int d = 0; d < D; ++d) acc[d] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (int p = lane; p <= last; p += 32) {
    const int64_t base = KvIndex(table[p / bt], kv_head, p % bt, a.shape.num_kv_heads, bt, D);
    float s = 0.0f;
    for (int d = 0; d < D; ++d) s += __bfloat162float(q[d]) * __bfloat162float(a.k_cache[base + d]);
    s *= a.shape.scale;
    const float m_new = fmaxf(m, s);
    const float correction = __expf(m - m_new);  // 0 when m was -inf
    const float w = __expf(s - m_new);
    l = l * correction + w;
    for (int d = 0; d < D; ++d) {
      acc[d] = acc[d] * correction + w * __bfloat162float(a.v_cache[base + d]);
    }
    m = m_new;
  }
  // Merge the lanes' states: the global max, then each lane's share rescaled to it.
  float m_all = m;
  for (int o = 16; o > 0; o /= 2) m_all = fmaxf(m_all, __shfl_xor_sync(0xffffffffu, m_all, o));
  const float scale = m == -INFINITY ? 0.0f : __expf(m - m_all);
  float l_all = l * scale;
  for (int o = 16; o > 0; o /= 2) l_all += __shfl_xor_sync(0xffffffffu, l_all, o);
  bf16* out = a.out + (static_cast<int64_t>(row) * Nq + head) * D;
  for (int d = 0; d < D; ++d) {
    float v = acc[d] * scale;
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) out[d] = __float2bfloat16(v / l_all);
  }
}

}  // namespace

absl::Status LaunchGenericAttention(const GenericAttentionArgs& a, cudaStream_t stream) {
  if (a.T <= 0) return absl::OkStatus();
  if (a.q == nullptr || a.out == nullptr || a.k_cache == nullptr || a.v_cache == nullptr ||
      a.block_tables == nullptr || a.item_of_row == nullptr || a.positions == nullptr) {
    return absl::InvalidArgumentError("generic attention: null pointer argument");
  }
  const AttentionShape& s = a.shape;
  if (s.head_dim < 2 || s.head_dim > kMaxHeadDim || s.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("generic attention: head_dim ", s.head_dim, " is not even and <= 256"));
  }
  if (s.num_kv_heads < 1 || s.num_heads % s.num_kv_heads != 0 || s.block_tokens < 1) {
    return absl::InvalidArgumentError("generic attention: bad head counts or block size");
  }
  const int64_t warps = int64_t(a.T) * s.num_heads;
  const int blocks = static_cast<int>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
  GenericAttentionKernel<<<blocks, kWarpsPerBlock * 32, 0, stream>>>(a);
  return LaunchStatus("generic attention");
}

}  // namespace engram::kernels
