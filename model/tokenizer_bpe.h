// The BPE model of a tokenizer.json ("model": {"type": "BPE", ...}), as Hugging Face tokenizers
// implements it (models/bpe/model.rs, word.rs): merge ranks from the file order (a repeated pair
// keeps its last rank), the priority-queue merge loop, ignore_merges, unk/fuse_unk, byte_fallback,
// continuing_subword_prefix and end_of_word_suffix. A word cache makes repeated pieces cheap.
#ifndef ENGRAM_MODEL_TOKENIZER_BPE_H_
#define ENGRAM_MODEL_TOKENIZER_BPE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json_fwd.hpp"

namespace engram::tokenizer_internal {

class BpeModel {
 public:
  // Parses the "model" object; errors name the offending key or token.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized piece.
  absl::Status Tokenize(absl::string_view piece, std::vector<uint32_t>* ids) const;

  std::optional<uint32_t> TokenToId(absl::string_view token) const;
  // The vocab string of `id`, or nullptr.
  const std::string* IdToToken(uint32_t id) const;
  // Number of vocab entries (what the library calls the model's vocab size).
  size_t vocab_size() const { return vocab_.size(); }
  // Largest vocab id; only meaningful when vocab_size() > 0.
  uint32_t max_id() const { return max_id_; }

 private:
  struct Merge {
    uint32_t rank;
    uint32_t new_id;
  };
  static uint64_t PairKey(uint32_t a, uint32_t b) { return (uint64_t{a} << 32) | b; }

  absl::Status MergeWord(absl::string_view word, std::vector<uint32_t>* ids) const;
  void MergeAll(std::vector<uint32_t>* symbols) const;

  absl::flat_hash_map<std::string, uint32_t> vocab_;
  // By id, sparse: memory follows the entries, not the largest id a file names.
  absl::flat_hash_map<uint32_t, std::string> id_to_token_;
  uint32_t max_id_ = 0;
  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::optional<std::string> unk_token_;
  std::optional<uint32_t> unk_id_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;

  // Word cache: output-neutral, bounded; pieces of 256 bytes or more are not cached.
  static constexpr size_t kCacheCapacity = 50000;
  static constexpr size_t kCacheMaxWordBytes = 256;
  mutable absl::Mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, std::vector<uint32_t>> cache_
      ABSL_GUARDED_BY(cache_mutex_);
};

}  // namespace engram::tokenizer_internal

#endif  // ENGRAM_MODEL_TOKENIZER_BPE_H_
