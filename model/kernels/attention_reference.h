// The CPU reference of the paged attention kernels (model/kernels/attention.cuh): it copies each
// sequence's keys and values out of host copies of the paged pools into a KvCache and runs
// Attention of model/cpu_ops.h on it, so the CPU backbone's attention is the one definition both
// kernels are tested against.
//
// Plain C++ (no CUDA headers): engram_kernel_reference is built on machines without nvcc too, so
// bf16 values travel as their 16-bit patterns (the upper half of an IEEE f32).
#ifndef ENGRAM_MODEL_KERNELS_ATTENTION_REFERENCE_H_
#define ENGRAM_MODEL_KERNELS_ATTENTION_REFERENCE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace engram {
class ThreadPool;
}  // namespace engram

namespace engram::kernels {

// The f32 value of a bf16 bit pattern (exact).
float Bf16BitsToFloat(uint16_t bits);
// The bf16 bit pattern nearest to `value` (round to nearest even; NaN stays NaN).
uint16_t FloatToBf16Bits(float value);

struct PagedAttentionProblem {
  // One layer's pools, [num_blocks, Nkv, block_tokens, D] bf16 bits each (common.cuh).
  absl::Span<const uint16_t> k_pool;
  absl::Span<const uint16_t> v_pool;
  absl::Span<const int32_t> block_tables;  // [items, max_blocks]
  int max_blocks = 0;
  // [T, Nq, D] bf16 bits: item i owns rows [q_offsets[i], q_offsets[i + 1]).
  absl::Span<const uint16_t> q;
  absl::Span<const int32_t> q_offsets;     // [items + 1]
  absl::Span<const int32_t> context_lens;  // [items]: cached tokens after the item's rows
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_tokens = 0;
};

// [T, Nq, D]: row j of item i (chunk length n, context length c) at position c - n + j attends to
// positions [0, c - n + j] with scale 1/sqrt(D), which is the scale Attention uses; the kernels
// take the scale as an argument, so compare them at that value. Decode is the case of one row per
// item. Block-table entries past an item's last used block are never read. `pool` (may be null)
// spreads each item's rows and heads over threads. INVALID_ARGUMENT when the sizes disagree, an
// item has more rows than context or a block id points past the pools (a bug in the calling test).
absl::StatusOr<std::vector<double>> PagedAttentionReference(const PagedAttentionProblem& problem,
                                                            ThreadPool* pool = nullptr);

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_ATTENTION_REFERENCE_H_
