// Reading and writing safetensors files (https://github.com/huggingface/safetensors).
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// and then the tensor bytes, offsets relative to the end of the header.
//
// Files are memory-mapped read-only, so a table larger than RAM can be streamed from its mapping
// (pages come and go with the page cache). Every offset and size is validated on Open: a truncated
// or malformed file is an error, never an out-of-bounds read.
#ifndef ENGRAM_COMMON_SAFETENSORS_H_
#define ENGRAM_COMMON_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace engram {

enum class DType {
  kF64, kF32, kF16, kBF16, kF8E4M3, kF8E5M2, kF8E8M0,
  kI64, kI32, kI16, kI8, kU64, kU32, kU16, kU8, kBool,
};

// Bytes per element.
size_t DTypeSize(DType dtype);
// The safetensors spelling: "F32", "BF16", "F8_E4M3", ...
absl::string_view DTypeName(DType dtype);
absl::StatusOr<DType> ParseDType(absl::string_view name);

// One tensor inside a mapped file. `data` points into the mapping and lives as long as the file.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t size_bytes = 0;
  uint64_t file_offset = 0;  // absolute offset of the first byte in the file

  int64_t num_elements() const;
  // "[4, 1024]"
  std::string ShapeString() const;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // nullptr when absent.
  const TensorView* Find(absl::string_view name) const;
  // NOT_FOUND naming the tensor and the file when absent.
  absl::StatusOr<const TensorView*> Get(absl::string_view name) const;
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Advises the kernel that the mapping will be read sequentially (import) or randomly.
  void AdviseSequential() const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorView> tensors_;  // in data order
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// All *.safetensors files of a model directory, indexed by tensor name.
class SafetensorsDir {
 public:
  // Opens every *.safetensors in `dir` (sorted by name); a tensor name found twice is an error.
  static absl::StatusOr<std::unique_ptr<SafetensorsDir>> Open(const std::string& dir);

  const TensorView* Find(absl::string_view name) const;
  absl::StatusOr<const TensorView*> Get(absl::string_view name) const;
  // Every tensor of every file.
  std::vector<const TensorView*> tensors() const;
  // The file holding `tensor` (one of this directory's views), nullptr for any other view.
  const SafetensorsFile* FileOf(const TensorView* tensor) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*, std::less<>> index_;
};

// ---- Element conversions -----------------------------------------------------------------------

float Bf16ToF32(uint16_t bits);
// Round to nearest even; NaN stays NaN.
uint16_t F32ToBf16(float value);
float F16ToF32(uint16_t bits);
uint16_t F32ToF16(float value);
// OCP FP8 E4M3 (no infinities, 0x7f/0xff are NaN) and E8M0 (a power of two, 0xff is NaN).
float F8E4M3ToF32(uint8_t bits);
uint8_t F32ToF8E4M3(float value);
float F8E8M0ToF32(uint8_t bits);

// Converts `count` elements of a floating dtype (F64, F32, F16, BF16, F8_E4M3) to f32.
absl::Status ConvertToF32(DType dtype, const uint8_t* src, size_t count, float* out);
// Whole tensor to f32; INVALID_ARGUMENT for non-float dtypes.
absl::StatusOr<std::vector<float>> TensorToF32(const TensorView& tensor);
// Checks the shape; the message names the tensor, the expected and the actual shape.
absl::Status ExpectShape(const TensorView& tensor, absl::Span<const int64_t> shape);

// ---- Writer ------------------------------------------------------------------------------------

// Builds a safetensors file tensor by tensor. Data is either borrowed (must stay alive until
// Write returns) or produced in chunks by a callback, so very large tables can be written
// without holding them in memory.
class SafetensorsWriter {
 public:
  // Fills `out` (size n bytes) with the tensor bytes starting at byte `offset` of the tensor.
  using Producer = std::function<absl::Status(uint64_t offset, uint8_t* out, size_t n)>;

  void SetMetadata(std::string key, std::string value);
  void Add(std::string name, DType dtype, std::vector<int64_t> shape,
           absl::Span<const uint8_t> data);
  void AddProduced(std::string name, DType dtype, std::vector<int64_t> shape, Producer producer);
  // Convenience for f32 data stored as `dtype` (F32, F16 or BF16); the copy is owned.
  void AddF32As(std::string name, DType dtype, std::vector<int64_t> shape,
                absl::Span<const float> values);
  // Writes to `path` + ".tmp" and renames, so a reader never sees a partial file.
  absl::Status Write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    absl::Span<const uint8_t> data;
    Producer producer;
    std::shared_ptr<std::vector<uint8_t>> owned;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace engram

#endif  // ENGRAM_COMMON_SAFETENSORS_H_
