// Paged grouped-query attention: decode (flash decoding) and chunked prefill (flash attention 2).
//
// Both kernels share one inner step: a tile of 64 cached positions of one KV head is copied from
// the paged pools into shared memory with cp.async (16 bytes a thread, coalesced: a 64-position
// tile covers whole blocks since block_tokens divides 64, and inside a block one head's positions
// are contiguous), then warps multiply it on the tensor cores (mma.sync m16n8k16, bf16 in, f32
// accumulate; fragments come from shared memory through ldmatrix). Scores stay in registers: the
// online softmax (running max m and sum l per row, in the log2 domain so exp is one ex2) rescales
// the f32 output accumulators in place, and P is rounded to bf16 only as the A operand of P.V.
// Shared-memory tiles are row-major with the 16-byte chunks of row r XOR-swizzled by r % 8, so that
// the eight 16-byte rows one ldmatrix phase reads (and the cp.async writes) hit distinct banks.
// Positions past the item's limit are zero-filled by cp.async (src-size 0) and never read from
// memory: the tail of a partly filled block may hold stale data or NaN, and 0 * NaN would poison
// P.V even at probability 0. Block-table entries past the last used block are never read.
//
// Decode (one query per sequence, memory-bound: every K/V byte is read once). A CTA of 4 warps
// handles (split, KV head, sequence) and all Nq/Nkv query heads of that group as the 16 rows of
// one mma tile (rows past the group are zeros; groups over 16 heads take several CTAs), so each
// K/V byte leaves HBM once per group and the tensor cores make the score work free. Each warp
// takes 16 positions of every 64-position tile with its own (m, l, O); the warps' states merge
// through shared memory at the end. Three pipeline stages (K and V, 16 KiB each at D = 128, 100
// KiB in all with Q) keep two tiles in flight while one is computed; two CTAs fit an SM. The KV
// length is cut into num_splits ranges of whole tiles, computed on the device from context_lens so
// the launch shape depends only on the batch (CUDA graphs). A split writes its normalised partial
// output with its max and sum to the workspace and a merge kernel (a warp per query head)
// combines them; a split with no positions writes m = -inf, l = 0, O = 0, which weighs nothing.
//
// Prefill (a ragged batch of chunks, causal, compute-bound). A CTA of 4 warps handles 64 query
// rows of one head of one item; each warp owns 16 rows and walks the key tiles up to the tile's
// last row position (tiles past it are never visited; a warp skips a tile that lies wholly past its
// own rows). Only tiles crossing the diagonal apply the causal mask. K and V are double-buffered
// (80 KiB of shared memory with Q at D = 128) so the next tile's copy overlaps this tile's math.
// The output goes through the (by then free) Q tile so global stores are 16 bytes wide.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "model/kernels/attention.cuh"

namespace engram::kernels {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileK = 64;         // positions per K/V tile
constexpr int kPrefillTileQ = 64;  // query rows per prefill CTA (16 per warp)
constexpr int kPrefillStages = 2;
constexpr int kDecodeRows = 16;  // query heads per decode CTA: the M of one mma tile
constexpr int kDecodeStages = 3;
constexpr int kMaxSplits = 16;
constexpr float kLog2e = 1.4426950408889634f;

// ---- small PTX wrappers (sm_80+) ---------------------------------------------------------------

__device__ __forceinline__ uint32_t SmemAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; with valid == false nothing is read and the 16 bytes are zeroed.
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most `kPending` of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a * b for one m16n8k16 tile. Lane (g = lane / 4, t = lane % 4) holds
//   a: {(g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)} as bf16 pairs (row, k),
//   b: {(k 2t..2t+1, n g), (k 2t+8.., n g)},   d: {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}.
__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x goes in the low half
  return uint32_t{__bfloat16_as_ushort(v.x)} | (uint32_t{__bfloat16_as_ushort(v.y)} << 16);
}

