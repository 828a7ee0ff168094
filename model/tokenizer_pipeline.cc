#include "model/tokenizer_pipeline.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "model/engram_normalizer.h"
#include "model/tokenizer_json.h"
#include "model/tokenizer_utf8.h"

namespace engram::tokenizer_internal {
namespace {

// The GPT-2 split pattern of the ByteLevel pre-tokenizer (pre_tokenizers/byte_level.rs).
constexpr absl::string_view kByteLevelPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::StatusOr<const OnigRegex*> ByteLevelRegex() {
  static const auto* regex =
      new absl::StatusOr<std::unique_ptr<OnigRegex>>(OnigRegex::Compile(kByteLevelPattern));
  if (!regex->ok()) return regex->status();
  return regex->value().get();
}

// {"String": literal} or {"Regex": oniguruma pattern}.
absl::StatusOr<std::unique_ptr<OnigRegex>> ParsePattern(const nlohmann::json& object,
                                                        const std::string& where) {
  const nlohmann::json* pattern = JsonField(object, "pattern");
  const std::string at = absl::StrCat(where, ".pattern");
  if (pattern == nullptr || !pattern->is_object() || pattern->size() != 1) {
    return JsonError(at, "must be {\"String\": ...} or {\"Regex\": ...}");
  }
  absl::StatusOr<std::unique_ptr<OnigRegex>> regex;
  if (const nlohmann::json* s = JsonField(*pattern, "String"); s != nullptr && s->is_string()) {
    regex = OnigRegex::Literal(s->get<std::string>());
  } else if (const nlohmann::json* r = JsonField(*pattern, "Regex");
             r != nullptr && r->is_string()) {
    regex = OnigRegex::Compile(r->get<std::string>());
  } else {
    return JsonError(at, "must be {\"String\": ...} or {\"Regex\": ...}");
  }
  if (!regex.ok()) return JsonError(at, regex.status().message());
  return regex;
}

absl::StatusOr<const nlohmann::json*> JsonArray(const nlohmann::json& object, const char* key,
                                                const std::string& where) {
  const nlohmann::json* f = JsonField(object, key);
  if (f == nullptr || !f->is_array())
    return JsonError(absl::StrCat(where, ".", key), "must be an array");
  return f;
}

absl::StatusOr<SplitBehavior> ParseBehavior(const nlohmann::json& object,
                                            const std::string& where) {
  ENGRAM_ASSIGN_OR_RETURN(std::string b, JsonString(object, "behavior", where));
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  return JsonError(absl::StrCat(where, ".behavior"), absl::StrCat("unknown behavior \"", b, "\""));
}

// The components of a "Sequence" under `key`, each parsed by T::FromJson.
template <typename T>
absl::Status ParseChildren(const nlohmann::json& json, const char* key, const std::string& where,
                           std::vector<std::unique_ptr<T>>* children) {
  ENGRAM_ASSIGN_OR_RETURN(const nlohmann::json* list, JsonArray(json, key, where));
  for (size_t i = 0; i < list->size(); ++i) {
    ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<T> child,
                            T::FromJson((*list)[i], absl::StrCat(where, ".", key, "[", i, "]")));
    children->push_back(std::move(child));
  }
  return absl::OkStatus();
}

}  // namespace

// ---- Normalizer --------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<TextNormalizer>> TextNormalizer::FromJson(const nlohmann::json& json,
                                                                         const std::string& where) {
  ENGRAM_ASSIGN_OR_RETURN(std::string type, JsonType(json, where));
  auto n = std::make_unique<TextNormalizer>();
  if (type == "Sequence") {
    n->kind_ = Kind::kSequence;
    ENGRAM_RETURN_IF_ERROR(ParseChildren(json, "normalizers", where, &n->children_));
  } else if (type == "NFC") {
    n->kind_ = Kind::kNfc;
  } else if (type == "NFD") {
    n->kind_ = Kind::kNfd;
  } else if (type == "NFKC") {
    n->kind_ = Kind::kNfkc;
  } else if (type == "NFKD") {
    n->kind_ = Kind::kNfkd;
  } else if (type == "Lowercase") {
    n->kind_ = Kind::kLowercase;
  } else if (type == "StripAccents") {
    n->kind_ = Kind::kStripAccents;
  } else if (type == "Strip") {
    n->kind_ = Kind::kStrip;
    ENGRAM_ASSIGN_OR_RETURN(n->left_, JsonBool(json, "strip_left", where, true));
    ENGRAM_ASSIGN_OR_RETURN(n->right_, JsonBool(json, "strip_right", where, true));
  } else if (type == "Replace") {
    n->kind_ = Kind::kReplace;
    ENGRAM_ASSIGN_OR_RETURN(n->pattern_, ParsePattern(json, where));
    ENGRAM_ASSIGN_OR_RETURN(n->content_, JsonString(json, "content", where));
  } else if (type == "Prepend") {
    n->kind_ = Kind::kPrepend;
    ENGRAM_ASSIGN_OR_RETURN(n->content_, JsonString(json, "prepend", where));
  } else {
    return JsonError(absl::StrCat(where, ".type"),
                     absl::StrCat("unsupported normalizer \"", type, "\""));
  }
  return n;
}

