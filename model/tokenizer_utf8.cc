#include "model/tokenizer_utf8.h"

namespace engram::tokenizer_internal {
namespace {

bool InRange(unsigned char b, unsigned char lo, unsigned char hi) { return b >= lo && b <= hi; }

// Bounds of the second byte after `lead` (Unicode Table 3-7); the later trail bytes are 80..BF.
// Returns the sequence length, 0 for a byte that cannot start a sequence.
size_t LeadInfo(unsigned char lead, unsigned char* lo, unsigned char* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (lead < 0x80) return 1;
  if (InRange(lead, 0xC2, 0xDF)) return 2;
  if (lead == 0xE0) *lo = 0xA0;
  if (lead == 0xED) *hi = 0x9F;
  if (InRange(lead, 0xE0, 0xEF)) return 3;
  if (lead == 0xF0) *lo = 0x90;
  if (lead == 0xF4) *hi = 0x8F;
  if (InRange(lead, 0xF0, 0xF4)) return 4;
  return 0;
}

// Length of the maximal prefix of a well-formed sequence at `pos` (>= 1), and whether it is
// complete.
size_t ScanSequence(absl::string_view text, size_t pos, bool* complete) {
  unsigned char lo, hi;
  const size_t len = LeadInfo(static_cast<unsigned char>(text[pos]), &lo, &hi);
  *complete = len != 0;
  if (len <= 1) return 1;
  size_t n = 1;
  for (; n < len; ++n) {
    if (pos + n >= text.size()) break;
    const unsigned char b = static_cast<unsigned char>(text[pos + n]);
    if (!InRange(b, n == 1 ? lo : 0x80, n == 1 ? hi : 0xBF)) break;
  }
  *complete = n == len;
  return n;
}

std::array<char32_t, 256> BuildByteToCodepoint() {
  std::array<char32_t, 256> map{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    map[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return map;
}

const std::array<char32_t, 256>& ByteToCodepoint() {
  static const std::array<char32_t, 256> map = BuildByteToCodepoint();
  return map;
}

}  // namespace

size_t FindInvalidUtf8(absl::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    bool complete;
    const size_t n = ScanSequence(text, pos, &complete);
    if (!complete) return pos;
    pos += n;
  }
  return absl::string_view::npos;
}

size_t Utf8Length(unsigned char lead) {
  if (lead >= 0xF0 && lead <= 0xF7) return 4;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xC0 && lead <= 0xDF) return 2;
  return 1;
}

char32_t NextCodepoint(absl::string_view text, size_t* pos) {
  const unsigned char lead = static_cast<unsigned char>(text[*pos]);
  const size_t len = std::min(Utf8Length(lead), text.size() - *pos);
  char32_t cp = len == 1 ? lead : lead & (0x7F >> len);
  for (size_t i = 1; i < len; ++i)
    cp = (cp << 6) | (static_cast<unsigned char>(text[*pos + i]) & 0x3F);
  *pos += len;
  return cp;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string Utf8Lossy(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    bool complete;
    const size_t n = ScanSequence(bytes, pos, &complete);
    if (complete) {
      out.append(bytes.data() + pos, n);
    } else {
      out.append(kReplacementUtf8.data(), kReplacementUtf8.size());
    }
    pos += n;
  }
  return out;
}

const std::array<std::string, 256>& ByteLevelAlphabet() {
  static const std::array<std::string, 256> alphabet = [] {
    std::array<std::string, 256> a;
    for (int b = 0; b < 256; ++b) AppendUtf8(ByteToCodepoint()[b], &a[b]);
    return a;
  }();
  return alphabet;
}

int ByteLevelByte(char32_t cp) {
  if (cp < 256) {
    const bool printable = (cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || cp >= 0xAE;
    return printable ? static_cast<int>(cp) : -1;
  }
  static const std::array<int, 68> upper = [] {
    std::array<int, 68> u{};
    for (int b = 0; b < 256; ++b) {
      if (ByteToCodepoint()[b] >= 256) u[ByteToCodepoint()[b] - 256] = b;
    }
    return u;
  }();
  return cp - 256 < upper.size() ? upper[cp - 256] : -1;
}

void AppendByteLevelDecoded(absl::string_view token, std::string* out) {
  const size_t mark = out->size();
  size_t pos = 0;
  while (pos < token.size()) {
    const int b = ByteLevelByte(NextCodepoint(token, &pos));
    if (b < 0) {
      // A character outside the alphabet: the whole token passes through as its own UTF-8.
      out->resize(mark);
      out->append(token.data(), token.size());
      return;
    }
    out->push_back(static_cast<char>(b));
  }
}

}  // namespace engram::tokenizer_internal
