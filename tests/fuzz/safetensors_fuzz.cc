// Fuzz target: the safetensors reader (common/safetensors.cc): header length, JSON header,
// dtypes, shapes, data offsets, metadata; then every tensor the reader accepted is looked up by
// name and converted to f32, which reads all of its bytes (ASan catches any view that reaches past
// the mapping).
//
// Input: the file's bytes, written to a scratch file and opened as the loader opens a model's
// *.safetensors (mmap).
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/safetensors.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = engram::fuzz::ScratchDir() + "/model.safetensors";
  engram::fuzz::WriteFileOrDie(
      path, std::string_view(reinterpret_cast<const char*>(data), size));
  auto file = engram::SafetensorsFile::Open(path);
  if (!file.ok()) return 0;
  for (const engram::TensorView& t : (*file)->tensors()) {
    if ((*file)->Find(t.name) == nullptr) __builtin_trap();  // every tensor is findable
    (void)engram::ExpectShape(t, t.shape);
    auto values = engram::TensorToF32(t);
    if (values.ok() && values->size() != static_cast<size_t>(t.num_elements())) __builtin_trap();
  }
  return 0;
}