// Element offset of 16-byte chunk `chunk` of row `row` in a swizzled [rows, D] bf16 tile.
template <int D>
__device__ __forceinline__ int Swizzle(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// ---- shared pieces -----------------------------------------------------------------------------

// Starts copying positions [pos0, pos0 + kTileK) of one KV head into swizzled K and V tiles;
// positions >= pos_end become zeros.
template <int D>
__device__ __forceinline__ void LoadKvTile(uint32_t k_dst, uint32_t v_dst, const bf16* k_pool,
                                           const bf16* v_pool, const int32_t* table, int kv_head,
                                           int num_kv_heads, int block_tokens, int block_shift,
                                           int pos0, int pos_end) {
  constexpr int kChunks = D / 8;
  // kThreads is a multiple of kChunks, so each thread keeps one chunk column and walks rows.
  static_assert(kThreads % kChunks == 0 && (kTileK * kChunks) % kThreads == 0, "");
  const int chunk = threadIdx.x % kChunks;
#pragma unroll
  for (int i = 0; i < kTileK * kChunks / kThreads; ++i) {
    const int row = (threadIdx.x + i * kThreads) / kChunks;
    const int pos = pos0 + row;
    const bool valid = pos < pos_end;
    int64_t offset = 0;
    if (valid) {
      const int64_t block = table[pos >> block_shift];
      offset = KvIndex(block, kv_head, pos & (block_tokens - 1), num_kv_heads, block_tokens, D) +
               chunk * 8;
    }
    const uint32_t dst = static_cast<uint32_t>(Swizzle<D>(row, chunk)) * sizeof(bf16);
    CpAsync16(k_dst + dst, k_pool + offset, valid);
    CpAsync16(v_dst + dst, v_pool + offset, valid);
  }
}

// The A fragments of 16 query rows (tile rows row0..row0+15) over all of D.
template <int D>
__device__ __forceinline__ void LoadQFragments(uint32_t (&qf)[D / 16][4], uint32_t q_tile,
                                               int row0) {
  const int lane = threadIdx.x % 32;
  // ldmatrix.x4 matrices: rows 0-7 / 8-15 (lane % 16) by k chunk 0 / 1 (lane / 16): a0..a3.
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    LdMatrixX4(qf[kk], q_tile + Swizzle<D>(row0 + lane % 16, 2 * kk + lane / 16) * sizeof(bf16));
  }
}

// s[nt] += Q (16 rows) . K^T for the 8 keys of each n-tile nt, keys key0 + 8 nt + (0..7) of the
// K tile.
template <int D, int kNTiles>
__device__ __forceinline__ void QkScores(float (&s)[kNTiles][4], const uint32_t (&qf)[D / 16][4],
                                         uint32_t k_tile, int key0) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
  }
#pragma unroll
  for (int kp = 0; kp < D / 32; ++kp) {
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      // Matrices: keys key0 + 8 nt + (lane % 8), d chunks 4 kp + (lane / 8): b of k-steps 2 kp
      // (r0, r1) and 2 kp + 1 (r2, r3). K rows are B's columns, so no transpose.
      uint32_t b[4];
      LdMatrixX4(b,
                 k_tile + Swizzle<D>(key0 + 8 * nt + lane % 8, 4 * kp + lane / 8) * sizeof(bf16));
      Mma(s[nt], qf[2 * kp], b[0], b[1]);
      Mma(s[nt], qf[2 * kp + 1], b[2], b[3]);
    }
  }
}

// One online-softmax step for the thread's two rows (g and g + 8) over scores s (already scaled
// to the log2 domain and masked with -inf): updates m, l (l stays a per-thread partial sum until
// the end; every thread of a quad applies the same rescale), rescales o and turns s into P.
template <int kNTiles, int kOTiles>
__device__ __forceinline__ void OnlineSoftmax(float (&s)[kNTiles][4], float (&o)[kOTiles][4],
                                              float (&m)[2], float (&l)[2]) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float row_max = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      row_max = fmaxf(row_max, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
    }
    // The four threads of a quad hold one row.
    row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 1));
    row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 2));
    const float m_new = fmaxf(m[r], row_max);
    // While a row has seen only masked positions m_new is -inf; subtracting 0 instead keeps
    // exp2(-inf - (-inf)) = NaN out (alpha and P are then 0).
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = exp2f(m[r] - m_use);
    m[r] = m_new;
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      s[nt][2 * r] = exp2f(s[nt][2 * r] - m_use);
      s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - m_use);
      sum += s[nt][2 * r] + s[nt][2 * r + 1];
    }
    l[r] = l[r] * alpha + sum;
#pragma unroll
    for (int nd = 0; nd < kOTiles; ++nd) {
      o[nd][2 * r] *= alpha;
      o[nd][2 * r + 1] *= alpha;
    }
  }
}

// o += P . V where P is the 16 x (16 kKSteps) probability tile in registers (score layout) and V
// rows key0 .. key0 + 16 kKSteps - 1 of the V tile.
template <int D, int kKSteps>
__device__ __forceinline__ void PvProduct(float (&o)[D / 8][4], const float (&p)[2 * kKSteps][4],
                                          uint32_t v_tile, int key0) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < kKSteps; ++kk) {
    // The C layout of two adjacent 8-key score tiles is the A layout of one 16-key k-step.
    const uint32_t a[4] = {
        PackBf16(p[2 * kk][0], p[2 * kk][1]), PackBf16(p[2 * kk][2], p[2 * kk][3]),
        PackBf16(p[2 * kk + 1][0], p[2 * kk + 1][1]), PackBf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int np = 0; np < D / 16; ++np) {
      // Matrices (transposed): keys 16 kk + (lane % 16), d chunks 2 np + (lane / 16): b of
      // n-tiles 2 np (r0, r1) and 2 np + 1 (r2, r3).
      uint32_t b[4];
      LdMatrixX4Trans(
          b, v_tile + Swizzle<D>(key0 + 16 * kk + lane % 16, 2 * np + lane / 16) * sizeof(bf16));
      Mma(o[2 * np], a, b[0], b[1]);
      Mma(o[2 * np + 1], a, b[2], b[3]);
    }
  }
}

