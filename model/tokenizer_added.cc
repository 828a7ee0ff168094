#include "model/tokenizer_added.h"

#include <unicode/uchar.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "model/engram_normalizer.h"
#include "model/tokenizer_json.h"
#include "model/tokenizer_utf8.h"

namespace engram::tokenizer_internal {
namespace {

// `\w` of the Rust regex crate, which single_word uses: Alphabetic, marks, decimal digits,
// connector punctuation and Join_Control.
bool IsWordChar(char32_t c) {
  const UChar32 cp = static_cast<UChar32>(c);
  const int32_t mask = U_GET_GC_MASK(cp);
  return u_hasBinaryProperty(cp, UCHAR_ALPHABETIC) || (mask & U_GC_M_MASK) != 0 ||
         (mask & (U_GC_ND_MASK | U_GC_PC_MASK)) != 0 || u_hasBinaryProperty(cp, UCHAR_JOIN_CONTROL);
}

bool EndsWithWordChar(absl::string_view text) {
  if (text.empty()) return false;
  size_t start = text.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return IsWordChar(NextCodepoint(text, &start));
}

bool StartsWithWordChar(absl::string_view text) {
  size_t pos = 0;
  return !text.empty() && IsWordChar(NextCodepoint(text, &pos));
}

// Start of the White_Space run that ends `text` (the library's `\s*$`).
size_t TrailingSpaceStart(absl::string_view text) {
  size_t begin = text.size();
  while (begin > 0) {
    size_t start = begin - 1;
    while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t pos = start;
    if (!IsUnicodeWhiteSpace(NextCodepoint(text, &pos))) break;
    begin = start;
  }
  return begin;
}

// Length of the White_Space run that starts `text` (the library's `^\s*`).
size_t LeadingSpaceLength(absl::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t next = pos;
    if (!IsUnicodeWhiteSpace(NextCodepoint(text, &next))) break;
    pos = next;
  }
  return pos;
}

bool SameOptions(const AddedToken& a, const AddedToken& b) {
  return a.single_word == b.single_word && a.lstrip == b.lstrip && a.rstrip == b.rstrip &&
         a.normalized == b.normalized && a.special == b.special;
}

}  // namespace

void AddedVocabulary::Matcher::Add(absl::string_view pattern, size_t token_index) {
  if (pattern.empty()) return;
  int node = 0;
  for (unsigned char b : pattern) {
    auto it = nodes_[node].next.find(b);
    if (it == nodes_[node].next.end()) {
      nodes_.emplace_back();
      it = nodes_[node].next.emplace(b, static_cast<int>(nodes_.size()) - 1).first;
    }
    node = it->second;
  }
  // With two identical patterns the first one registered wins.
  if (nodes_[node].token < 0) nodes_[node].token = static_cast<int>(token_index);
  first_byte_[static_cast<unsigned char>(pattern[0])] = true;
}

