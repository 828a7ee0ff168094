// Test helpers for the memory tier: small Engram model directories written with the real
// SafetensorsWriter, independent expectations read back from their safetensors, temp dirs.
#ifndef ENGRAM_TESTS_MEMORY_TIER_TEST_MODEL_H_
#define ENGRAM_TESTS_MEMORY_TIER_TEST_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace engram::testing {

// A model directory with config.json and model.safetensors holding only Engram tables.
struct TestModelSpec {
  std::string name = "testmodel";  // config.json model_name
  std::vector<int> layer_ids = {1, 3};
  int max_ngram_size = 3;
  int n_heads = 2;
  int head_dim = 32;
  std::vector<int64_t> vocab_size_per_order = {401, 503};
  std::string dtype = "bf16";  // f32 | bf16 | f16 | fp8_e4m3_e8m0
  uint32_t seed = 1;           // changes the row contents
};

absl::Status WriteTestModel(const std::string& dir, const TestModelSpec& spec);

// Rows per layer that the spec implies (sum of primes).
std::vector<int64_t> TestModelRows(const TestModelSpec& spec);

// The rows of `layer` exactly as the tier must serve them, read back from the model's
// safetensors (FP8: payload then scales per row). rows * row_bytes bytes.
absl::StatusOr<std::vector<uint8_t>> SourceRows(const std::string& model_dir, uint32_t layer,
                                                size_t* row_bytes);

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Whether this process may set up an io_uring (container seccomp profiles often forbid it). Tests
// of the io_uring backend skip without it; the pread fallback is tested either way.
bool UringAvailable();

// Path of a built binary (ENGRAM_BINARY_DIR/<relative>).
std::string BinaryPath(const std::string& relative);

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_MEMORY_TIER_TEST_MODEL_H_
