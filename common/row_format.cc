#include "common/row_format.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/engram_config.h"
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

namespace {

// d E4M3 values under their E8M0 block scales (one per kFp8BlockSize values) to f32. E4M3 and E8M0
// each have 256 codes: decoded through two tables built once.
void DecodeFp8(const uint8_t* values, const uint8_t* scales, size_t d, float* out) {
  static const auto* tables = [] {
    auto* t = new float[2][256];
    for (int b = 0; b < 256; ++b) {
      t[0][b] = F8E4M3ToF32(static_cast<uint8_t>(b));
      t[1][b] = F8E8M0ToF32(static_cast<uint8_t>(b));
    }
    return t;
  }();
  for (size_t j = 0; j < d; ++j) {
    out[j] = tables[0][values[j]] * tables[1][scales[j / kFp8BlockSize]];
  }
}

}  // namespace

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
  for (size_t r = 0; r < n_rows; ++r) {
    const uint8_t* payload = rows + r * row_bytes;
    DecodeFp8(payload, payload + d, d, out + r * d);
  }
  return absl::OkStatus();
}

absl::Status DecodeRows(absl::string_view dtype, const uint8_t* rows, size_t n_rows, int head_dim,
                        float* out) {
  ENGRAM_ASSIGN_OR_RETURN(RowDType d, ParseRowDType(dtype));
  return DecodeRows(d, rows, n_rows, head_dim, out);
}

absl::StatusOr<ModelTable> FindModelTable(const SafetensorsDir& dir, const std::string& model_dir,
                                          int layer_id, int head_dim) {
  const std::string base =
      absl::StrCat(EngramModulePrefix(layer_id), "multi_head_embedding.embedding.");
  const TensorView* plain = dir.Find(EngramTableTensorName(layer_id));
  const TensorView* fp8 = dir.Find(base + "embed.weight");
  if (plain != nullptr && fp8 != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, ": layer ", layer_id, " has both ",
                                                   plain->name, " and ", fp8->name,
                                                   "; which one is the table?"));
  }
  if (plain == nullptr && fp8 == nullptr) {
    return absl::NotFoundError(absl::StrCat(model_dir, ": no Engram table for layer ", layer_id,
                                            " (expected ", base, "weight or ", base,
                                            "embed.weight + ", base, "embed.scale)"));
  }
  ModelTable t;
  t.values = plain != nullptr ? plain : fp8;
  const TensorView& w = *t.values;
  if (w.shape.size() != 2 || w.shape[0] <= 0 || w.shape[1] <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(w.name, " has shape ", w.ShapeString(), ", expected [rows, head_dim]"));
  }
  t.rows = static_cast<uint64_t>(w.shape[0]);
  t.head_dim = static_cast<int>(w.shape[1]);
  if (t.head_dim != head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        w.name, " has head_dim ", t.head_dim, " but config.json engram_head_dim is ", head_dim));
  }
  if (plain != nullptr) {
    const std::optional<RowDType> dtype = PlainRowDType(w.dtype);
    if (!dtype) {
      return absl::InvalidArgumentError(absl::StrCat(w.name, " has dtype ", DTypeName(w.dtype),
                                                     "; tables must be F32, BF16 or F16 (or the "
                                                     "FP8 embed.weight/embed.scale pair)"));
    }
    t.dtype = *dtype;
    return t;
  }
  t.dtype = RowDType::kFp8E4M3E8M0;
  if (w.dtype != DType::kF8E4M3) {
    return absl::InvalidArgumentError(
        absl::StrCat(w.name, " has dtype ", DTypeName(w.dtype), ", expected F8_E4M3"));
  }
  t.scales = dir.Find(base + "embed.scale");
  if (t.scales == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(model_dir, ": ", w.name, " has no ", base,
                                                   "embed.scale (E8M0 block scales)"));
  }
  if (t.head_dim % kFp8BlockSize != 0) {
    return absl::InvalidArgumentError(absl::StrCat(w.name, ": head_dim ", t.head_dim,
                                                   " is not a multiple of ", kFp8BlockSize));
  }
  if (t.scales->dtype != DType::kF8E8M0) {
    return absl::InvalidArgumentError(absl::StrCat(t.scales->name, " has dtype ",
                                                   DTypeName(t.scales->dtype),
                                                   ", expected F8_E8M0"));
  }
  ENGRAM_RETURN_IF_ERROR(ExpectShape(*t.scales, {w.shape[0], w.shape[1] / kFp8BlockSize}));
  return t;
}

absl::Status DecodeModelTableRow(const ModelTable& table, uint64_t id, float* out) {
  if (id >= table.rows) {
    return absl::InvalidArgumentError(absl::StrCat("row id ", id, " is outside ",
                                                   table.values->name, "'s ", table.rows, " rows"));
  }
  const size_t d = static_cast<size_t>(table.head_dim);
  if (table.scales != nullptr) {
    DecodeFp8(table.values->data + id * d, table.scales->data + id * (d / kFp8BlockSize), d, out);
    return absl::OkStatus();
  }
  ENGRAM_ASSIGN_OR_RETURN(const size_t row_bytes, RowBytes(table.dtype, table.head_dim));
  return DecodeRows(table.dtype, table.values->data + id * row_bytes, 1, table.head_dim, out);
}

}  // namespace engram
