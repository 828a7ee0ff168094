// Engram row gather.
//
// Parallelisation: one warp per output row; a block of 256 threads handles 8 rows. Each lane copies
// 16-byte words when the row size, stride and both base pointers allow it (bf16 rows of 64 or 128
// bytes, 264-byte FP8 rows fall back to 8- or 4-byte words), so a warp moves up to 512 bytes per
// instruction. Rows are independent random accesses: the warp-per-row layout keeps every access to
// one row in one warp, which for pinned host memory means whole 64-128 byte PCIe read requests, and
// for HBM whole 32-byte sectors. There is no shared memory and no reuse, so occupancy (many rows in
// flight) is what hides the latency: PCIe reads take ~1-2 us each, so a batch needs thousands of
// outstanding loads to approach the link's rate.
#include "model/kernels/engram_gather.cuh"

#include "absl/strings/str_cat.h"

namespace engram::kernels {
namespace {

constexpr int kWarpsPerBlock = 8;

template <typename Word>
__global__ void EngramGatherKernel(const uint8_t* __restrict__ table, uint64_t table_rows,
                                   uint64_t row_stride, uint32_t row_bytes,
                                   const uint64_t* __restrict__ row_ids, uint32_t n,
                                   uint8_t* __restrict__ out, unsigned int* out_of_range) {
  const uint32_t warp = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const uint32_t lane = threadIdx.x % 32;
  if (warp >= n) return;
  const uint64_t id = row_ids[warp];
  const uint32_t words = row_bytes / sizeof(Word);
  Word* dst = reinterpret_cast<Word*>(out + static_cast<uint64_t>(warp) * row_bytes);
  if (id >= table_rows) {
    for (uint32_t w = lane; w < words; w += 32) dst[w] = Word{};
    if (lane == 0 && out_of_range != nullptr) atomicAdd(out_of_range, 1u);
    return;
  }
  const Word* src = reinterpret_cast<const Word*>(table + id * row_stride);
  for (uint32_t w = lane; w < words; w += 32) dst[w] = src[w];
}

bool Aligned(uint64_t value, uint64_t alignment) { return value % alignment == 0; }

template <typename Word>
void Launch(const EngramGatherArgs& a, cudaStream_t stream) {
  const uint32_t blocks = (a.n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  EngramGatherKernel<Word><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
      a.table, a.table_rows, a.row_stride, a.row_bytes, a.row_ids, a.n, a.out, a.out_of_range);
}

}  // namespace

absl::Status LaunchEngramGather(const EngramGatherArgs& args, cudaStream_t stream) {
  if (args.n == 0) return absl::OkStatus();
  if (args.table == nullptr || args.row_ids == nullptr || args.out == nullptr) {
    return absl::InvalidArgumentError("engram gather: null table, row_ids or out");
  }
  if (args.row_bytes == 0 || args.row_stride < args.row_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("engram gather: row_bytes ", args.row_bytes,
                                                   " must be > 0 and <= row_stride ", args.row_stride));
  }
  // The widest word that divides the row size, the stride and both base addresses.
  const uint64_t mix = args.row_bytes | args.row_stride | reinterpret_cast<uintptr_t>(args.table) |
                       reinterpret_cast<uintptr_t>(args.out);
  if (Aligned(mix, 16)) {
    Launch<uint4>(args, stream);
  } else if (Aligned(mix, 8)) {
    Launch<uint2>(args, stream);
  } else if (Aligned(mix, 4)) {
    Launch<uint32_t>(args, stream);
  } else {
    Launch<uint8_t>(args, stream);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("engram gather launch: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace engram::kernels
