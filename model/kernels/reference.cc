#include "model/kernels/reference.h"

#include <cstring>
#include <vector>

#include "common/safetensors.h"

namespace engram::kernels {

size_t EngramGatherReference(const uint8_t* table, uint64_t table_rows, uint64_t row_stride,
                             uint32_t row_bytes, const uint64_t* row_ids, size_t n, uint8_t* out) {
  size_t out_of_range = 0;
  for (size_t i = 0; i < n; ++i) {
    uint8_t* dst = out + i * row_bytes;
    if (row_ids[i] >= table_rows) {
      std::memset(dst, 0, row_bytes);
      ++out_of_range;
      continue;
    }
    std::memcpy(dst, table + row_ids[i] * row_stride, row_bytes);
  }
  return out_of_range;
}

void RowGatherReference(RowDType dtype, int head_dim, const uint8_t* row, uint16_t* out) {
  std::vector<float> values(head_dim, 0.0f);
  if (row != nullptr && !DecodeRows(dtype, row, 1, head_dim, values.data()).ok()) {
    values.assign(head_dim, 0.0f);
  }
  for (int j = 0; j < head_dim; ++j) out[j] = F32ToBf16(values[j]);
}

}  // namespace engram::kernels