absl::StatusOr<std::string> TextNormalizer::Normalize(absl::string_view text) const {
  switch (kind_) {
    case Kind::kSequence: {
      std::string out(text);
      for (const auto& child : children_) {
        ENGRAM_ASSIGN_OR_RETURN(out, child->Normalize(out));
      }
      return out;
    }
    case Kind::kNfc:
      return HfNormalize(NormalForm::kNfc, text);
    case Kind::kNfd:
      return HfNormalize(NormalForm::kNfd, text);
    case Kind::kNfkc:
      return HfNormalize(NormalForm::kNfkc, text);
    case Kind::kNfkd:
      return HfNormalize(NormalForm::kNfkd, text);
    case Kind::kLowercase:
      return HfLowercase(text);
    case Kind::kStripAccents:
      return HfStripAccents(text);
    case Kind::kStrip:
      return HfStrip(text, left_, right_);
    case Kind::kPrepend:
      return text.empty() ? std::string() : absl::StrCat(content_, text);
    case Kind::kReplace: {
      // An empty string has no matches at all (Pattern::find_matches returns one empty gap).
      if (text.empty()) return std::string();
      ENGRAM_ASSIGN_OR_RETURN(std::vector<MatchRange> matches, pattern_->FindAll(text));
      std::string out;
      size_t last = 0;
      for (const MatchRange& m : matches) {
        absl::StrAppend(&out, text.substr(last, m.first - last), content_);
        last = m.second;
      }
      absl::StrAppend(&out, text.substr(last));
      return out;
    }
  }
  return std::string(text);
}

// ---- Pre-tokenizer -----------------------------------------------------------------------------

