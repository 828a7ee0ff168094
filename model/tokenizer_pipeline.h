// The tokenizer.json components around the BPE model, as Hugging Face tokenizers runs them:
// normalizer, pre-tokenizer, post-processor and decoder. Each is parsed once into a small tree and
// applied with the library's semantics (docs/hf-tokenizers.md §1-§7).
#ifndef ENGRAM_MODEL_TOKENIZER_PIPELINE_H_
#define ENGRAM_MODEL_TOKENIZER_PIPELINE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/tokenizer_regex.h"
#include "nlohmann/json_fwd.hpp"

namespace engram::tokenizer_internal {

// "normalizer": Sequence, NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, Strip, Replace, Prepend.
class TextNormalizer {
 public:
  static absl::StatusOr<std::unique_ptr<TextNormalizer>> FromJson(const nlohmann::json& json,
                                                                  const std::string& where);
  absl::StatusOr<std::string> Normalize(absl::string_view text) const;

 private:
  enum class Kind {
    kSequence,
    kNfc,
    kNfd,
    kNfkc,
    kNfkd,
    kLowercase,
    kStripAccents,
    kStrip,
    kReplace,
    kPrepend
  };
  Kind kind_ = Kind::kSequence;
  std::vector<std::unique_ptr<TextNormalizer>> children_;
  std::unique_ptr<OnigRegex> pattern_;  // Replace
  std::string content_;                 // Replace, Prepend
  bool left_ = true;                    // Strip
  bool right_ = true;
};

// How a Split keeps the delimiters it finds (SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits `text` at `matches` (sorted, non-overlapping byte ranges) like NormalizedString::split;
// empty pieces are dropped.
std::vector<std::string> SplitByMatches(absl::string_view text,
                                        const std::vector<MatchRange>& matches,
                                        SplitBehavior behavior, bool invert);

// "pre_tokenizer": Sequence, Split, ByteLevel.
class PreTokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> FromJson(const nlohmann::json& json,
                                                                const std::string& where);
  // Replaces every piece by its sub-pieces, in order.
  absl::Status Apply(std::vector<std::string>* pieces) const;
  // Regex warnings collected while compiling (e.g. an unpatched Unicode class).
  std::vector<std::string> Warnings() const;

 private:
  enum class Kind { kSequence, kSplit, kByteLevel };
  Kind kind_ = Kind::kSequence;
  std::vector<std::unique_ptr<PreTokenizer>> children_;
  std::unique_ptr<OnigRegex> pattern_;  // Split
  SplitBehavior behavior_ = SplitBehavior::kIsolated;
  bool invert_ = false;
  bool add_prefix_space_ = false;  // ByteLevel
  bool use_regex_ = true;
};

// "post_processor" for a single sequence: Sequence, ByteLevel, TemplateProcessing,
// RobertaProcessing, BertProcessing.
class PostProcessor {
 public:
  static absl::StatusOr<std::unique_ptr<PostProcessor>> FromJson(const nlohmann::json& json,
                                                                 const std::string& where);
  // Adds the special tokens of the template around `ids` when `add_special_tokens`.
  void Process(std::vector<uint32_t>* ids, bool add_special_tokens) const;

 private:
  enum class Kind { kSequence, kByteLevel, kTemplate };
  struct TemplatePiece {
    bool is_sequence = false;   // $A
    std::vector<uint32_t> ids;  // a special token's ids
  };
  Kind kind_ = Kind::kSequence;
  std::vector<std::unique_ptr<PostProcessor>> children_;
  std::vector<TemplatePiece> single_;
};

// "decoder": null (tokens joined by spaces) or ByteLevel (alone or as the one member of a
// Sequence).
enum class DecoderKind { kNone, kByteLevel };
absl::StatusOr<DecoderKind> ParseDecoder(const nlohmann::json* json);

}  // namespace engram::tokenizer_internal

#endif  // ENGRAM_MODEL_TOKENIZER_PIPELINE_H_
