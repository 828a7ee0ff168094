// File: memory_tier/table_synth.h
//
// `engram table synth`: writes a model's Engram tables straight into the memory tier's store, with
// rows that are a pure function of (seed, layer, row), instead of importing them from a safetensors
// file. Benchmarks need tables of the paper's size (100B parameters, ~103 GB of FP8 rows) on
// machines whose disk cannot hold the table twice, and the bytes of any row can be recomputed
// anywhere (tests compare what the tier serves with SynthRow).
//
// The model directory supplies the shape, exactly as for an import: config.json's engram_* keys give
// each layer's row count (the sum of its primes, common/ngram_hash.h EngramLayerRowCounts) and the
// row width; `engram model init-random --engram-params N` writes such a directory without a table.
//
// Writing goes through RowFileWriter (row_file.h), so the file, its manifest and its checksums are
// those of an import. Generation runs on `threads` threads in blocks of whole pages while the
// calling thread appends the previous batch of blocks (large sequential writes). Atomic like an
// import: the row file is written under a temporary name, fsynced and renamed, its manifest
// likewise, then one catalog batch makes every new layer live. On any failure (ENOSPC included) the
// temporary file is removed and the previous live version stays live; a store without room for
// the table is refused before anything is written.
#ifndef ENGRAM_MEMORY_TIER_TABLE_SYNTH_H_
#define ENGRAM_MEMORY_TIER_TABLE_SYNTH_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "common/row_format.h"
#include "memory_tier/catalog.h"
#include "memory_tier/importer.h"

namespace engram {

struct SynthOptions {
  // The model whose tables are written (config.json: model_name, engram_* keys).
  std::string model_dir;
  // Seed of every row (SynthRow).
  uint64_t seed = 0;
  // Row format; fp8_e4m3_e8m0 (DeepSeek-V4.1 rows: head_dim E4M3 bytes + head_dim/32 E8M0 scales),
  // bf16, f16 or f32.
  RowDType dtype = RowDType::kFp8E4M3E8M0;
  // Bytes per checksummed chunk of the row file (a multiple of 4096). Default 8 MiB: a 100 GB table
  // keeps ~12k checksums in its manifest and each write is 8 MiB.
  uint64_t chunk_bytes = uint64_t{8} << 20;
  // Generator threads; 0 = the machine's cores.
  int threads = 0;
  // Pages of rows one generator task produces (a batch is `threads` tasks). Default 2048 (8 MiB).
  uint64_t block_pages = 2048;
  // Write a new version even when the live one was synthesised with the same seed and shape.
  bool force = false;
  // Progress about every chunk (the CLI's terminal line); may be empty.
  std::function<void(const ImportProgress&)> on_progress;
};

// The bytes of row `row` of Engram layer `layer` (RowBytes(dtype, head_dim) bytes into `out`):
// SplitMix64 over a state keyed by (seed, layer, row). Values are finite and of the magnitude of a
// trained table: fp8 payload bytes have exponents 4..11 (|x| in [2^-3, 2^4.9)) with E8M0 scales
// 2^-7..2^-4; bf16/f16/f32 rows hold values of about unit scale (no NaN, no infinity).
void SynthRow(uint64_t seed, uint32_t layer, uint64_t row, RowDType dtype, int head_dim,
              uint8_t* out);

// The source fingerprint recorded in a synthesised version's manifest (its idempotence key).
std::string SynthFingerprint(uint64_t seed, RowDType dtype, uint64_t rows, int head_dim);

// Writes every Engram layer of options.model_dir into the catalog's store and makes them live in
// one catalog batch. The catalog must be open read-write. INVALID_ARGUMENT for a model without
// Engram layers or a row format its head_dim cannot take; RESOURCE_EXHAUSTED when the store's
// file system lacks room for the new row files.
absl::StatusOr<ImportResult> SynthTables(Catalog& catalog, const SynthOptions& options);

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_TABLE_SYNTH_H_
