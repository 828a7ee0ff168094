// File: memory_tier/table_profile.h
//
// `engram table profile`: the offline profile that seeds placement (contract 3 of
// docs/architecture.md). A text corpus is tokenized with the model's tokenizer, mapped to
// compressed ids with the model's Engram constants (model/engram_constants.h, checked against
// engram_constants.json when present), and hashed to row ids per Engram layer exactly as the worker
// will (common/ngram_hash.h). Each row's access count goes into the catalog's statistics (catalog.h
// SaveStats), replacing what was there, so engram-memory starts with the profiled hot set: the
// counts seed its access statistics and fill its DRAM cache arenas before the first request
// (TieredStore::WarmUp).
//
// The corpus is cut into documents at blank lines (and at 64 KiB at the latest); each document is
// one sequence, hashed from a sequence start. Counts are raw access counts, the unit of the online
// statistics, and decay with the server's half-life like them.
#ifndef ENGRAM_MEMORY_TIER_TABLE_PROFILE_H_
#define ENGRAM_MEMORY_TIER_TABLE_PROFILE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/engram_config.h"
#include "memory_tier/catalog.h"
#include "model/engram_constants.h"
#include "model/tokenizer.h"

namespace engram {

struct ProfileOptions {
  std::string model_dir;       // config.json + tokenizer.json (+ engram_constants.json)
  std::string corpus_path;     // UTF-8 text
  uint64_t max_bytes = 0;      // read at most this much of the corpus (0 = all)
  size_t keep_rows = 1 << 20;  // hottest rows stored per layer
};

struct LayerProfile {
  uint32_t layer = 0;
  uint64_t lookups = 0;  // row lookups counted (positions x columns)
  uint64_t distinct_rows = 0;
  size_t stored_rows = 0;
  size_t top1pct_rows = 0;   // 1% of the layer's table
  double top1pct_share = 0;  // share of lookups that go to the hottest 1% of rows
};

struct ProfileResult {
  std::string model;
  uint64_t tokens = 0;
  uint64_t bytes = 0;
  std::vector<LayerProfile> layers;
};

// What hashing a corpus needs from a model directory: its name, Engram config, tokenizer and
// constants (checked against engram_constants.json when present).
struct CorpusModel {
  std::string name;
  EngramConfig config;
  std::unique_ptr<Tokenizer> tokenizer;
  EngramConstants constants;
};
absl::StatusOr<CorpusModel> LoadCorpusModel(const std::string& model_dir);

// Cuts the corpus into documents (above), tokenizes each and calls fn with its compressed ids
// (documents without tokens are skipped); row ids follow with ComputeNgramRowIds from a sequence
// start. `*bytes_read` (may be null) gets the bytes of corpus consumed. Errors name the corpus
// and the document's byte offset; a non-OK status from fn stops the walk and is returned.
absl::Status ForEachCorpusDocument(const CorpusModel& model, const std::string& corpus_path,
                                   uint64_t max_bytes,
                                   const std::function<absl::Status(absl::Span<const int64_t>)>& fn,
                                   uint64_t* bytes_read = nullptr);

// Profiles the corpus and stores the counts in the catalog (opened read-write). Errors name the
// file (config, tokenizer, constants, corpus) that is wrong.
absl::StatusOr<ProfileResult> ProfileTables(Catalog& catalog, const ProfileOptions& options);

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_TABLE_PROFILE_H_