std::vector<std::string> SplitByMatches(absl::string_view text,
                                        const std::vector<MatchRange>& matches,
                                        SplitBehavior behavior, bool invert) {
  // Pattern::find_matches: contiguous (range, is_match) segments covering the text.
  struct Segment {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Segment> segments;
  size_t prev = 0;
  for (const MatchRange& m : matches) {
    if (prev != m.first) segments.push_back({prev, m.first, invert});
    segments.push_back({m.first, m.second, !invert});
    prev = m.second;
  }
  if (prev != text.size()) segments.push_back({prev, text.size(), invert});

  // NormalizedString::split: fold the segments by behavior into (range, removed) pieces.
  struct Out {
    size_t begin, end;
    bool removed;
  };
  std::vector<Out> pieces;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const Segment& s : segments) pieces.push_back({s.begin, s.end, s.is_match});
      break;
    case SplitBehavior::kIsolated:
      for (const Segment& s : segments) pieces.push_back({s.begin, s.end, false});
      break;
    case SplitBehavior::kContiguous:
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !pieces.empty()) {
          pieces.back().end = s.end;
        } else {
          pieces.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !pieces.empty()) {
          pieces.back().end = s.end;
        } else {
          pieces.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !pieces.empty()) {
          pieces.back().begin = it->begin;
        } else {
          pieces.push_back({it->begin, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
  }
  std::vector<std::string> out;
  for (const Out& p : pieces) {
    if (!p.removed && p.end > p.begin) out.emplace_back(text.substr(p.begin, p.end - p.begin));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::FromJson(const nlohmann::json& json,
                                                                     const std::string& where) {
  ENGRAM_ASSIGN_OR_RETURN(std::string type, JsonType(json, where));
  auto p = std::make_unique<PreTokenizer>();
  if (type == "Sequence") {
    p->kind_ = Kind::kSequence;
    ENGRAM_RETURN_IF_ERROR(ParseChildren(json, "pretokenizers", where, &p->children_));
  } else if (type == "Split") {
    p->kind_ = Kind::kSplit;
    ENGRAM_ASSIGN_OR_RETURN(p->pattern_, ParsePattern(json, where));
    ENGRAM_ASSIGN_OR_RETURN(p->behavior_, ParseBehavior(json, where));
    ENGRAM_ASSIGN_OR_RETURN(p->invert_, JsonBool(json, "invert", where, false));
  } else if (type == "ByteLevel") {
    p->kind_ = Kind::kByteLevel;
    ENGRAM_ASSIGN_OR_RETURN(p->add_prefix_space_, JsonBool(json, "add_prefix_space", where, true));
    ENGRAM_ASSIGN_OR_RETURN(p->use_regex_, JsonBool(json, "use_regex", where, true));
    ENGRAM_RETURN_IF_ERROR(ByteLevelRegex().status());
  } else {
    return JsonError(absl::StrCat(where, ".type"),
                     absl::StrCat("unsupported pre-tokenizer \"", type, "\""));
  }
  return p;
}

std::vector<std::string> PreTokenizer::Warnings() const {
  std::vector<std::string> out;
  if (pattern_ != nullptr) out = pattern_->warnings();
  for (const auto& child : children_) {
    for (std::string& w : child->Warnings()) out.push_back(std::move(w));
  }
  return out;
}

absl::Status PreTokenizer::Apply(std::vector<std::string>* pieces) const {
  switch (kind_) {
    case Kind::kSequence:
      for (const auto& child : children_) ENGRAM_RETURN_IF_ERROR(child->Apply(pieces));
      return absl::OkStatus();
    case Kind::kSplit:
    case Kind::kByteLevel:
      break;
  }
  std::vector<std::string> out;
  out.reserve(pieces->size());
  for (std::string& piece : *pieces) {
    if (kind_ == Kind::kSplit) {
      ENGRAM_ASSIGN_OR_RETURN(std::vector<MatchRange> matches, pattern_->FindAll(piece));
      for (std::string& s : SplitByMatches(piece, matches, behavior_, invert_)) {
        out.push_back(std::move(s));
      }
      continue;
    }
    // ByteLevel: optional prefix space, the GPT-2 split, then every byte to its alphabet char.
    if (add_prefix_space_ && (piece.empty() || piece[0] != ' ')) piece.insert(piece.begin(), ' ');
    std::vector<std::string> parts;
    if (use_regex_) {
      ENGRAM_ASSIGN_OR_RETURN(const OnigRegex* regex, ByteLevelRegex());
      ENGRAM_ASSIGN_OR_RETURN(std::vector<MatchRange> matches, regex->FindAll(piece));
      parts = SplitByMatches(piece, matches, SplitBehavior::kIsolated, false);
    } else if (!piece.empty()) {
      parts.push_back(std::move(piece));
    }
    const auto& alphabet = ByteLevelAlphabet();
    for (const std::string& part : parts) {
      std::string mapped;
      mapped.reserve(part.size() * 2);
      for (unsigned char b : part) mapped += alphabet[b];
      out.push_back(std::move(mapped));
    }
  }
  *pieces = std::move(out);
  return absl::OkStatus();
}

// ---- Post-processor ----------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<PostProcessor>> PostProcessor::FromJson(const nlohmann::json& json,
                                                                       const std::string& where) {
  ENGRAM_ASSIGN_OR_RETURN(std::string type, JsonType(json, where));
  auto p = std::make_unique<PostProcessor>();
  if (type == "Sequence") {
    p->kind_ = Kind::kSequence;
    ENGRAM_RETURN_IF_ERROR(ParseChildren(json, "processors", where, &p->children_));
  } else if (type == "ByteLevel") {
    p->kind_ = Kind::kByteLevel;  // trims offsets only; never adds ids
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    // Single sequence: cls $A sep.
    p->kind_ = Kind::kTemplate;
    for (const char* key : {"cls", "sep"}) {
      const nlohmann::json* f = JsonField(json, key);
      const std::string at = absl::StrCat(where, ".", key);
      if (f == nullptr || !f->is_array() || f->size() != 2 || !(*f)[0].is_string()) {
        return JsonError(at, "must be [token, id]");
      }
      ENGRAM_ASSIGN_OR_RETURN(uint32_t id, JsonId((*f)[1], at));
      p->single_.push_back({false, {id}});
      if (std::string(key) == "cls") p->single_.push_back({true, {}});
    }
  } else if (type == "TemplateProcessing") {
    p->kind_ = Kind::kTemplate;
    ENGRAM_ASSIGN_OR_RETURN(const nlohmann::json* single, JsonArray(json, "single", where));
    const nlohmann::json* specials = JsonField(json, "special_tokens");
    for (size_t i = 0; i < single->size(); ++i) {
      const nlohmann::json& piece = (*single)[i];
      const std::string at = absl::StrCat(where, ".single[", i, "]");
      if (const nlohmann::json* seq = JsonField(piece, "Sequence")) {
        ENGRAM_ASSIGN_OR_RETURN(std::string id, JsonString(*seq, "id", at));
        if (id != "A") return JsonError(at, "a single-sequence template can only use $A");
        p->single_.push_back({true, {}});
        continue;
      }
      const nlohmann::json* special = JsonField(piece, "SpecialToken");
      if (special == nullptr)
        return JsonError(at, "must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      ENGRAM_ASSIGN_OR_RETURN(std::string name, JsonString(*special, "id", at));
      const nlohmann::json* entry =
          specials != nullptr ? JsonField(*specials, name.c_str()) : nullptr;
      const nlohmann::json* ids = entry != nullptr ? JsonField(*entry, "ids") : nullptr;
      if (ids == nullptr || !ids->is_array()) {
        return JsonError(at,
                         absl::StrCat("special token \"", name, "\" has no ids in special_tokens"));
      }
      TemplatePiece tp;
      for (const nlohmann::json& v : *ids) {
        ENGRAM_ASSIGN_OR_RETURN(uint32_t id, JsonId(v, absl::StrCat(where, ".special_tokens")));
        tp.ids.push_back(id);
      }
      p->single_.push_back(std::move(tp));
    }
  } else {
    return JsonError(absl::StrCat(where, ".type"),
                     absl::StrCat("unsupported post-processor \"", type, "\""));
  }
  return p;
}

void PostProcessor::Process(std::vector<uint32_t>* ids, bool add_special_tokens) const {
  switch (kind_) {
    case Kind::kSequence:
      for (const auto& child : children_) child->Process(ids, add_special_tokens);
      return;
    case Kind::kByteLevel:
      return;
    case Kind::kTemplate:
      break;
  }
  std::vector<uint32_t> out;
  out.reserve(ids->size() + 4);
  for (const TemplatePiece& piece : single_) {
    if (piece.is_sequence) {
      out.insert(out.end(), ids->begin(), ids->end());
    } else if (add_special_tokens) {
      out.insert(out.end(), piece.ids.begin(), piece.ids.end());
    }
  }
  *ids = std::move(out);
}

// ---- Decoder -----------------------------------------------------------------------------------

absl::StatusOr<DecoderKind> ParseDecoder(const nlohmann::json* json) {
  if (json == nullptr) return DecoderKind::kNone;
  ENGRAM_ASSIGN_OR_RETURN(std::string type, JsonType(*json, "decoder"));
  if (type == "ByteLevel") return DecoderKind::kByteLevel;
  if (type == "Sequence") {
    const nlohmann::json* list = JsonField(*json, "decoders");
    if (list != nullptr && list->is_array() && list->size() == 1) {
      ENGRAM_ASSIGN_OR_RETURN(std::string inner, JsonType((*list)[0], "decoder.decoders[0]"));
      if (inner == "ByteLevel") return DecoderKind::kByteLevel;
    }
    return JsonError("decoder", "only a Sequence holding one ByteLevel decoder is supported");
  }
  return JsonError("decoder.type", absl::StrCat("unsupported decoder \"", type,
                                                "\" (only ByteLevel is implemented)"));
}

}  // namespace engram::tokenizer_internal
