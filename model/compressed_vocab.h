// The Engram compressed token map: raw token id -> compressed id, built exactly as the reference
// CompressedTokenizer builds it (docs/engram-reference.md §1.2).
//
// For every id in range(len(tokenizer)): text = decode([id]) (special tokens kept); if the text
// contains U+FFFD the key is the raw token string (id_to_token), otherwise EngramNormalize(text),
// or the text itself when that normalises to "". Distinct keys are numbered in order of first
// appearance; the number of keys is V', which sizes every Engram hash.
//
// Ids the reference does not cover (docs/tokenizer.md, "Compressed token map"):
// - Unassigned ids below len(tokenizer) decode to "" and so give the reference the key "" (which
//   counts towards V'); no input can carry them, so lookup holds -1 for them.
// - Assigned ids at or above len(tokenizer) (cl100k: <|im_start|>, <|im_end|>, <|endofprompt|>)
//   would make the reference fail. They take the compressed id of their key when the reference
//   numbered that key, and otherwise the id of the key "" (the bucket of the unassigned ids, which
//   exists whenever such ids do), so V' stays the reference's value.
#ifndef ENGRAM_MODEL_COMPRESSED_VOCAB_H_
#define ENGRAM_MODEL_COMPRESSED_VOCAB_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "model/tokenizer.h"

namespace engram {

struct CompressedTokenMap {
  std::vector<int64_t>
      lookup;        // indexed by raw token id in [0, tokenizer.max_id()]; -1 for unassigned ids
  int64_t size = 0;  // number of distinct keys = V'
  // The compressed id of `raw_id`; negative ids pass through (reference: mask arr >= 0), ids past
  // the table map to -1.
  int64_t Map(int64_t raw_id) const;
};

// Iterates range(len(tokenizer)) exactly like the reference; see the header comment for the ids it
// does not cover.
absl::StatusOr<CompressedTokenMap> BuildCompressedTokenMap(const Tokenizer& tokenizer);

}  // namespace engram

#endif  // ENGRAM_MODEL_COMPRESSED_VOCAB_H_
