// The added vocabulary of a tokenizer.json ("added_tokens"), as Hugging Face tokenizers handles it
// (tokenizer/added_vocabulary.rs): the id rule applied on load, and the split of an input into
// added-token pieces and gaps (non-normalized tokens matched on the raw text, normalized ones on
// the normalized gaps; leftmost-longest, non-overlapping; single_word, lstrip and rstrip).
#ifndef ENGRAM_MODEL_TOKENIZER_ADDED_H_
#define ENGRAM_MODEL_TOKENIZER_ADDED_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/tokenizer_bpe.h"
#include "model/tokenizer_pipeline.h"
#include "nlohmann/json_fwd.hpp"

namespace engram::tokenizer_internal {

struct AddedToken {
  std::string content;
  uint32_t id = 0;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
  // What id_to_token and decode show: since tokenizers 0.23 the normalized content for
  // normalized tokens, the content otherwise.
  std::string display;
};

// A piece of the input after added-token extraction: text still to pre-tokenize (normalized), or
// one added token.
struct Piece {
  std::string text;
  std::optional<uint32_t> token_id;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;

  // Assigns ids with the library's rule (a content already in the model vocab takes that id;
  // others count up from the model's vocab size) and refuses the file where that disagrees with
  // the JSON ids, or where one content is listed twice with different options.
  static absl::StatusOr<AddedVocabulary> FromJson(const nlohmann::json* added_tokens,
                                                  const BpeModel& model,
                                                  const TextNormalizer* normalizer);

  // AddedVocabulary::extract_and_normalize: splits `text` at added tokens and normalizes the gaps.
  absl::StatusOr<std::vector<Piece>> Split(absl::string_view text,
                                           const TextNormalizer* normalizer) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  std::optional<uint32_t> TokenToId(absl::string_view content) const;
  const AddedToken* FindById(uint32_t id) const;
  // Whether `content` is the content of a special token (what skip_special_tokens drops).
  bool IsSpecialContent(absl::string_view content) const { return special_.contains(content); }

 private:
  // Leftmost-longest, non-overlapping matching of a set of strings (a byte trie).
  class Matcher {
   public:
    void Add(absl::string_view pattern, size_t token_index);
    bool empty() const { return nodes_.size() <= 1; }
    // (begin, end, token index) of every match.
    struct Match {
      size_t begin, end, token;
    };
    std::vector<Match> FindAll(absl::string_view text) const;

   private:
    struct Node {
      absl::flat_hash_map<unsigned char, int> next;
      int token = -1;
    };
    std::vector<Node> nodes_{1};
    bool first_byte_[256] = {};
  };

  // AddedVocabulary::find_matches + split_with_indices on one piece.
  void SplitPiece(absl::string_view text, const Matcher& matcher, std::vector<Piece>* out) const;

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<std::string, size_t> by_content_;
  absl::flat_hash_map<uint32_t, size_t> by_id_;
  absl::flat_hash_set<std::string> special_;
  Matcher raw_;
  Matcher normalized_;
};

}  // namespace engram::tokenizer_internal

#endif  // ENGRAM_MODEL_TOKENIZER_ADDED_H_
