#include "model/engram_normalizer.h"

#include <unicode/errorcode.h>
#include <unicode/normalizer2.h>
#include <unicode/uniset.h>
#include <unicode/unistr.h>
#include <unicode/ustring.h>

#include <memory>
#include <string>

#include "common/log.h"
#include "model/tokenizer_utf8.h"

namespace engram {
namespace {

using tokenizer_internal::AppendUtf8;
using tokenizer_internal::FindInvalidUtf8;
using tokenizer_internal::Utf8Lossy;

constexpr char32_t kSentinel = 0xE000;

// ICU objects for the library's Unicode 9.0 behaviour, built once; all are used read-only.
struct Unicode9Data {
  icu::UnicodeSet age9;
  icu::UnicodeSet marks;
  std::unique_ptr<icu::FilteredNormalizer2> nfc, nfd, nfkc, nfkd;
  bool ok = true;
};

const Unicode9Data& Data() {
  static const Unicode9Data* data = [] {
    auto* d = new Unicode9Data();
    UErrorCode status = U_ZERO_ERROR;
    d->age9.applyPattern(icu::UnicodeString(u"[:age=9.0:]"), status);
    d->age9.freeze();
    // Mn, Mc and Me as of 9.0; U+1CF2/3 were Mc then (Lo now) and U+111C9 was Po (Mn now).
    d->marks.applyPattern(icu::UnicodeString(u"[[:M:]&[:age=9.0:]]"), status);
    d->marks.add(0x1CF2, 0x1CF3);
    d->marks.remove(0x111C9);
    d->marks.freeze();
    d->nfc = std::make_unique<icu::FilteredNormalizer2>(*icu::Normalizer2::getNFCInstance(status),
                                                        d->age9);
    d->nfd = std::make_unique<icu::FilteredNormalizer2>(*icu::Normalizer2::getNFDInstance(status),
                                                        d->age9);
    d->nfkc = std::make_unique<icu::FilteredNormalizer2>(*icu::Normalizer2::getNFKCInstance(status),
                                                         d->age9);
    d->nfkd = std::make_unique<icu::FilteredNormalizer2>(*icu::Normalizer2::getNFKDInstance(status),
                                                         d->age9);
    // ICU's data ships inside libicudata: this fails only with a broken installation.
    if (U_FAILURE(status)) {
      ENGRAM_LOG(ERROR).With("icu_error", u_errorName(status))
          << "ICU normalisation data unavailable; text is left unnormalised";
      d->ok = false;
    }
    return d;
  }();
  return *data;
}

icu::UnicodeString ToIcu(absl::string_view text) {
  if (FindInvalidUtf8(text) != absl::string_view::npos) {
    const std::string lossy = Utf8Lossy(text);
    return icu::UnicodeString::fromUTF8(icu::StringPiece(lossy.data(), lossy.size()));
  }
  return icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), text.size()));
}

std::string ToUtf8(const icu::UnicodeString& text) {
  std::string out;
  text.toUTF8String(out);
  return out;
}

std::u32string ToCodepoints(const icu::UnicodeString& text) {
  std::u32string out;
  out.reserve(text.length());
  for (int32_t i = 0; i < text.length(); i = text.moveIndex32(i, 1))
    out.push_back(text.char32At(i));
  return out;
}

std::string ToUtf8(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) AppendUtf8(c, &out);
  return out;
}

icu::UnicodeString Normalized(NormalForm form, const icu::UnicodeString& text) {
  const Unicode9Data& d = Data();
  if (!d.ok) return text;
  const icu::Normalizer2* n = form == NormalForm::kNfc    ? d.nfc.get()
                              : form == NormalForm::kNfd  ? d.nfd.get()
                              : form == NormalForm::kNfkc ? d.nfkc.get()
                                                          : d.nfkd.get();
  UErrorCode status = U_ZERO_ERROR;
  icu::UnicodeString out = n->normalize(text, status);
  return U_SUCCESS(status) ? out : text;
}

