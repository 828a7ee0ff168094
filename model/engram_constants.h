// The frozen Engram constants of a model: compressed token map, V', pad ids, and per layer the
// hash multipliers, primes, offsets and row counts. Stored beside the model as
// `engram_constants.json`, and always recomputable from config.json + tokenizer.json; a model
// loads only when the stored file, the recomputed values and the published config keys
// (engram_compressed_vocab_size, engram_num_embeddings) all agree, because every row id depends on
// them and a silent mismatch would read the wrong rows.
//
// engram_constants.json (format "engram-constants/v1"):
//   {"format": "engram-constants/v1", "max_ngram_size": N, "n_heads": K,
//    "compressed_vocab_size": V', "pad_token_id": raw pad id, "compressed_pad_id": pad',
//    "token_map": [compressed id of raw id 0, 1, ...; -1 for unassigned ids],
//    "layers": [{"layer_id": 1, "multipliers": [N values], "primes": [(N-1)*K values],
//                "offsets": [(N-1)*K values], "rows": sum of primes}, ...]}
#ifndef ENGRAM_MODEL_ENGRAM_CONSTANTS_H_
#define ENGRAM_MODEL_ENGRAM_CONSTANTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/engram_config.h"
#include "common/ngram_hash.h"
#include "nlohmann/json_fwd.hpp"

namespace engram {

class Tokenizer;  // model/tokenizer.h

// File name of the stored constants inside a model directory.
inline constexpr char kEngramConstantsFile[] = "engram_constants.json";

struct EngramConstants {
  std::vector<int64_t> token_map;  // raw token id -> compressed id; -1 for unassigned raw ids
  int64_t pad_token_id = 0;        // raw pad id (EngramConfig::pad_token_id)
  EngramHashConstants hash;        // V', pad', multipliers, primes, offsets, rows per layer

  // Raw id -> compressed id. INVALID_ARGUMENT naming the id when it is outside the map or
  // unassigned.
  absl::StatusOr<int64_t> Compress(int64_t raw_id) const;
  // Whole sequence; the error names the first bad id and its position.
  absl::StatusOr<std::vector<int64_t>> Compress(absl::Span<const uint32_t> raw_ids) const;
};

// Computes the constants from the config and a compressed token map (V' = number of distinct
// compressed ids). INVALID_ARGUMENT when the pad id is outside the map or the map is inconsistent.
absl::StatusOr<EngramConstants> ComputeEngramConstants(const EngramConfig& config,
                                                       std::vector<int64_t> token_map,
                                                       int64_t compressed_vocab_size);
// Same, with the token map built from the tokenizer (model/compressed_vocab.h).
absl::StatusOr<EngramConstants> ComputeEngramConstants(const EngramConfig& config,
                                                       const Tokenizer& tokenizer);

// JSON (de)serialisation in the format above. Parsing validates shapes and types and names the key.
nlohmann::json EngramConstantsToJson(const EngramConstants& constants);
absl::StatusOr<EngramConstants> EngramConstantsFromJson(const nlohmann::json& json);
absl::StatusOr<EngramConstants> ReadEngramConstants(const std::string& path);
// Writes atomically (temporary file + rename).
absl::Status WriteEngramConstants(const EngramConstants& constants, const std::string& path);

// FAILED_PRECONDITION naming the first field that differs (e.g. "layer 14 prime 3: stored 16000489,
// computed 16000483") between stored and recomputed constants.
absl::Status CompareEngramConstants(const EngramConstants& stored, const EngramConstants& computed);
// FAILED_PRECONDITION when config.json's published engram_compressed_vocab_size or
// engram_num_embeddings disagree with the constants (absent keys are not checked).
absl::Status CheckPublishedConstants(const EngramConfig& config, const EngramConstants& constants);

// What a model load does: computes the constants from `config` + `tokenizer`, checks them against
// the published config keys and, when `model_dir`/engram_constants.json exists, against that file.
// Returns the computed constants; any disagreement refuses the load (FAILED_PRECONDITION, the
// message names the file and the field).
absl::StatusOr<EngramConstants> LoadEngramConstants(const std::string& model_dir,
                                                    const EngramConfig& config,
                                                    const Tokenizer& tokenizer);

}  // namespace engram

#endif  // ENGRAM_MODEL_ENGRAM_CONSTANTS_H_
