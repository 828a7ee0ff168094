// The Engram CompressedTokenizer normaliser and the Hugging Face `tokenizers` normaliser steps it
// is built from, with the library's frozen Unicode 9.0 normalisation data.
//
// The reference builds its compressed token map with a `tokenizers.normalizers.Sequence` of NFKC,
// NFD, StripAccents, Lowercase, Replace([ \t\r\n]+ -> " "), Replace(^ $ -> U+E000), Strip,
// Replace(U+E000 -> " ") (docs/engram-reference.md §1.2). The library normalises with Unicode 9.0
// tables, lowercases with the Rust standard library (Unicode 17 in the 0.23 wheels) and strips
// Unicode White_Space; ICU 72 reproduces it with the recipe of docs/hf-tokenizers.md §8
// (a Unicode 9.0 filter on the normalisers and on the mark set, per-code-point lowercasing and a
// few letters ICU 72 does not know). Inputs that are not valid UTF-8 are first decoded lossily.
#ifndef ENGRAM_MODEL_ENGRAM_NORMALIZER_H_
#define ENGRAM_MODEL_ENGRAM_NORMALIZER_H_

#include <string>

#include "absl/strings/string_view.h"

namespace engram {

// The whole Engram normaliser (Tokenizer.normalize_str of the reference Sequence).
std::string EngramNormalize(absl::string_view text);

// One Unicode normalisation form as `tokenizers` applies it (Unicode 9.0 data: characters assigned
// later are left alone and never compose).
enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
std::string HfNormalize(NormalForm form, absl::string_view text);

// `StripAccents`: drops every character of General Category Mn, Mc or Me in Unicode 9.0.
std::string HfStripAccents(absl::string_view text);

// `Lowercase`: the full lowercase mapping of each character on its own (no context, no locale:
// no final sigma, "ẞ" -> "ß", "ß" unchanged).
std::string HfLowercase(absl::string_view text);

// `Strip`: removes leading and/or trailing Unicode White_Space.
std::string HfStrip(absl::string_view text, bool left, bool right);

// Unicode White_Space (Rust's char::is_whitespace, Oniguruma's \s).
bool IsUnicodeWhiteSpace(char32_t codepoint);

}  // namespace engram

#endif  // ENGRAM_MODEL_ENGRAM_NORMALIZER_H_
