// Test helpers for the memory tier: small Engram model directories written with the real
// SafetensorsWriter, independent expectations read back from their safetensors, random row files.
#ifndef ENGRAM_TESTS_MEMORY_TIER_TEST_MODEL_H_
#define ENGRAM_TESTS_MEMORY_TIER_TEST_MODEL_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "memory_tier/dram_tier.h"
#include "memory_tier/row_file.h"
#include "memory_tier/tier_client.h"
#include "tests/common/temp_dir.h"
#include "tests/common/test_paths.h"

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

// A row file of `rows` random rows (bytes from `seed`) written with the real RowFileWriter in
// a temporary directory: model "test", layer 1, version 1, 64 KiB chunks, row file `format` (1
// only for tests of old files). The rows stay in memory as the expectation.
struct RandomRowFile {
  RandomRowFile(uint64_t rows, absl::string_view dtype, int head_dim, uint64_t seed,
                uint32_t format = kRowFileFormatVersion);
  const uint8_t* Row(uint64_t r) const { return &rows[r * manifest.layout.row_bytes]; }

  TempDir dir;
  Manifest manifest;
  std::string path;  // dir/v1.rows
  std::vector<uint8_t> rows;
};

// The description a co-located worker gets for `dram`'s shared-memory arena (as TableInfo would
// give it), for opening an ArenaReader: `key`, `rows`, the tier's row size and arena.
TableDescription ArenaTableDescription(const DramTier& dram, const TableKey& key, uint64_t rows);

// Runs `command` with /bin/sh; returns its exit code (-1 when it did not exit) and its output,
// stdout and stderr together.
std::pair<int, std::string> RunCommand(const std::string& command);

// Whether this process may set up an io_uring (container seccomp profiles often forbid it). Tests
// of the io_uring backend skip without it; the pread fallback is tested either way.
bool UringAvailable();

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_MEMORY_TIER_TEST_MODEL_H_