__device__ __forceinline__ float QuadSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v;
}

// ---- decode ------------------------------------------------------------------------------------

struct DecodeParams {
  const bf16* q;
  bf16* out;
  const bf16* k_cache;
  const bf16* v_cache;
  const int32_t* block_tables;
  const int32_t* context_lens;
  float* partial_out;  // [B, Nq, splits, D] (splits > 1)
  float* partial_max;  // [B, Nq, splits], log2 domain
  float* partial_sum;  // [B, Nq, splits]
  int max_blocks;
  int num_splits;
  int num_heads;
  int num_kv_heads;
  int group;       // Nq / Nkv
  int head_tiles;  // ceil(group / kDecodeRows)
  int block_tokens;
  int block_shift;
  float scale_log2;
};

template <int D>
constexpr int DecodeSmemBytes() {
  return (kDecodeRows + 2 * kDecodeStages * kTileK) * D * static_cast<int>(sizeof(bf16));
}

// Row stride (floats) of the per-warp output staging of the decode epilogue; the pad keeps the
// float2 stores of a half-warp on distinct banks.
template <int D>
constexpr int DecodeMergeStride() {
  return D + 8;
}

template <int D>
__global__ void __launch_bounds__(kThreads) DecodeAttentionKernel(const DecodeParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* q_tile = reinterpret_cast<bf16*>(smem);
  bf16* k_tiles = q_tile + kDecodeRows * D;              // [stages][kTileK * D]
  bf16* v_tiles = k_tiles + kDecodeStages * kTileK * D;  // [stages][kTileK * D]
  constexpr int kChunks = D / 8;

  const int split = blockIdx.x;
  const int kv_head = blockIdx.y / p.head_tiles;
  const int head_tile = blockIdx.y % p.head_tiles;
  const int seq = blockIdx.z;
  const int head0 = kv_head * p.group + head_tile * kDecodeRows;  // first query head of the CTA
  const int rows = min(kDecodeRows, p.group - head_tile * kDecodeRows);
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;

  // This split's positions [begin, end): whole tiles, so tiles stay block-aligned.
  const int context = max(0, min(p.context_lens[seq], p.max_blocks * p.block_tokens));
  const int per_split =
      ((context + p.num_splits - 1) / p.num_splits + kTileK - 1) / kTileK * kTileK;
  const int64_t split_begin = int64_t{split} * per_split;
  const int begin = split_begin < context ? static_cast<int>(split_begin) : context;
  const int end = min(begin + per_split, context);
  const int num_tiles = (end - begin + kTileK - 1) / kTileK;  // 0 when begin == end

  // Q rows of the group; rows past it are zeros.
  const bf16* q = p.q + (int64_t{seq} * p.num_heads + head0) * D;
  for (int c = tid; c < kDecodeRows * kChunks; c += kThreads) {
    const int row = c / kChunks;
    const int chunk = c % kChunks;
    const bool valid = row < rows;
    CpAsync16(SmemAddress(q_tile + Swizzle<D>(row, chunk)), q + (valid ? row * D + chunk * 8 : 0),
              valid);
  }
  CpAsyncCommit();

  const int32_t* table = p.block_tables + int64_t{seq} * p.max_blocks;
  const uint32_t k_base = SmemAddress(k_tiles);
  const uint32_t v_base = SmemAddress(v_tiles);
  constexpr uint32_t kTileBytes = kTileK * D * sizeof(bf16);
  // Prologue: tiles 0 .. stages-2 (a group per stage even when empty, so the wait counts below
  // always name the same tile).
#pragma unroll
  for (int st = 0; st < kDecodeStages - 1; ++st) {
    if (st < num_tiles) {
      LoadKvTile<D>(k_base + st * kTileBytes, v_base + st * kTileBytes, p.k_cache, p.v_cache, table,
                    kv_head, p.num_kv_heads, p.block_tokens, p.block_shift, begin + st * kTileK,
                    end);
    }
    CpAsyncCommit();
  }

  CpAsyncWait<kDecodeStages - 1>();  // the Q group has landed
  __syncthreads();
  uint32_t qf[D / 16][4];
  LoadQFragments<D>(qf, SmemAddress(q_tile), 0);

  float o[D / 8][4];
#pragma unroll
  for (int nd = 0; nd < D / 8; ++nd) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[nd][e] = 0.0f;
  }
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.0f, 0.0f};
  const int t = lane % 4;

  for (int j = 0; j < num_tiles; ++j) {
    // Refill the stage that tile j - 1 used (freed by the barrier that ended iteration j - 1).
    const int next = j + kDecodeStages - 1;
    if (next < num_tiles) {
      const int st = next % kDecodeStages;
      LoadKvTile<D>(k_base + st * kTileBytes, v_base + st * kTileBytes, p.k_cache, p.v_cache, table,
                    kv_head, p.num_kv_heads, p.block_tokens, p.block_shift, begin + next * kTileK,
                    end);
    }
    CpAsyncCommit();
    CpAsyncWait<kDecodeStages - 1>();  // tile j has landed (this thread's copies)...
    __syncthreads();                   // ...and every other thread's

    const int st = j % kDecodeStages;
    const int warp_key0 = begin + j * kTileK + warp * 16;  // this warp's first position
    if (warp_key0 < end) {
      float s[2][4];
      QkScores<D, 2>(s, qf, k_base + st * kTileBytes, warp * 16);
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int pos = warp_key0 + 8 * nt + 2 * t + (e & 1);
          s[nt][e] = pos < end ? s[nt][e] * p.scale_log2 : -INFINITY;
        }
      }
      OnlineSoftmax<2, D / 8>(s, o, m, l);
      PvProduct<D, 1>(o, s, v_base + st * kTileBytes, warp * 16);
    }
    __syncthreads();  // stage st is refilled by iteration j + 1
  }
  CpAsyncWait<0>();  // only empty groups can be left; the buffers are reused below
  __syncthreads();

  // Merge the four warps' states. Staging reuses the K/V tiles.
  constexpr int kStride = DecodeMergeStride<D>();
  static_assert(
      kWarps * kDecodeRows * (kStride + 4) * sizeof(float) <= 2 * kDecodeStages * kTileBytes,
      "decode merge staging does not fit the K/V tiles");
  float* warp_out = reinterpret_cast<float*>(k_tiles);          // [warps][16][kStride]
  float* warp_max = warp_out + kWarps * kDecodeRows * kStride;  // [warps][16]
  float* warp_sum = warp_max + kWarps * kDecodeRows;            // [warps][16]
  float* warp_weight = warp_sum + kWarps * kDecodeRows;         // [warps][16]
  float* row_max = warp_weight + kWarps * kDecodeRows;          // [16]
  float* row_sum = row_max + kDecodeRows;                       // [16]
  const int g = lane / 4;
  l[0] = QuadSum(l[0]);
  l[1] = QuadSum(l[1]);
  if (t == 0) {
    warp_max[warp * kDecodeRows + g] = m[0];
    warp_max[warp * kDecodeRows + g + 8] = m[1];
    warp_sum[warp * kDecodeRows + g] = l[0];
    warp_sum[warp * kDecodeRows + g + 8] = l[1];
  }
