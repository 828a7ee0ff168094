// File: memory_tier/importer.h
//
// `engram table import`: moves a model's Engram tables from its safetensors into the memory tier's
// store, one row file + manifest per layer (row_file.h), registered in the catalog (catalog.h).
//
// Per Engram layer l the table is `model.layers.{l}.engram.multi_head_embedding.embedding.weight`
// [rows, head_dim] in F32/BF16/F16, or the DeepSeek-V4.1 FP8 pair
// `...embedding.embed.weight` F8_E4M3 [rows, head_dim] + `...embedding.embed.scale` F8_E8M0
// [rows, head_dim / 32], stored as one 264-byte record per row (payload, then scales). rows must
// equal the sum of the layer's primes (common/ngram_hash.h EngramLayerRowCounts) and
// engram_num_embeddings when config.json has it.
//
// Properties:
//   streaming   rows are read from the safetensors mapping and written chunk by chunk, so tables
//               larger than RAM import;
//   atomic      each row file is written under a temporary name, fsynced and renamed, its
//               manifest likewise, and one synced RocksDB WriteBatch then makes every new version
//               of the import live at once. A killed import never becomes live; the next import
//               removes what it left behind (CleanStoreLeftovers);
//   idempotent  a layer whose source is unchanged (same stat fingerprint, or the same CRC-32C of
//               the rows) gets no new version.
#ifndef ENGRAM_MEMORY_TIER_IMPORTER_H_
#define ENGRAM_MEMORY_TIER_IMPORTER_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "memory_tier/catalog.h"

namespace engram {

// Progress of an import, reported about every chunk and at the end of each layer.
struct ImportProgress {
  std::string model;
  uint32_t layer = 0;
  size_t layer_index = 0;  // 0-based position among the layers being imported
  size_t num_layers = 0;
  uint64_t rows_done = 0;  // of this layer
  uint64_t rows_total = 0;
  uint64_t bytes_done = 0;  // of this layer
  double seconds = 0;       // since this layer started
  bool layer_done = false;
};

struct ImportOptions {
  std::string model_dir;
  // Bytes per checksummed chunk of a row file (a multiple of 4096). Default 1 MiB.
  uint64_t chunk_bytes = kDefaultChunkBytes;
  // Import a new version even when the source is unchanged.
  bool force = false;
  // Progress callback (e.g. the CLI's terminal line); may be empty.
  std::function<void(const ImportProgress&)> on_progress;
};

// What happened to one layer.
struct LayerImport {
  uint32_t layer = 0;
  uint64_t version = 0;  // the new version, or the live one when unchanged
  bool unchanged = false;
  uint64_t rows = 0;
  uint32_t row_bytes = 0;
  std::string dtype;
  std::string row_file;  // relative to the store
};

struct ImportResult {
  std::string model;
  std::vector<LayerImport> layers;
  uint64_t bytes_written = 0;
  int leftovers_removed = 0;
};

// Imports every Engram layer of options.model_dir into the catalog's store. The catalog must be
// open read-write. Errors name the model directory, the layer and the tensor.
absl::StatusOr<ImportResult> ImportModel(Catalog& catalog, const ImportOptions& options);

// Removes files under STORE/tables that no catalog version references (temporary files and row
// files of killed imports). Returns how many were removed. Needs the catalog open read-write, so
// no import runs concurrently.
absl::StatusOr<int> CleanStoreLeftovers(Catalog& catalog);

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_IMPORTER_H_
