// Unified Engram row gather (row_gather.cuh).
//
// Parallelisation: one warp per row, 8 rows per 256-thread block. The warp first resolves the row's
// source: the HBM slot map is probed 32 entries at a time (each lane reads one entry's key, a ballot
// finds the first match before the first empty entry), so a probe chain costs one coalesced 512-byte
// read per 32 entries; then the staging index and the arena bound are checked. It then copies the
// row in the widest word (16, 8, 4 bytes or one element) that divides the row layout and every base
// address, each lane decoding its word's values to bf16 and storing them as one word. FP8 rows load
// their E8M0 scales once per warp (one byte per lane, then shuffled), so a 264-byte V4.1 row is 33
// 8-byte loads. As in the plain gather, rows are independent random reads with no reuse: occupancy
// (many rows in flight) hides HBM and PCIe latency.
#include "model/kernels/row_gather.cuh"

#include <cuda_bf16.h>

#include "absl/strings/str_cat.h"

namespace engram::kernels {
namespace {

constexpr int kWarpsPerBlock = 8;

// E4M3 (no infinities; S.1111.111 is NaN) to f32, as common/safetensors.h F8E4M3ToF32.
__device__ inline float E4M3ToFloat(uint8_t bits) {
  const int exp = (bits >> 3) & 0xf, mant = bits & 0x7;
  float v;
  if (exp == 0xf && mant == 0x7) {
    v = __int_as_float(0x7fc00000);
  } else if (exp == 0) {
    v = ldexpf(static_cast<float>(mant), -9);
  } else {
    v = ldexpf(1.0f + mant / 8.0f, exp - 7);
  }
  return (bits & 0x80) ? -v : v;
}

// E8M0 to f32: 2^(bits - 127); 0xff is NaN.
__device__ inline float E8M0ToFloat(uint8_t bits) {
  return bits == 0xff ? __int_as_float(0x7fc00000) : ldexpf(1.0f, int(bits) - 127);
}

// The source of row id `row` for output row i (kRowSources order), and its bytes.
__device__ inline int Resolve(const RowGatherArgs& a, uint32_t i, uint64_t row, uint32_t row_bytes,
                              const uint8_t** src) {
  const uint32_t lane = threadIdx.x % 32;
  if (a.slot_map != nullptr) {
    const uint64_t key = a.key_offset + row;
    const uint64_t home = HotSlotHome(key, a.slot_mask);
    for (uint64_t base = 0; base <= a.slot_mask; base += 32) {
      const uint64_t e = (home + base + lane) & a.slot_mask;
      const uint64_t k = a.slot_map[e].row;
      const unsigned match = __ballot_sync(0xffffffffu, k == key);
      const unsigned empty = __ballot_sync(0xffffffffu, k == kEmptyRow);
      // Lanes past the map's end (a map of fewer than 32 entries) wrap onto entries already seen,
      // which changes nothing: the first match or empty entry comes first.
      if (match != 0 && (empty == 0 || __ffs(match) < __ffs(empty))) {
        const int hit_lane = __ffs(match) - 1;
        const uint32_t slot = __shfl_sync(0xffffffffu, a.slot_map[e].slot, hit_lane);
        *src = a.pool + uint64_t(slot) * row_bytes;
        return kRowFromHbm;
      }
      if (empty != 0) break;
    }
  }
  if (a.staging_index != nullptr && a.staging_index[i] != kNotStaged) {
    *src = a.staging + uint64_t(a.staging_index[i]) * row_bytes;
    return kRowFromStaging;
  }
  if (a.arena != nullptr && row < a.arena_rows) {
    *src = a.arena + row * a.arena_stride;
    return kRowFromArena;
  }
  return kRowMissing;
}

template <int kBytes>
struct WordOf;
template <> struct WordOf<1> { using T = uint8_t; };
template <> struct WordOf<2> { using T = uint16_t; };
template <> struct WordOf<4> { using T = uint32_t; };
template <> struct WordOf<8> { using T = uint2; };
template <> struct WordOf<16> { using T = uint4; };
struct alignas(32) Word32 { uint4 lo, hi; };
template <> struct WordOf<32> { using T = Word32; };

// Word: the load width in bytes; Elem: bytes per stored value (4 f32, 2 bf16, 1 fp8). A word's
// kValues values are stored as one word of kValues bf16.
template <int Word, int Elem>
__global__ void RowGatherKernel(RowGatherArgs a, uint32_t row_bytes) {
  constexpr int kValues = Word / Elem;
  static_assert(kValues >= 1 && Word % Elem == 0, "a word holds whole values");
  using In = typename WordOf<Word>::T;
  using Out = typename WordOf<kValues * 2>::T;
  __shared__ float block_scales[kWarpsPerBlock][32];
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t i = blockIdx.x * kWarpsPerBlock + warp;
  if (i >= a.n) return;  // whole warps leave together
  const int D = a.head_dim;
  bf16* dst = a.out + uint64_t(i) * D;
  const uint8_t* src = nullptr;
  const int source = Resolve(a, i, a.row_ids[i], row_bytes, &src);
  if (a.counters != nullptr && lane == 0) atomicAdd(&a.counters[source], 1u);
  const int words = D / kValues;
  if (source == kRowMissing) {
    for (int j = lane; j < D; j += 32) dst[j] = __float2bfloat16_rn(0.0f);
    return;
  }
  float* scales = block_scales[warp];
  if constexpr (Elem == 1) {
    // FP8 rows: the warp loads the D / 32 E8M0 scales once, one byte per lane.
    if (lane < D / kFp8BlockSize) scales[lane] = E8M0ToFloat(src[D + lane]);
    __syncwarp();
  }
  for (int w = lane; w < words; w += 32) {
    union {
      In word;
      uint8_t bytes[Word];
    } in;
    in.word = reinterpret_cast<const In*>(src)[w];
    union {
      Out word;
      bf16 values[kValues];
    } out;
    if constexpr (Elem == 4) {
      #pragma unroll
      for (int k = 0; k < kValues; ++k) {
        float f;
        memcpy(&f, in.bytes + 4 * k, 4);
        out.values[k] = __float2bfloat16_rn(f);
      }
    } else if constexpr (Elem == 2) {
      memcpy(out.values, in.bytes, Word);
    } else {
      // A word's values share one scale block: kValues <= 16 divides the block of 32.
      const float s = scales[w * kValues / kFp8BlockSize];
      #pragma unroll
      for (int k = 0; k < kValues; ++k) out.values[k] = __float2bfloat16_rn(E4M3ToFloat(in.bytes[k]) * s);
    }
    reinterpret_cast<Out*>(dst)[w] = out.word;
  }
}

template <int Word, int Elem>
absl::Status Launch(const RowGatherArgs& a, uint32_t row_bytes, cudaStream_t stream) {
  const uint32_t blocks = (a.n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  RowGatherKernel<Word, Elem><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(a, row_bytes);
  return LaunchStatus("row gather");
}

// The widest load of at most 16 bytes that divides `mix` (every address and length the kernel
// reads or writes, scaled as described at the call), down to one value.
template <int Elem>
absl::Status LaunchWidest(const RowGatherArgs& a, uint32_t row_bytes, uint64_t mix,
                          cudaStream_t stream) {
  if (mix % 16 == 0) return Launch<16, Elem>(a, row_bytes, stream);
  if (mix % 8 == 0) return Launch<8, Elem>(a, row_bytes, stream);
  if constexpr (Elem <= 4) {
    if (mix % 4 == 0) return Launch<4, Elem>(a, row_bytes, stream);
  }
  if constexpr (Elem <= 2) {
    if (mix % 2 == 0) return Launch<2, Elem>(a, row_bytes, stream);
  }
  return Launch<Elem, Elem>(a, row_bytes, stream);
}

}  // namespace

absl::Status LaunchRowGather(const RowGatherArgs& a, cudaStream_t stream) {
  if (a.n == 0) return absl::OkStatus();
  if (a.row_ids == nullptr || a.out == nullptr) {
    return absl::InvalidArgumentError("row gather: null row_ids or out");
  }
  if (a.dtype == RowDType::kF16) {
    return absl::InvalidArgumentError("row gather: f16 rows are not supported (f32, bf16, fp8)");
  }
  if (a.dtype == RowDType::kFp8E4M3E8M0 && (a.head_dim > 32 * kFp8BlockSize)) {
    return absl::InvalidArgumentError(
        absl::StrCat("row gather: fp8 head_dim ", a.head_dim, " above ", 32 * kFp8BlockSize));
  }
  absl::StatusOr<size_t> bytes = RowBytes(a.dtype, a.head_dim);
  if (!bytes.ok()) return absl::InvalidArgumentError(absl::StrCat("row gather: ", bytes.status().message()));
  const uint32_t row_bytes = static_cast<uint32_t>(*bytes);
  if (a.slot_map != nullptr && (a.pool == nullptr || ((a.slot_mask + 1) & a.slot_mask) != 0)) {
    return absl::InvalidArgumentError(
        "row gather: a slot map needs a pool and a power-of-two entry count (mask + 1)");
  }
  if (a.staging_index != nullptr && a.staging == nullptr) {
    return absl::InvalidArgumentError("row gather: staging_index without staging rows");
  }
  if (a.arena != nullptr && a.arena_stride < row_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("row gather: arena stride ", a.arena_stride,
                                                   " below the row size ", row_bytes));
  }
  const int elem = a.dtype == RowDType::kF32 ? 4 : a.dtype == RowDType::kBF16 ? 2 : 1;
  // A load of W bytes needs W to divide every row start (pool, staging, arena), the row stride and
  // the payload's length D * elem; its W / elem values are stored as one word of 2 W / elem bytes,
  // so the output address scaled by elem / 2 must be a multiple of W too.
  const uint64_t mix = row_bytes | uint64_t(a.head_dim) * elem | a.arena_stride |
                       reinterpret_cast<uintptr_t>(a.pool) | reinterpret_cast<uintptr_t>(a.staging) |
                       reinterpret_cast<uintptr_t>(a.arena) |
                       reinterpret_cast<uintptr_t>(a.out) * elem / 2;
  if (mix % elem != 0 || reinterpret_cast<uintptr_t>(a.out) % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("row gather: a row source or the output is not aligned to its ", elem,
                     "-byte values"));
  }
  switch (elem) {
    case 4:
      return LaunchWidest<4>(a, row_bytes, mix, stream);
    case 2:
      return LaunchWidest<2>(a, row_bytes, mix, stream);
    default:
      return LaunchWidest<1>(a, row_bytes, mix, stream);
  }
}

}  // namespace engram::kernels