#pragma unroll
  for (int nd = 0; nd < D / 8; ++nd) {
    float* r0 = warp_out + (warp * kDecodeRows + g) * kStride + nd * 8 + 2 * t;
    float* r1 = r0 + 8 * kStride;
    *reinterpret_cast<float2*>(r0) = make_float2(o[nd][0], o[nd][1]);
    *reinterpret_cast<float2*>(r1) = make_float2(o[nd][2], o[nd][3]);
  }
  __syncthreads();
  if (tid < kDecodeRows) {
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, warp_max[w * kDecodeRows + tid]);
    float sum = 0.0f;
    float weight[kWarps];
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      // A warp that saw no position has m = -inf and weighs 0; so does everything when the split
      // is empty (mx = -inf), which leaves sum = 0.
      weight[w] = mx == -INFINITY ? 0.0f : exp2f(warp_max[w * kDecodeRows + tid] - mx);
      sum += warp_sum[w * kDecodeRows + tid] * weight[w];
    }
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) warp_weight[w * kDecodeRows + tid] = weight[w] * inv;
    row_max[tid] = mx;
    row_sum[tid] = sum;
  }
  __syncthreads();

  // Each thread finishes 8 consecutive elements of a row: the normalised output of this split.
  for (int c = tid; c < rows * kChunks; c += kThreads) {
    const int row = c / kChunks;
    const int chunk = c % kChunks;
    float acc[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float wt = warp_weight[w * kDecodeRows + row];
      const float* src = warp_out + (w * kDecodeRows + row) * kStride + chunk * 8;
      const float4 lo = *reinterpret_cast<const float4*>(src);
      const float4 hi = *reinterpret_cast<const float4*>(src + 4);
      acc[0] += wt * lo.x;
      acc[1] += wt * lo.y;
      acc[2] += wt * lo.z;
      acc[3] += wt * lo.w;
      acc[4] += wt * hi.x;
      acc[5] += wt * hi.y;
      acc[6] += wt * hi.z;
      acc[7] += wt * hi.w;
    }
    const int64_t head_row = int64_t{seq} * p.num_heads + head0 + row;  // (b, h)
    if (p.num_splits == 1) {
      uint4 packed;
      packed.x = PackBf16(acc[0], acc[1]);
      packed.y = PackBf16(acc[2], acc[3]);
      packed.z = PackBf16(acc[4], acc[5]);
      packed.w = PackBf16(acc[6], acc[7]);
      *reinterpret_cast<uint4*>(p.out + head_row * D + chunk * 8) = packed;
    } else {
      const int64_t slot = head_row * p.num_splits + split;
      float* dst = p.partial_out + slot * D + chunk * 8;
      *reinterpret_cast<float4*>(dst) = make_float4(acc[0], acc[1], acc[2], acc[3]);
      *reinterpret_cast<float4*>(dst + 4) = make_float4(acc[4], acc[5], acc[6], acc[7]);
      if (chunk == 0) {
        p.partial_max[slot] = row_max[row];
        p.partial_sum[slot] = row_sum[row];
      }
    }
  }
}

