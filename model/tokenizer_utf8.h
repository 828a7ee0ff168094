// UTF-8 and byte-level helpers shared by the tokenizer parts (model/tokenizer*.cc,
// model/engram_normalizer.cc, model/compressed_vocab.cc).
//
// Hugging Face tokenizers works on Rust `str` (always valid UTF-8) and turns decoded bytes into
// text with `String::from_utf8_lossy`; these functions reproduce both sides exactly.
#ifndef ENGRAM_MODEL_TOKENIZER_UTF8_H_
#define ENGRAM_MODEL_TOKENIZER_UTF8_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace engram::tokenizer_internal {

inline constexpr char32_t kReplacementChar = 0xFFFD;
inline constexpr absl::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

// Offset of the first byte that does not start a well-formed UTF-8 sequence, or npos when `text`
// is valid UTF-8 (no surrogates, no overlong forms, nothing above U+10FFFF).
size_t FindInvalidUtf8(absl::string_view text);

// Decodes the code point at `*pos` of valid UTF-8 and advances `*pos` past it.
char32_t NextCodepoint(absl::string_view text, size_t* pos);

// Byte length of the UTF-8 sequence that starts with `lead` (1 for anything that is not a lead
// byte).
size_t Utf8Length(unsigned char lead);

void AppendUtf8(char32_t codepoint, std::string* out);

// `String::from_utf8_lossy`: one U+FFFD per maximal subpart of each ill-formed sequence (Unicode
// 15 §3.9, the same as Python's errors="replace").
std::string Utf8Lossy(absl::string_view bytes);

// The GPT-2 byte-to-unicode alphabet: the UTF-8 form of the character that stands for each byte.
const std::array<std::string, 256>& ByteLevelAlphabet();

// The byte a byte-level character stands for, or -1 when `codepoint` is not in the alphabet.
int ByteLevelByte(char32_t codepoint);

// Appends the bytes a token stands for under the ByteLevel decoder: the alphabet bytes when every
// character of `token` is in the alphabet, otherwise the token's own UTF-8.
void AppendByteLevelDecoded(absl::string_view token, std::string* out);

}  // namespace engram::tokenizer_internal

#endif  // ENGRAM_MODEL_TOKENIZER_UTF8_H_
