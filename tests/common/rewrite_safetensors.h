// Rewriting a safetensors file with edits, for the tests that need a broken or altered copy of a
// model or module file.
#ifndef ENGRAM_TESTS_COMMON_REWRITE_SAFETENSORS_H_
#define ENGRAM_TESTS_COMMON_REWRITE_SAFETENSORS_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/safetensors.h"

namespace engram::testing {

// Changes the metadata and the tensors (in file order) of a file being rewritten. A tensor's bytes
// are borrowed: a view into the source file as given, or data the caller keeps alive until
// RewriteSafetensors returns.
using SafetensorsEdit = std::function<void(std::map<std::string, std::string>* metadata,
                                           std::vector<TensorView>* tensors)>;

// Writes `dst` with the metadata and tensors of `src` after `edit`. `dst` may be `src`: the writer
// writes dst.tmp and renames it, and the source stays mapped until the write is done.
inline absl::Status RewriteSafetensors(const std::string& src, const std::string& dst,
                                       const SafetensorsEdit& edit) {
  auto file = SafetensorsFile::Open(src);
  if (!file.ok()) return file.status();
  std::map<std::string, std::string> metadata = (*file)->metadata();
  std::vector<TensorView> tensors = (*file)->tensors();
  if (edit) edit(&metadata, &tensors);
  SafetensorsWriter writer;
  for (const auto& [key, value] : metadata) writer.SetMetadata(key, value);
  for (const TensorView& t : tensors) {
    writer.Add(t.name, t.dtype, t.shape, absl::MakeConstSpan(t.data, t.size_bytes));
  }
  return writer.Write(dst);
}

// Drops the tensor `name` (if present) from `tensors`; a building block for edits.
inline void DropTensor(std::vector<TensorView>* tensors, const std::string& name) {
  std::erase_if(*tensors, [&](const TensorView& t) { return t.name == name; });
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_COMMON_REWRITE_SAFETENSORS_H_