// out[b, h] = sum_s w_s O_s / sum_s w_s with w_s = l_s 2^(m_s - max m): the exact softmax over
// all splits, since each O_s is normalised by its own l_s. A warp per (b, h); lane covers D / 32
// consecutive elements.
template <int D>
__global__ void __launch_bounds__(kThreads)
    DecodeMergeKernel(const float* __restrict__ partial_out, const float* __restrict__ partial_max,
                      const float* __restrict__ partial_sum, int head_rows, int num_splits,
                      bf16* __restrict__ out) {
  constexpr int kPerLane = D / 32;  // 4 or 2
  const int row = blockIdx.x * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= head_rows) return;
  const float* maxes = partial_max + int64_t{row} * num_splits;
  const float* sums = partial_sum + int64_t{row} * num_splits;
  float mx = -INFINITY;
  for (int s = 0; s < num_splits; ++s) mx = fmaxf(mx, maxes[s]);
  float acc[kPerLane] = {};
  float total = 0.0f;
  if (mx != -INFINITY) {
    for (int s = 0; s < num_splits; ++s) {
      const float w = sums[s] * exp2f(maxes[s] - mx);  // 0 for an empty split (m = -inf, l = 0)
      total += w;
      const float* src = partial_out + (int64_t{row} * num_splits + s) * D + lane * kPerLane;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) acc[e] += w * src[e];
    }
  }
  const float inv = total > 0.0f ? 1.0f / total : 0.0f;
  bf16* dst = out + int64_t{row} * D + lane * kPerLane;
#pragma unroll
  for (int e = 0; e < kPerLane; e += 2) {
    *reinterpret_cast<__nv_bfloat162*>(dst + e) =
        __floats2bfloat162_rn(acc[e] * inv, acc[e + 1] * inv);
  }
}

// ---- prefill -----------------------------------------------------------------------------------

struct PrefillParams {
  const bf16* q;
  bf16* out;
  const bf16* k_cache;
  const bf16* v_cache;
  const int32_t* block_tables;
  const int32_t* q_offsets;
  const int32_t* context_lens;
  int max_blocks;
  int num_heads;
  int num_kv_heads;
  int group;
  int block_tokens;
  int block_shift;
  float scale_log2;
};

template <int D>
constexpr int PrefillSmemBytes() {
  return (kPrefillTileQ + 2 * kPrefillStages * kTileK) * D * static_cast<int>(sizeof(bf16));
}

