// Plain CPU references for the CUDA kernels in model/kernels/. Every kernel is tested against its
// reference with awkward shapes (docs/architecture.md pattern 3); these functions are the
// definition of what the kernels compute.
#ifndef ENGRAM_MODEL_KERNELS_REFERENCE_H_
#define ENGRAM_MODEL_KERNELS_REFERENCE_H_

#include <cstddef>
#include <cstdint>

#include "common/row_format.h"

namespace engram::kernels {

// out[i * row_bytes .. +row_bytes) = table[row_ids[i] * row_stride .. +row_bytes) for i < n.
// Rows whose id is >= table_rows are written as zeros and counted in the return value.
size_t EngramGatherReference(const uint8_t* table, uint64_t table_rows, uint64_t row_stride,
                             uint32_t row_bytes, const uint64_t* row_ids, size_t n, uint8_t* out);

// One output row of the unified row gather (row_gather.cuh): the stored row decoded by DecodeRows
// (common/row_format.h) and rounded to bf16 bits, nearest even; zeros when `row` is null (a row no
// source holds).
void RowGatherReference(RowDType dtype, int head_dim, const uint8_t* row, uint16_t* out);

}  // namespace engram::kernels

#endif  // ENGRAM_MODEL_KERNELS_REFERENCE_H_
