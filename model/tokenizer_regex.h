// Oniguruma-compatible regular expressions on PCRE2, for the `Split` pre-tokenizer and the
// `Replace` normalizer of tokenizer.json.
//
// Hugging Face tokenizers compiles these patterns with Oniguruma (Ruby syntax, Unicode 16 in
// 0.22/0.23). PCRE2 10.42 shares the backtracking, leftmost-first semantics and the syntax the
// shipped patterns use, but differs in a few escapes and in its Unicode 14 tables, so patterns are
// translated first (docs/tokenizer.md lists the rules):
//   \s \S        -> \p{White_Space} / \P{White_Space} (PCRE2's \s also matches U+180E)
//   \p{X} \P{X}  -> PCRE2's class plus the code points Oniguruma's newer tables add
//   \d \D        -> as \p{Nd} / \P{Nd};  \h \H -> hex digit (Oniguruma's meaning)
//   \w \W        -> Oniguruma's word class as explicit ranges;  \uHHHH -> \x{HHHH}
//   (?m)         -> (?s) (Ruby's m is dot-all)
// and matching follows onig::FindMatches: search from the end of the previous match over the whole
// subject; an empty match right after a match is skipped by one character.
#ifndef ENGRAM_MODEL_TOKENIZER_REGEX_H_
#define ENGRAM_MODEL_TOKENIZER_REGEX_H_

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace engram::tokenizer_internal {

// A half-open byte range [first, second) of the subject.
using MatchRange = std::pair<size_t, size_t>;

// Rewrites an Oniguruma pattern into PCRE2 syntax. Constructs that cannot be expressed exactly
// (e.g. \P{X} of a patched class inside a bracket) are kept as PCRE2 reads them and described in
// `warnings`; constructs PCRE2 would misread (nested classes, &&) are errors.
absl::StatusOr<std::string> TranslateOnigPattern(absl::string_view pattern,
                                                 std::vector<std::string>* warnings);

// PCRE2 syntax that matches `text` literally (for tokenizer.json's {"String": ...} patterns).
std::string EscapeLiteral(absl::string_view text);

class OnigRegex {
 public:
  // Compiles an Oniguruma pattern; the error names the pattern and PCRE2's message.
  static absl::StatusOr<std::unique_ptr<OnigRegex>> Compile(absl::string_view pattern);
  // A pattern that matches `text` literally.
  static absl::StatusOr<std::unique_ptr<OnigRegex>> Literal(absl::string_view text);
  ~OnigRegex();
  OnigRegex(const OnigRegex&) = delete;
  OnigRegex& operator=(const OnigRegex&) = delete;

  // All matches in `subject` (valid UTF-8) in onig::FindMatches order. Thread-safe.
  absl::StatusOr<std::vector<MatchRange>> FindAll(absl::string_view subject) const;

  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  OnigRegex() = default;
  static absl::StatusOr<std::unique_ptr<OnigRegex>> CompileTranslated(
      std::string source, std::string pcre2_pattern, std::vector<std::string> warnings);
  // Searches from `start`; false when there is no match.
  absl::StatusOr<bool> Search(absl::string_view subject, size_t start, MatchRange* match,
                              void* match_data) const;

  std::string source_;
  std::string pcre2_pattern_;
  std::vector<std::string> warnings_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

}  // namespace engram::tokenizer_internal

#endif  // ENGRAM_MODEL_TOKENIZER_REGEX_H_