std::vector<AddedVocabulary::Matcher::Match> AddedVocabulary::Matcher::FindAll(
    absl::string_view text) const {
  std::vector<Match> matches;
  size_t pos = 0;
  while (pos < text.size()) {
    if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    // The longest pattern starting here; the first start with any match is the leftmost.
    int node = 0;
    Match best{pos, pos, 0};
    for (size_t i = pos; i < text.size(); ++i) {
      auto it = nodes_[node].next.find(static_cast<unsigned char>(text[i]));
      if (it == nodes_[node].next.end()) break;
      node = it->second;
      if (nodes_[node].token >= 0) best = {pos, i + 1, static_cast<size_t>(nodes_[node].token)};
    }
    if (best.end > pos) {
      matches.push_back(best);
      pos = best.end;
    } else {
      ++pos;
    }
  }
  return matches;
}

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const nlohmann::json* added_tokens,
                                                          const BpeModel& model,
                                                          const TextNormalizer* normalizer) {
  AddedVocabulary v;
  if (added_tokens == nullptr) return v;
  if (!added_tokens->is_array()) return JsonError("added_tokens", "must be an array");
  uint32_t next_id = static_cast<uint32_t>(model.vocab_size());
  for (size_t i = 0; i < added_tokens->size(); ++i) {
    const nlohmann::json& entry = (*added_tokens)[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!entry.is_object()) return JsonError(where, "must be an object");
    AddedToken t;
    const nlohmann::json* id_field = JsonField(entry, "id");
    if (id_field == nullptr) return JsonError(absl::StrCat(where, ".id"), "missing");
    ENGRAM_ASSIGN_OR_RETURN(const uint32_t json_id, JsonId(*id_field, absl::StrCat(where, ".id")));
    ENGRAM_ASSIGN_OR_RETURN(t.content, JsonString(entry, "content", where));
    ENGRAM_ASSIGN_OR_RETURN(t.single_word, JsonBool(entry, "single_word", where, false));
    ENGRAM_ASSIGN_OR_RETURN(t.lstrip, JsonBool(entry, "lstrip", where, false));
    ENGRAM_ASSIGN_OR_RETURN(t.rstrip, JsonBool(entry, "rstrip", where, false));
    ENGRAM_ASSIGN_OR_RETURN(t.normalized, JsonBool(entry, "normalized", where, true));
    ENGRAM_ASSIGN_OR_RETURN(t.special, JsonBool(entry, "special", where, false));
    if (t.content.empty()) continue;  // the library ignores empty tokens
    if (auto it = v.by_content_.find(t.content); it != v.by_content_.end()) {
      if (SameOptions(v.tokens_[it->second], t)) continue;  // an exact repeat is ignored too
      return JsonError(where,
                       absl::StrCat("\"", t.content, "\" is listed twice with different options"));
    }
    // The JSON id is not what the library uses: it assigns ids itself. Refuse a file whose ids
    // disagree rather than silently tokenizing with other ids than its author saw.
    std::optional<uint32_t> vocab_id = model.TokenToId(t.content);
    t.id = vocab_id ? *vocab_id : next_id++;
    if (t.id != json_id) {
      return JsonError(where, absl::StrCat("\"", t.content, "\" has id ", json_id,
                                           " but Hugging Face tokenizers assigns it id ", t.id,
                                           " (model vocab entries first, then added tokens "
                                           "counting up from the vocab size)"));
    }
    if (v.by_id_.contains(t.id)) {
      return JsonError(where, absl::StrCat("id ", t.id, " is used by two added tokens"));
    }
    t.display = t.content;
    if (t.normalized && normalizer != nullptr) {
      ENGRAM_ASSIGN_OR_RETURN(t.display, normalizer->Normalize(t.content));
    }
    if (t.special) v.special_.insert(t.content);
    v.by_content_[t.content] = v.tokens_.size();
    v.by_id_[t.id] = v.tokens_.size();
    v.tokens_.push_back(std::move(t));
  }
  // Special tokens are registered before the others, as refresh_added_tokens chains them.
  for (bool special : {true, false}) {
    for (size_t i = 0; i < v.tokens_.size(); ++i) {
      const AddedToken& t = v.tokens_[i];
      if (t.special != special) continue;
      if (t.normalized) {
        v.normalized_.Add(t.display, i);
      } else {
        v.raw_.Add(t.content, i);
      }
    }
  }
  return v;
}

std::optional<uint32_t> AddedVocabulary::TokenToId(absl::string_view content) const {
  auto it = by_content_.find(content);
  if (it == by_content_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

const AddedToken* AddedVocabulary::FindById(uint32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

void AddedVocabulary::SplitPiece(absl::string_view text, const Matcher& matcher,
                                 std::vector<Piece>* out) const {
  if (text.empty()) return;
  size_t start_offset = 0;
  for (const Matcher::Match& m : matcher.FindAll(text)) {
    const AddedToken& token = tokens_[m.token];
    size_t start = m.begin;
    size_t stop = m.end;
    if (token.single_word) {
      // A rejected match is not rescanned for shorter candidates, as in the library.
      const bool start_ok = start == 0 || !EndsWithWordChar(text.substr(0, start));
      const bool stop_ok = stop == text.size() || !StartsWithWordChar(text.substr(stop));
      if (!start_ok || !stop_ok) continue;
    }
    if (token.lstrip) start = std::max(TrailingSpaceStart(text.substr(0, start)), start_offset);
    if (token.rstrip) stop += LeadingSpaceLength(text.substr(stop));
    if (start_offset < start)
      out->push_back({std::string(text.substr(start_offset, start - start_offset)), std::nullopt});
    out->push_back({std::string(text.substr(start, stop - start)), token.id});
    start_offset = stop;
  }
  if (start_offset < text.size())
    out->push_back({std::string(text.substr(start_offset)), std::nullopt});
}

absl::StatusOr<std::vector<Piece>> AddedVocabulary::Split(absl::string_view text,
                                                          const TextNormalizer* normalizer) const {
  std::vector<Piece> first;
  if (raw_.empty()) {
    if (!text.empty()) first.push_back({std::string(text), std::nullopt});
  } else {
    SplitPiece(text, raw_, &first);
  }
  if (normalizer == nullptr && normalized_.empty()) return first;
  std::vector<Piece> out;
  out.reserve(first.size());
  for (Piece& piece : first) {
    if (piece.token_id) {
      out.push_back(std::move(piece));
      continue;
    }
    std::string normalized = std::move(piece.text);
    if (normalizer != nullptr) {
      ENGRAM_ASSIGN_OR_RETURN(normalized, normalizer->Normalize(normalized));
    }
    if (normalized_.empty()) {
      if (!normalized.empty()) out.push_back({std::move(normalized), std::nullopt});
    } else {
      SplitPiece(normalized, normalized_, &out);
    }
  }
  return out;
}

}  // namespace engram::tokenizer_internal