template <int D>
__global__ void __launch_bounds__(kThreads) PrefillAttentionKernel(const PrefillParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* q_tile = reinterpret_cast<bf16*>(smem);
  bf16* k_tiles = q_tile + kPrefillTileQ * D;
  bf16* v_tiles = k_tiles + kPrefillStages * kTileK * D;
  constexpr int kChunks = D / 8;
  constexpr uint32_t kTileBytes = kTileK * D * sizeof(bf16);

  const int item = blockIdx.z;
  const int head = blockIdx.y;
  // Tiles in reverse launch order: later tiles attend to more positions, so the longest CTAs start
  // first and the short ones fill in behind them.
  const int tile_row0 = (gridDim.x - 1 - blockIdx.x) * kPrefillTileQ;  // first chunk row here
  const int item_row0 = p.q_offsets[item];
  const int n = p.q_offsets[item + 1] - item_row0;
  if (tile_row0 >= n) return;  // the grid is sized for the longest chunk
  const int rows = min(kPrefillTileQ, n - tile_row0);
  const int context = max(0, min(p.context_lens[item], p.max_blocks * p.block_tokens));
  const int first_pos = context - n + tile_row0;  // position of tile row 0
  // Keys [0, kv_end): up to the tile's last row, the most any row here may see.
  const int kv_end = max(0, first_pos + rows);
  const int num_tiles = (kv_end + kTileK - 1) / kTileK;
  const int kv_head = head / p.group;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;

  const bf16* q = p.q + (int64_t{item_row0} + tile_row0) * p.num_heads * D + int64_t{head} * D;
  const int64_t q_row_stride = int64_t{p.num_heads} * D;
  for (int c = tid; c < kPrefillTileQ * kChunks; c += kThreads) {
    const int row = c / kChunks;
    const int chunk = c % kChunks;
    const bool valid = row < rows;
    CpAsync16(SmemAddress(q_tile + Swizzle<D>(row, chunk)),
              q + (valid ? row * q_row_stride + chunk * 8 : 0), valid);
  }
  CpAsyncCommit();

  const int32_t* table = p.block_tables + int64_t{item} * p.max_blocks;
  const uint32_t k_base = SmemAddress(k_tiles);
  const uint32_t v_base = SmemAddress(v_tiles);
#pragma unroll
  for (int st = 0; st < kPrefillStages - 1; ++st) {
    if (st < num_tiles) {
      LoadKvTile<D>(k_base + st * kTileBytes, v_base + st * kTileBytes, p.k_cache, p.v_cache, table,
                    kv_head, p.num_kv_heads, p.block_tokens, p.block_shift, st * kTileK, kv_end);
    }
    CpAsyncCommit();
  }

  CpAsyncWait<kPrefillStages - 1>();  // the Q group has landed
  __syncthreads();
  const int warp_row0 = warp * 16;  // tile row of the warp's first row
  uint32_t qf[D / 16][4];
  LoadQFragments<D>(qf, SmemAddress(q_tile), warp_row0);

  // Positions of the warp's rows: the thread holds rows g and g + 8 of the warp's 16.
  const int g = lane / 4;
  const int t = lane % 4;
  const bool warp_has_rows = warp_row0 < rows;
  const int warp_first_pos = first_pos + warp_row0;
  const int warp_last_pos = first_pos + min(warp_row0 + 16, rows) - 1;
  const int row_pos[2] = {warp_first_pos + g, warp_first_pos + g + 8};

  float o[D / 8][4];
#pragma unroll
  for (int nd = 0; nd < D / 8; ++nd) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[nd][e] = 0.0f;
  }
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.0f, 0.0f};

  for (int j = 0; j < num_tiles; ++j) {
    const int next = j + kPrefillStages - 1;
    if (next < num_tiles) {
      const int st = next % kPrefillStages;
      LoadKvTile<D>(k_base + st * kTileBytes, v_base + st * kTileBytes, p.k_cache, p.v_cache, table,
                    kv_head, p.num_kv_heads, p.block_tokens, p.block_shift, next * kTileK, kv_end);
    }
    CpAsyncCommit();
    CpAsyncWait<kPrefillStages - 1>();
    __syncthreads();

    const int st = j % kPrefillStages;
    const int key0 = j * kTileK;
    // Skip a tile that starts past every row of this warp: all of it is masked.
    if (warp_has_rows && key0 <= warp_last_pos) {
      float s[kTileK / 8][4];
      QkScores<D, kTileK / 8>(s, qf, k_base + st * kTileBytes, 0);
      // Only a tile reaching past the warp's first row crosses the diagonal. Rows past the chunk
      // (row >= rows) have positions past kv_end - 1, so they see only valid or zero-filled keys
      // and stay finite; they are not stored.
      if (key0 + kTileK - 1 > warp_first_pos) {
#pragma unroll
        for (int nt = 0; nt < kTileK / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int pos = key0 + 8 * nt + 2 * t + (e & 1);
            s[nt][e] = pos <= row_pos[e / 2] ? s[nt][e] * p.scale_log2 : -INFINITY;
          }
        }
      } else {
#pragma unroll
        for (int nt = 0; nt < kTileK / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) s[nt][e] *= p.scale_log2;
        }
      }
      OnlineSoftmax<kTileK / 8, D / 8>(s, o, m, l);
      PvProduct<D, kTileK / 16>(o, s, v_base + st * kTileBytes, 0);
    }
    __syncthreads();
  }
  CpAsyncWait<0>();

  // Normalise and store. The warp's 16 rows of the Q tile are read only by this warp (its
  // fragments were loaded before the loop), so they can stage the bf16 output without a barrier.
  const float sum0 = QuadSum(l[0]);
  const float sum1 = QuadSum(l[1]);
  const float inv0 = sum0 > 0.0f ? 1.0f / sum0 : 0.0f;  // 0: a row that saw no position
  const float inv1 = sum1 > 0.0f ? 1.0f / sum1 : 0.0f;
  __syncwarp();  // every lane's ldmatrix of these rows is behind us before they are overwritten
#pragma unroll
  for (int nd = 0; nd < D / 8; ++nd) {
    bf16* r0 = q_tile + Swizzle<D>(warp_row0 + g, nd) + 2 * t;
    bf16* r1 = q_tile + Swizzle<D>(warp_row0 + g + 8, nd) + 2 * t;
    *reinterpret_cast<__nv_bfloat162*>(r0) =
        __floats2bfloat162_rn(o[nd][0] * inv0, o[nd][1] * inv0);
    *reinterpret_cast<__nv_bfloat162*>(r1) =
        __floats2bfloat162_rn(o[nd][2] * inv1, o[nd][3] * inv1);
  }
  __syncwarp();
  bf16* out = p.out + (int64_t{item_row0} + tile_row0) * p.num_heads * D + int64_t{head} * D;
  for (int c = lane; c < 16 * kChunks; c += 32) {
    const int row = warp_row0 + c / kChunks;
    const int chunk = c % kChunks;
    if (row < rows) {
      *reinterpret_cast<uint4*>(out + row * q_row_stride + chunk * 8) =
          *reinterpret_cast<const uint4*>(q_tile + Swizzle<D>(row, chunk));
    }
  }
}

