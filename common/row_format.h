// Engram table row formats: how one row of a table is stored, in the row files of the memory tier,
// in its DRAM arena and on the wire, and how a worker turns raw rows into f32.
//
// A row holds head_dim values of one (order, head) sub-table entry. Four dtypes exist:
//   "f32"            head_dim * 4 bytes, little-endian IEEE binary32
//   "bf16"           head_dim * 2 bytes
//   "f16"            head_dim * 2 bytes
//   "fp8_e4m3_e8m0"  DeepSeek-V4.1 style: head_dim FP8 E4M3 bytes, then head_dim / 32 E8M0 block
//                    scales (one per 32 values); value j = e4m3[j] * 2^(e8m0[j / 32] - 127).
//                    264 bytes for head_dim 256.
// Rows are stored exactly as in the model's safetensors (no conversion at import), so the tier
// serves the bytes the model was trained with and the worker decodes them once, here.
//
// Example:
//   ENGRAM_ASSIGN_OR_RETURN(RowDType dtype, ParseRowDType("bf16"));
//   ENGRAM_ASSIGN_OR_RETURN(size_t bytes, RowBytes(dtype, /*head_dim=*/64));   // 128
//   ENGRAM_RETURN_IF_ERROR(DecodeRows(dtype, raw.data(), n_rows, 64, out_f32));
#ifndef ENGRAM_COMMON_ROW_FORMAT_H_
#define ENGRAM_COMMON_ROW_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/safetensors.h"

namespace engram {

enum class RowDType { kF32, kBF16, kF16, kFp8E4M3E8M0 };

// Values per E8M0 scale in the fp8_e4m3_e8m0 format.
inline constexpr int kFp8BlockSize = 32;

// "f32", "bf16", "f16" or "fp8_e4m3_e8m0" (the spelling used in manifests and TableInfo).
absl::string_view RowDTypeName(RowDType dtype);
// Parses one of the names above; INVALID_ARGUMENT naming the value otherwise.
absl::StatusOr<RowDType> ParseRowDType(absl::string_view name);
// The row dtype of a table stored as one safetensors tensor: F32, BF16 or F16; nullopt for any
// other dtype (FP8 tables are two tensors, rows and scales).
std::optional<RowDType> PlainRowDType(DType dtype);

// Bytes of one row. INVALID_ARGUMENT when head_dim is not positive, or for fp8_e4m3_e8m0 not a
// multiple of 32.
absl::StatusOr<size_t> RowBytes(RowDType dtype, int head_dim);
// Same for a dtype name.
absl::StatusOr<size_t> RowBytes(absl::string_view dtype, int head_dim);

// Decodes `n_rows` consecutive rows (row i at rows + i * RowBytes) to f32; out receives
// n_rows * head_dim floats, row-major. Never reads past n_rows * RowBytes bytes.
absl::Status DecodeRows(RowDType dtype, const uint8_t* rows, size_t n_rows, int head_dim,
                        float* out);
absl::Status DecodeRows(absl::string_view dtype, const uint8_t* rows, size_t n_rows, int head_dim,
                        float* out);

// ---- A table as a model directory stores it -----------------------------------------------------
//
// Layer L's table (docs/architecture.md contract 2) is either the plain tensor
// "<prefix>multi_head_embedding.embedding.weight" [rows, head_dim] in F32, BF16 or F16, or
// DeepSeek-V4.1's FP8 pair "<prefix>multi_head_embedding.embedding.embed.weight" [rows, head_dim]
// F8_E4M3 with "<prefix>multi_head_embedding.embedding.embed.scale" [rows, head_dim / 32]
// F8_E8M0 (row dtype fp8_e4m3_e8m0). The memory tier's import interleaves an FP8 row's values and
// scales into one record; in-process readers (engram eval, engram model run) decode rows here.
struct ModelTable {
  RowDType dtype = RowDType::kBF16;
  const TensorView* values = nullptr;
  const TensorView* scales = nullptr;  // the FP8 pair's scales; null for a plain table
  uint64_t rows = 0;
  int head_dim = 0;
};

// Finds and checks layer `layer_id`'s table in `dir` (`model_dir` names it in errors). NOT_FOUND
// when the directory has neither form; INVALID_ARGUMENT naming the tensor for both forms at once,
// FP8 rows without their scales, a wrong dtype or shape, a head_dim other than `head_dim`, or FP8
// rows whose head_dim is not a multiple of 32.
absl::StatusOr<ModelTable> FindModelTable(const SafetensorsDir& dir, const std::string& model_dir,
                                          int layer_id, int head_dim);

// Decodes row `id` of `table` to f32 into out[0, head_dim). INVALID_ARGUMENT for an id outside
// [0, rows).
absl::Status DecodeModelTableRow(const ModelTable& table, uint64_t id, float* out);

}  // namespace engram

#endif  // ENGRAM_COMMON_ROW_FORMAT_H_
