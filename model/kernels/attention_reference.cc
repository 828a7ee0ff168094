#include "model/kernels/attention_reference.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "model/cpu_ops.h"
#include "model/kv_cache.h"

namespace engram::kernels {

float Bf16BitsToFloat(uint16_t bits) {
  const uint32_t word = uint32_t{bits} << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

uint16_t FloatToBf16Bits(float value) {
  uint32_t word;
  std::memcpy(&word, &value, sizeof(word));
  // A NaN could round into infinity below; keep it a (quiet) NaN instead.
  if (std::isnan(value)) return static_cast<uint16_t>((word >> 16) | 0x0040u);
  const uint32_t round = 0x7fffu + ((word >> 16) & 1u);  // ties go to the even neighbour
  return static_cast<uint16_t>((word + round) >> 16);
}

absl::StatusOr<std::vector<double>> PagedAttentionReference(const PagedAttentionProblem& p,
                                                            ThreadPool* pool) {
  const int items = static_cast<int>(p.context_lens.size());
  const int64_t nq = p.num_heads;
  const int64_t d = p.head_dim;
  // A malformed problem is a bug in the calling test: report it rather than read out of bounds.
  if (p.num_heads <= 0 || p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0 ||
      p.head_dim <= 0 || p.block_tokens <= 0 || p.max_blocks < 0 ||
      p.q_offsets.size() != static_cast<size_t>(items) + 1 ||
      p.block_tables.size() < static_cast<size_t>(items) * p.max_blocks ||
      p.q.size() != static_cast<size_t>(p.q_offsets[items]) * nq * d) {
    return absl::InvalidArgumentError("PagedAttentionReference: inconsistent problem sizes");
  }
  std::vector<double> out(p.q.size());
  for (int i = 0; i < items; ++i) {
    const int row0 = p.q_offsets[i];
    const int n = p.q_offsets[i + 1] - row0;
    const int context = p.context_lens[i];
    if (row0 < 0 || n < 0 || p.q_offsets[i + 1] > p.q_offsets[items]) {
      return absl::InvalidArgumentError("PagedAttentionReference: q_offsets not ascending");
    }
    if (n == 0) continue;
    if (context < n || context > p.max_blocks * p.block_tokens) {
      return absl::InvalidArgumentError(absl::StrCat("PagedAttentionReference: item ", i, " has ",
                                                     n, " rows and context length ", context));
    }
    // The item's cache, position-major as Attention reads it.
    KvCache cache(/*num_layers=*/1, p.num_kv_heads, p.head_dim, context);
    if (absl::Status st = cache.Reserve(context); !st.ok()) return st;
    for (int pos = 0; pos < context; ++pos) {
      const int64_t block =
          p.block_tables[static_cast<size_t>(i) * p.max_blocks + pos / p.block_tokens];
      const int offset = pos % p.block_tokens;
      if (block < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("PagedAttentionReference: negative block id ", block));
      }
      for (int h = 0; h < p.num_kv_heads; ++h) {
        const size_t src =
            static_cast<size_t>(((block * p.num_kv_heads + h) * p.block_tokens + offset) * d);
        if (src + d > p.k_pool.size() || src + d > p.v_pool.size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("PagedAttentionReference: block ", block, " is beyond the pools"));
        }
        float* keys = cache.Keys(0, pos) + h * d;
        float* values = cache.Values(0, pos) + h * d;
        for (int64_t e = 0; e < d; ++e) {
          keys[e] = Bf16BitsToFloat(p.k_pool[src + e]);
          values[e] = Bf16BitsToFloat(p.v_pool[src + e]);
        }
      }
    }
    const size_t first = static_cast<size_t>(row0) * nq * d;
    const size_t count = static_cast<size_t>(n) * nq * d;
    std::vector<float> q(count), o(count);
    for (size_t e = 0; e < count; ++e) q[e] = Bf16BitsToFloat(p.q[first + e]);
    Attention(pool, q.data(), cache, /*layer=*/0, n, /*start_position=*/context - n, p.num_heads,
              p.num_kv_heads, p.head_dim, o.data());
    for (size_t e = 0; e < count; ++e) out[first + e] = o[e];
  }
  return out;
}

}  // namespace engram::kernels