// ---- launch helpers ----------------------------------------------------------------------------

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int BlockShift(int block_tokens) { return block_tokens == 16 ? 4 : block_tokens == 32 ? 5 : 6; }

int HeadTiles(const AttentionShape& s) {
  return (s.num_heads / s.num_kv_heads + kDecodeRows - 1) / kDecodeRows;
}

absl::Status CheckShape(absl::string_view what, const AttentionShape& s) {
  if (s.head_dim != 64 && s.head_dim != 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": head_dim ", s.head_dim, " is not 64 or 128"));
  }
  if (s.num_heads <= 0 || s.num_kv_heads <= 0 || s.num_heads % s.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": num_heads ", s.num_heads,
                                                   " is not a positive multiple of num_kv_heads ",
                                                   s.num_kv_heads));
  }
  if (s.block_tokens != 16 && s.block_tokens != 32 && s.block_tokens != 64) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": block_tokens ", s.block_tokens, " is not 16, 32 or 64"));
  }
  if (!std::isfinite(s.scale)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": scale ", s.scale, " is not finite"));
  }
  return absl::OkStatus();
}

template <typename Kernel>
absl::Status SetSmem(Kernel kernel, int bytes, absl::string_view what) {
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err == cudaSuccess) return absl::OkStatus();
  cudaGetLastError();  // not sticky: keep it out of the next LaunchStatus
  return absl::InternalError(absl::StrCat(what, ": cannot raise shared memory to ", bytes,
                                          " bytes: ", cudaGetErrorString(err)));
}

template <int D>
absl::Status LaunchDecode(const DecodeParams& p, int batch, cudaStream_t stream) {
  constexpr int kSmem = DecodeSmemBytes<D>();
  if (absl::Status st = SetSmem(DecodeAttentionKernel<D>, kSmem, "decode attention"); !st.ok()) {
    return st;
  }
  const dim3 grid(p.num_splits, p.num_kv_heads * p.head_tiles, batch);
  DecodeAttentionKernel<D><<<grid, kThreads, kSmem, stream>>>(p);
  if (absl::Status st = LaunchStatus("decode attention"); !st.ok()) return st;
  if (p.num_splits == 1) return absl::OkStatus();
  const int head_rows = batch * p.num_heads;
  DecodeMergeKernel<D><<<(head_rows + kWarps - 1) / kWarps, kThreads, 0, stream>>>(
      p.partial_out, p.partial_max, p.partial_sum, head_rows, p.num_splits, p.out);
  return LaunchStatus("decode attention merge");
}

template <int D>
absl::Status LaunchPrefill(const PrefillParams& p, int items, int max_q_len, cudaStream_t stream) {
  constexpr int kSmem = PrefillSmemBytes<D>();
  if (absl::Status st = SetSmem(PrefillAttentionKernel<D>, kSmem, "prefill attention"); !st.ok()) {
    return st;
  }
  const dim3 grid((max_q_len + kPrefillTileQ - 1) / kPrefillTileQ, p.num_heads, items);
  PrefillAttentionKernel<D><<<grid, kThreads, kSmem, stream>>>(p);
  return LaunchStatus("prefill attention");
}

}  // namespace

int DecodeAttentionSplits(int batch, const AttentionShape& shape, int sm_count) {
  if (batch <= 0 || sm_count <= 0 || shape.num_kv_heads <= 0 || shape.num_heads <= 0 ||
      shape.num_heads % shape.num_kv_heads != 0) {
    return 1;
  }
  const int64_t ctas = int64_t{batch} * shape.num_kv_heads * HeadTiles(shape);
  if (ctas >= sm_count) return 1;
  // About two CTAs per SM: two decode CTAs fit an SM at D = 128, so this is one full wave there.
  const int64_t splits = (2 * int64_t{sm_count} + ctas - 1) / ctas;
  return static_cast<int>(std::min<int64_t>(splits, kMaxSplits));
}

size_t DecodeAttentionWorkspaceBytes(int batch, const AttentionShape& shape, int num_splits) {
  if (batch <= 0 || num_splits <= 0 || shape.num_heads <= 0 || shape.head_dim <= 0) return 0;
  const size_t slots = size_t(batch) * shape.num_heads * num_splits;
  return slots * shape.head_dim * sizeof(float) + 2 * slots * sizeof(float);
}