// Lowercase mappings of letters newer than ICU 72's Unicode 15 data, as Rust's (Unicode 17)
// char::to_lowercase gives them (docs/hf-tokenizers.md §8).
char32_t LowercaseBeyondIcu(char32_t c) {
  switch (c) {
    case 0x1C89:
      return 0x1C8A;
    case 0xA7CB:
      return 0x0264;
    case 0xA7CC:
      return 0xA7CD;
    case 0xA7CE:
      return 0xA7CF;
    case 0xA7D2:
      return 0xA7D3;
    case 0xA7D4:
      return 0xA7D5;
    case 0xA7DA:
      return 0xA7DB;
    case 0xA7DC:
      return 0x019B;
    default:
      break;
  }
  if (c >= 0x10D50 && c <= 0x10D65) return c + 0x20;
  if (c >= 0x16EA0 && c <= 0x16EB8) return c + 0x1B;
  return 0;
}

// Appends the full lowercase mapping of one code point. ICU is given the code point alone so that
// no context rule (Final_Sigma) applies.
void AppendLowercase(char32_t c, std::u32string* out) {
  if (c < 0x80) {
    out->push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
    return;
  }
  if (char32_t mapped = LowercaseBeyondIcu(c)) {
    out->push_back(mapped);
    return;
  }
  UChar src[2];
  int32_t src_len = 0;
  U16_APPEND_UNSAFE(src, src_len, c);
  UChar dst[8];
  UErrorCode status = U_ZERO_ERROR;
  const int32_t len = u_strToLower(dst, 8, src, src_len, "", &status);
  if (U_FAILURE(status)) {
    out->push_back(c);
    return;
  }
  for (int32_t i = 0; i < len;) {
    UChar32 cp;
    U16_NEXT(dst, i, len, cp);
    out->push_back(static_cast<char32_t>(cp));
  }
}

std::u32string StripAccents(const std::u32string& text) {
  const icu::UnicodeSet& marks = Data().marks;
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (!marks.contains(static_cast<UChar32>(c))) out.push_back(c);
  }
  return out;
}

std::u32string Lowercase(const std::u32string& text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) AppendLowercase(c, &out);
  return out;
}

std::u32string Strip(const std::u32string& text, bool left, bool right) {
  size_t begin = 0;
  size_t end = text.size();
  while (left && begin < end && IsUnicodeWhiteSpace(text[begin])) ++begin;
  while (right && end > begin && IsUnicodeWhiteSpace(text[end - 1])) --end;
  return text.substr(begin, end - begin);
}

bool IsAsciiSpaceRun(char32_t c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

}  // namespace

bool IsUnicodeWhiteSpace(char32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  switch (c) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

std::string HfNormalize(NormalForm form, absl::string_view text) {
  return ToUtf8(Normalized(form, ToIcu(text)));
}

std::string HfStripAccents(absl::string_view text) {
  return ToUtf8(StripAccents(ToCodepoints(ToIcu(text))));
}

std::string HfLowercase(absl::string_view text) {
  return ToUtf8(Lowercase(ToCodepoints(ToIcu(text))));
}

std::string HfStrip(absl::string_view text, bool left, bool right) {
  return ToUtf8(Strip(ToCodepoints(ToIcu(text)), left, right));
}

std::string EngramNormalize(absl::string_view text) {
  const icu::UnicodeString composed =
      Normalized(NormalForm::kNfd, Normalized(NormalForm::kNfkc, ToIcu(text)));
  const std::u32string lowered = Lowercase(StripAccents(ToCodepoints(composed)));
  // Replace(Regex("[ \t\r\n]+"), " ").
  std::u32string collapsed;
  collapsed.reserve(lowered.size());
  for (char32_t c : lowered) {
    if (!IsAsciiSpaceRun(c)) {
      collapsed.push_back(c);
    } else if (collapsed.empty() || collapsed.back() != ' ') {
      collapsed.push_back(' ');
    }
  }
  // Replace(Regex("^ $"), U+E000): with no LF left, the pattern matches only a lone space, which
  // the sentinel then protects from Strip.
  if (collapsed == U" ") collapsed[0] = kSentinel;
  std::u32string stripped = Strip(collapsed, true, true);
  for (char32_t& c : stripped) {
    if (c == kSentinel) c = ' ';
  }
  return ToUtf8(stripped);
}

}  // namespace engram
