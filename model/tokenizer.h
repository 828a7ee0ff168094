// The Hugging Face byte-level BPE tokenizer of an Engram model (tokenizer.json), reimplemented to
// encode and decode exactly as Hugging Face `tokenizers` 0.22/0.23 does.
//
// Encode runs the library's pipeline: added tokens are extracted first (non-normalized ones on the
// raw text, normalized ones on the normalized gaps), each gap is pre-tokenized on its own (Split
// with Oniguruma-compatible regexes, ByteLevel), the BPE model merges each piece, and the
// post-processor adds template tokens when asked. Decode maps ids to token strings (unknown ids
// dropped), applies the ByteLevel decoder and converts the bytes to text once, lossily.
// docs/tokenizer.md describes the supported tokenizer.json subset and how exactness is checked.
//
// A Tokenizer is immutable after loading and safe to use from many threads.
#ifndef ENGRAM_MODEL_TOKENIZER_H_
#define ENGRAM_MODEL_TOKENIZER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace engram {

namespace tokenizer_internal {
class AddedVocabulary;
class BpeModel;
class PostProcessor;
class PreTokenizer;
class TextNormalizer;
enum class DecoderKind;
}  // namespace tokenizer_internal

class Tokenizer {
 public:
  // Loads a tokenizer.json file. Errors name the file and the offending field.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // Parses tokenizer.json text.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view json_text);
  ~Tokenizer();

  // HF encode; add_special_tokens only affects the post-processor (TemplateProcessing etc.).
  // INVALID_ARGUMENT when `text` is not valid UTF-8.
  absl::StatusOr<std::vector<uint32_t>> Encode(absl::string_view text,
                                               bool add_special_tokens = false) const;
  // HF decode (ByteLevel decoder, from_utf8_lossy once at the end; unknown ids dropped).
  std::string Decode(absl::Span<const uint32_t> ids, bool skip_special_tokens = false) const;
  // Raw token string (byte-level form, e.g. "Ġthe"); nullopt for unknown ids.
  std::optional<std::string> IdToToken(uint32_t id) const;
  std::optional<uint32_t> TokenToId(absl::string_view token) const;
  // len(tokenizer): the union of model vocab and added vocab.
  size_t size() const { return size_; }
  // Largest assigned id.
  uint32_t max_id() const { return max_id_; }
  bool IsValidId(uint32_t id) const;
  bool IsSpecial(uint32_t id) const;
  // Ids of special tokens whose content matches, e.g. "<|endoftext|>"; nullopt if absent.
  std::optional<uint32_t> SpecialTokenId(absl::string_view content) const;

  // Pipeline stages on their own, as the library's `normalizer.normalize_str` and
  // `pre_tokenizer.pre_tokenize_str` run them (identity / one piece when the stage is absent).
  // Pre-tokenized pieces are in the pre-tokenizer's output form (byte-level characters).
  absl::StatusOr<std::string> Normalize(absl::string_view text) const;
  absl::StatusOr<std::vector<std::string>> PreTokenize(absl::string_view text) const;

 private:
  Tokenizer();
  // The string decode() sees for `id`, or nullptr.
  const std::string* TokenString(uint32_t id) const;

  std::unique_ptr<tokenizer_internal::BpeModel> model_;
  std::unique_ptr<tokenizer_internal::AddedVocabulary> added_;
  std::unique_ptr<tokenizer_internal::TextNormalizer> normalizer_;
  std::unique_ptr<tokenizer_internal::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<tokenizer_internal::PostProcessor> post_processor_;
  tokenizer_internal::DecoderKind decoder_;
  size_t size_ = 0;
  uint32_t max_id_ = 0;
};

// Incremental detokenizer with decode_stream semantics (docs/hf-tokenizers.md §7.6): Step returns
// the new text, holding back while the text ends in an incomplete UTF-8 sequence (i.e. in U+FFFD).
class DecodeStream {
 public:
  // `tokenizer` must outlive the stream.
  DecodeStream(const Tokenizer& tokenizer, bool skip_special_tokens);
  // Text completed by `id`; empty while held back.
  std::string Step(uint32_t id);
  // Whatever is held back, lossily decoded; the stream starts afresh afterwards.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<uint32_t> ids_;  // the window: context tokens, then pending ones
  std::string prefix_;         // decode of the context tokens
  size_t prefix_index_ = 0;    // where the pending tokens start in ids_
};

}  // namespace engram

#endif  // ENGRAM_MODEL_TOKENIZER_H_
