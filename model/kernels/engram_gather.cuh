// Gather of Engram table rows by row id on the GPU, from HBM or from pinned host memory.
//
// The table may live in device memory (the HBM hot tier) or in host memory mapped into the GPU's
// address space (the memory tier's shared-memory arena after cudaHostRegister, docs/architecture.md
// contract 3): the kernel reads it in place, so warm rows cross PCIe once, with no staging copy.
#ifndef ENGRAM_MODEL_KERNELS_ENGRAM_GATHER_CUH_
#define ENGRAM_MODEL_KERNELS_ENGRAM_GATHER_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace engram::kernels {

struct EngramGatherArgs {
  // Base of the table as seen by the device (device pointer or mapped host pointer).
  const uint8_t* table = nullptr;
  // Rows in the table; ids at or above are written as zeros and counted in *out_of_range.
  uint64_t table_rows = 0;
  // Distance between consecutive rows in bytes (>= row_bytes; e.g. the arena's slot size).
  uint64_t row_stride = 0;
  // Bytes copied per row.
  uint32_t row_bytes = 0;
  // Device-visible array of n row ids.
  const uint64_t* row_ids = nullptr;
  uint32_t n = 0;
  // Device output, n * row_bytes bytes, row i at i * row_bytes.
  uint8_t* out = nullptr;
  // Optional device counter incremented once per out-of-range id (nullptr = not counted).
  unsigned int* out_of_range = nullptr;
};

// Enqueues the gather on `stream`; returns launch errors (not asynchronous faults).
absl::Status LaunchEngramGather(const EngramGatherArgs& args, cudaStream_t stream);

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_ENGRAM_GATHER_CUH_