absl::Status LaunchDecodeAttention(const DecodeAttentionArgs& args, cudaStream_t stream) {
  if (args.batch <= 0) return absl::OkStatus();
  const AttentionShape& s = args.shape;
  if (absl::Status st = CheckShape("decode attention", s); !st.ok()) return st;
  if (args.q == nullptr || args.out == nullptr || args.k_cache == nullptr ||
      args.v_cache == nullptr || args.block_tables == nullptr || args.context_lens == nullptr) {
    return absl::InvalidArgumentError(
        "decode attention: null q, out, k_cache, v_cache, block_tables or context_lens");
  }
  if (!Aligned16(args.q) || !Aligned16(args.out) || !Aligned16(args.k_cache) ||
      !Aligned16(args.v_cache)) {
    return absl::InvalidArgumentError(
        "decode attention: q, out, k_cache and v_cache must be 16-byte aligned");
  }
  if (args.max_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode attention: max_blocks ", args.max_blocks, " must be > 0"));
  }
  if (args.num_splits < 1 || args.num_splits > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode attention: num_splits ", args.num_splits, " is not in [1, 65535]"));
  }
  if (args.num_splits > 1 && (args.workspace == nullptr || !Aligned16(args.workspace))) {
    return absl::InvalidArgumentError(
        absl::StrCat("decode attention: num_splits ", args.num_splits,
                     " needs a 16-byte aligned workspace of DecodeAttentionWorkspaceBytes bytes"));
  }
  const int head_tiles = HeadTiles(s);
  if (args.batch > 65535 || int64_t{s.num_kv_heads} * head_tiles > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("decode attention: batch ", args.batch, " or ",
                                                   s.num_kv_heads,
                                                   " kv heads exceed the grid limit"));
  }
  DecodeParams p;
  p.q = args.q;
  p.out = args.out;
  p.k_cache = args.k_cache;
  p.v_cache = args.v_cache;
  p.block_tables = args.block_tables;
  p.context_lens = args.context_lens;
  const size_t slots = size_t(args.batch) * s.num_heads * args.num_splits;
  p.partial_out = static_cast<float*>(args.workspace);
  p.partial_max = p.partial_out == nullptr ? nullptr : p.partial_out + slots * s.head_dim;
  p.partial_sum = p.partial_max == nullptr ? nullptr : p.partial_max + slots;
  p.max_blocks = args.max_blocks;
  p.num_splits = args.num_splits;
  p.num_heads = s.num_heads;
  p.num_kv_heads = s.num_kv_heads;
  p.group = s.num_heads / s.num_kv_heads;
  p.head_tiles = head_tiles;
  p.block_tokens = s.block_tokens;
  p.block_shift = BlockShift(s.block_tokens);
  p.scale_log2 = s.scale * kLog2e;
  return s.head_dim == 64 ? LaunchDecode<64>(p, args.batch, stream)
                          : LaunchDecode<128>(p, args.batch, stream);
}

absl::Status LaunchPrefillAttention(const PrefillAttentionArgs& args, cudaStream_t stream) {
  if (args.items <= 0 || args.max_q_len <= 0) return absl::OkStatus();
  const AttentionShape& s = args.shape;
  if (absl::Status st = CheckShape("prefill attention", s); !st.ok()) return st;
  if (args.q == nullptr || args.out == nullptr || args.k_cache == nullptr ||
      args.v_cache == nullptr || args.block_tables == nullptr || args.q_offsets == nullptr ||
      args.context_lens == nullptr) {
    return absl::InvalidArgumentError(
        "prefill attention: null q, out, k_cache, v_cache, block_tables, q_offsets or "
        "context_lens");
  }
  if (!Aligned16(args.q) || !Aligned16(args.out) || !Aligned16(args.k_cache) ||
      !Aligned16(args.v_cache)) {
    return absl::InvalidArgumentError(
        "prefill attention: q, out, k_cache and v_cache must be 16-byte aligned");
  }
  if (args.max_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefill attention: max_blocks ", args.max_blocks, " must be > 0"));
  }
  if (args.items > 65535 || s.num_heads > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("prefill attention: ", args.items, " items or ",
                                                   s.num_heads, " heads exceed the grid limit"));
  }
  PrefillParams p;
  p.q = args.q;
  p.out = args.out;
  p.k_cache = args.k_cache;
  p.v_cache = args.v_cache;
  p.block_tables = args.block_tables;
  p.q_offsets = args.q_offsets;
  p.context_lens = args.context_lens;
  p.max_blocks = args.max_blocks;
  p.num_heads = s.num_heads;
  p.num_kv_heads = s.num_kv_heads;
  p.group = s.num_heads / s.num_kv_heads;
  p.block_tokens = s.block_tokens;
  p.block_shift = BlockShift(s.block_tokens);
  p.scale_log2 = s.scale * kLog2e;
  return s.head_dim == 64 ? LaunchPrefill<64>(p, args.items, args.max_q_len, stream)
                          : LaunchPrefill<128>(p, args.items, args.max_q_len, stream);
}

}  // namespace engram::kernels
