#include "common/row_format.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/safetensors.h"
#include "common/status.h"

namespace engram {

absl::string_view RowDTypeName(RowDType dtype) {
  switch (dtype) {
    case RowDType::kF32:
      return "f32";
    case RowDType::kBF16:
      return "bf16";
    case RowDType::kF16:
      return "f16";
    case RowDType::kFp8E4M3E8M0:
      return "fp8_e4m3_e8m0";
  }
  return "unknown";
}

absl::StatusOr<RowDType> ParseRowDType(absl::string_view name) {
  for (RowDType d : {RowDType::kF32, RowDType::kBF16, RowDType::kF16, RowDType::kFp8E4M3E8M0}) {
    if (RowDTypeName(d) == name) return d;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown row dtype \"", name, "\" (expected f32, bf16, f16 or fp8_e4m3_e8m0)"));
}

std::optional<RowDType> PlainRowDType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return RowDType::kF32;
    case DType::kBF16:
      return RowDType::kBF16;
    case DType::kF16:
      return RowDType::kF16;
    default:
      return std::nullopt;
  }
}

absl::StatusOr<size_t> RowBytes(RowDType dtype, int head_dim) {
  if (head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("head_dim must be positive, got ", head_dim));
  }
  const size_t d = static_cast<size_t>(head_dim);
  switch (dtype) {
    case RowDType::kF32:
      return d * 4;
    case RowDType::kBF16:
    case RowDType::kF16:
      return d * 2;
    case RowDType::kFp8E4M3E8M0:
      if (head_dim % kFp8BlockSize != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "fp8_e4m3_e8m0 rows need head_dim divisible by ", kFp8BlockSize, ", got ", head_dim));
      }
      return d + d / kFp8BlockSize;
  }
  return absl::InvalidArgumentError("unknown row dtype");
}

absl::StatusOr<size_t> RowBytes(absl::string_view dtype, int head_dim) {
  ENGRAM_ASSIGN_OR_RETURN(RowDType d, ParseRowDType(dtype));
  return RowBytes(d, head_dim);
}

absl::Status DecodeRows(RowDType dtype, const uint8_t* rows, size_t n_rows, int head_dim,
                        float* out) {
  ENGRAM_ASSIGN_OR_RETURN(size_t row_bytes, RowBytes(dtype, head_dim));
  const size_t d = static_cast<size_t>(head_dim);
  switch (dtype) {
    case RowDType::kF32:
      std::memcpy(out, rows, n_rows * row_bytes);
      return absl::OkStatus();
    case RowDType::kBF16:
      return ConvertToF32(DType::kBF16, rows, n_rows * d, out);
    case RowDType::kF16:
      return ConvertToF32(DType::kF16, rows, n_rows * d, out);
    case RowDType::kFp8E4M3E8M0:
      break;
  }
  // E4M3 and E8M0 each have 256 codes: decode through two tables built once.
  static const auto* tables = [] {
    auto* t = new float[2][256];
    for (int b = 0; b < 256; ++b) {
      t[0][b] = F8E4M3ToF32(static_cast<uint8_t>(b));
      t[1][b] = F8E8M0ToF32(static_cast<uint8_t>(b));
    }
    return t;
  }();
  for (size_t r = 0; r < n_rows; ++r) {
    const uint8_t* payload = rows + r * row_bytes;
    const uint8_t* scales = payload + d;
    float* o = out + r * d;
    for (size_t j = 0; j < d; ++j) {
      o[j] = tables[0][payload[j]] * tables[1][scales[j / kFp8BlockSize]];
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeRows(absl::string_view dtype, const uint8_t* rows, size_t n_rows, int head_dim,
                        float* out) {
  ENGRAM_ASSIGN_OR_RETURN(RowDType d, ParseRowDType(dtype));
  return DecodeRows(d, rows, n_rows, head_dim, out);
}

}  // namespace engram
