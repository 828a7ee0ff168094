#include "model/compressed_vocab.h"

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "model/engram_normalizer.h"
#include "model/tokenizer_utf8.h"

namespace engram {
namespace {

// The reference's key of one id: decode([id]); the raw token string when that holds U+FFFD;
// otherwise the normalised text, falling back to the text when it normalises to "".
std::string TokenKey(const Tokenizer& tokenizer, uint32_t id) {
  const uint32_t ids[1] = {id};
  std::string text = tokenizer.Decode(ids, /*skip_special_tokens=*/false);
  if (absl::StrContains(text, tokenizer_internal::kReplacementUtf8)) {
    return tokenizer.IdToToken(id).value_or("");
  }
  std::string normalized = EngramNormalize(text);
  return normalized.empty() ? text : normalized;
}

}  // namespace

int64_t CompressedTokenMap::Map(int64_t raw_id) const {
  if (raw_id < 0) return raw_id;
  if (raw_id >= static_cast<int64_t>(lookup.size())) return -1;
  return lookup[raw_id];
}

absl::StatusOr<CompressedTokenMap> BuildCompressedTokenMap(const Tokenizer& tokenizer) {
  const uint32_t n = static_cast<uint32_t>(tokenizer.size());
  CompressedTokenMap map;
  map.lookup.assign(static_cast<size_t>(tokenizer.max_id()) + 1, -1);
  absl::flat_hash_map<std::string, int64_t> key_ids;
  key_ids.reserve(n);
  for (uint32_t id = 0; id < n; ++id) {
    auto [it, inserted] = key_ids.try_emplace(TokenKey(tokenizer, id), map.size);
    if (inserted) ++map.size;
    if (tokenizer.IsValidId(id)) map.lookup[id] = it->second;
  }
  for (uint32_t id = n; id <= tokenizer.max_id(); ++id) {
    if (!tokenizer.IsValidId(id)) continue;
    auto it = key_ids.find(TokenKey(tokenizer, id));
    if (it == key_ids.end()) it = key_ids.find("");
    if (it == key_ids.end()) {
      return absl::InternalError(
          absl::StrCat("token id ", id, " is above len(tokenizer) = ", n,
                       " and no unassigned id below it gives a fallback key"));
    }
    map.lookup[id] = it->second;
  }
  return map;
}

}  // namespace engram
