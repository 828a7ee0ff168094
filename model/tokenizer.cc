#include "model/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "model/tokenizer_added.h"
#include "model/tokenizer_bpe.h"
#include "model/tokenizer_json.h"
#include "model/tokenizer_pipeline.h"
#include "model/tokenizer_utf8.h"
#include "nlohmann/json.hpp"

namespace engram {

using tokenizer_internal::AddedVocabulary;
using tokenizer_internal::BpeModel;
using tokenizer_internal::DecoderKind;
using tokenizer_internal::JsonError;
using tokenizer_internal::JsonField;
using tokenizer_internal::PostProcessor;
using tokenizer_internal::PreTokenizer;
using tokenizer_internal::TextNormalizer;

namespace {

absl::StatusOr<nlohmann::json> ParseJson(absl::string_view text) {
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                           /*allow_exceptions=*/false);
  if (!j.is_discarded()) return j;
  // Parse again with exceptions, caught here, only to report where the syntax error is.
  try {
    nlohmann::json ignored = nlohmann::json::parse(text.begin(), text.end());
    (void)ignored;
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed tokenizer.json: ", e.what()));
  }
  return absl::InvalidArgumentError("malformed tokenizer.json");
}

absl::Status CheckUtf8(absl::string_view text) {
  const size_t bad = tokenizer_internal::FindInvalidUtf8(text);
  if (bad == absl::string_view::npos) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("text is not valid UTF-8 (byte ", bad, " of ", text.size(), ")"));
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  // A directory opens as a stream and reads as empty; name the mistake instead.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is a directory, not a tokenizer.json"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open tokenizer file ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = FromJson(buffer.str());
  if (!tokenizer.ok()) return Annotate(tokenizer.status(), path);
  return tokenizer;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view json_text) {
  ENGRAM_ASSIGN_OR_RETURN(const nlohmann::json root, ParseJson(json_text));
  if (!root.is_object()) return JsonError("top level", "must be an object");
  if (const nlohmann::json* version = JsonField(root, "version")) {
    if (!version->is_string() || version->get<std::string>() != "1.0") {
      return JsonError("version",
                       absl::StrCat("unknown version ", version->dump(), " (want \"1.0\")"));
    }
  }
  for (const char* ignored : {"truncation", "padding"}) {
    if (JsonField(root, ignored) != nullptr) {
      ENGRAM_LOG(WARNING).With("field", ignored)
          << "tokenizer.json field ignored: the server applies its own length limits";
    }
  }
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  if (const nlohmann::json* n = JsonField(root, "normalizer")) {
    ENGRAM_ASSIGN_OR_RETURN(t->normalizer_, TextNormalizer::FromJson(*n, "normalizer"));
  }
  if (const nlohmann::json* p = JsonField(root, "pre_tokenizer")) {
    ENGRAM_ASSIGN_OR_RETURN(t->pre_tokenizer_, PreTokenizer::FromJson(*p, "pre_tokenizer"));
    for (const std::string& warning : t->pre_tokenizer_->Warnings()) {
      ENGRAM_LOG(WARNING).With("detail", warning)
          << "pre-tokenizer regex may differ from Oniguruma on some code points";
    }
  }
  const nlohmann::json* model = JsonField(root, "model");
  if (model == nullptr) return JsonError("model", "missing");
  ENGRAM_ASSIGN_OR_RETURN(t->model_, BpeModel::FromJson(*model));
  ENGRAM_ASSIGN_OR_RETURN(
      AddedVocabulary added,
      AddedVocabulary::FromJson(JsonField(root, "added_tokens"), *t->model_, t->normalizer_.get()));
  t->added_ = std::make_unique<AddedVocabulary>(std::move(added));
  if (const nlohmann::json* p = JsonField(root, "post_processor")) {
    ENGRAM_ASSIGN_OR_RETURN(t->post_processor_, PostProcessor::FromJson(*p, "post_processor"));
  }
  ENGRAM_ASSIGN_OR_RETURN(t->decoder_,
                          tokenizer_internal::ParseDecoder(JsonField(root, "decoder")));

  t->size_ = t->model_->vocab_size();
  t->max_id_ = t->model_->vocab_size() > 0 ? t->model_->max_id() : 0;
  for (const auto& token : t->added_->tokens()) {
    if (!t->model_->TokenToId(token.content)) ++t->size_;
    t->max_id_ = std::max(t->max_id_, token.id);
  }
  if (t->size_ == 0) return JsonError("model.vocab", "the vocabulary is empty");
  return t;
}

absl::StatusOr<std::vector<uint32_t>> Tokenizer::Encode(absl::string_view text,
                                                        bool add_special_tokens) const {
  ENGRAM_RETURN_IF_ERROR(CheckUtf8(text));
  ENGRAM_ASSIGN_OR_RETURN(std::vector<tokenizer_internal::Piece> pieces,
                          added_->Split(text, normalizer_.get()));
  std::vector<uint32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<std::string> words;
  for (tokenizer_internal::Piece& piece : pieces) {
    if (piece.token_id) {
      ids.push_back(*piece.token_id);
      continue;
    }
    // Each gap between added tokens is pre-tokenized on its own.
    words.clear();
    words.push_back(std::move(piece.text));
    if (pre_tokenizer_ != nullptr) ENGRAM_RETURN_IF_ERROR(pre_tokenizer_->Apply(&words));
    for (const std::string& word : words) ENGRAM_RETURN_IF_ERROR(model_->Tokenize(word, &ids));
  }
  if (post_processor_ != nullptr) post_processor_->Process(&ids, add_special_tokens);
  return ids;
}

const std::string* Tokenizer::TokenString(uint32_t id) const {
  if (const tokenizer_internal::AddedToken* added = added_->FindById(id)) return &added->display;
  return model_->IdToToken(id);
}

std::string Tokenizer::Decode(absl::Span<const uint32_t> ids, bool skip_special_tokens) const {
  std::string out;
  bool first = true;
  for (uint32_t id : ids) {
    const std::string* token = TokenString(id);
    if (token == nullptr) continue;  // unknown ids are dropped
    if (skip_special_tokens && added_->IsSpecialContent(*token)) continue;
    if (decoder_ == DecoderKind::kByteLevel) {
      tokenizer_internal::AppendByteLevelDecoded(*token, &out);
    } else {
      if (!first) out.push_back(' ');
      out += *token;
    }
    first = false;
  }
  // The ByteLevel decoder converts all bytes to text once, so a character split across tokens
  // survives and only genuinely incomplete sequences become U+FFFD.
  return decoder_ == DecoderKind::kByteLevel ? tokenizer_internal::Utf8Lossy(out) : out;
}

std::optional<std::string> Tokenizer::IdToToken(uint32_t id) const {
  const std::string* token = TokenString(id);
  if (token == nullptr) return std::nullopt;
  return *token;
}

std::optional<uint32_t> Tokenizer::TokenToId(absl::string_view token) const {
  if (std::optional<uint32_t> id = added_->TokenToId(token)) return id;
  return model_->TokenToId(token);
}

bool Tokenizer::IsValidId(uint32_t id) const { return TokenString(id) != nullptr; }

bool Tokenizer::IsSpecial(uint32_t id) const {
  const std::string* token = TokenString(id);
  return token != nullptr && added_->IsSpecialContent(*token);
}

std::optional<uint32_t> Tokenizer::SpecialTokenId(absl::string_view content) const {
  if (!added_->IsSpecialContent(content)) return std::nullopt;
  return TokenToId(content);
}

absl::StatusOr<std::string> Tokenizer::Normalize(absl::string_view text) const {
  ENGRAM_RETURN_IF_ERROR(CheckUtf8(text));
  if (normalizer_ == nullptr) return std::string(text);
  return normalizer_->Normalize(text);
}

absl::StatusOr<std::vector<std::string>> Tokenizer::PreTokenize(absl::string_view text) const {
  ENGRAM_RETURN_IF_ERROR(CheckUtf8(text));
  std::vector<std::string> pieces;
  if (!text.empty()) pieces.emplace_back(text);
  if (pre_tokenizer_ != nullptr) ENGRAM_RETURN_IF_ERROR(pre_tokenizer_->Apply(&pieces));
  return pieces;
}

// ---- DecodeStream ------------------------------------------------------------------------------

DecodeStream::DecodeStream(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string DecodeStream::Step(uint32_t id) {
  // step_decode_stream: re-decode the window and emit the growth unless it ends in U+FFFD; the
  // emitted tokens stay in the window as context for the next step.
  ids_.push_back(id);
  std::string text = tokenizer_.Decode(ids_, skip_special_tokens_);
  if (text.size() <= prefix_.size() || absl::EndsWith(text, tokenizer_internal::kReplacementUtf8)) {
    return "";
  }
  // With the supported decoders the window's text always extends the context's text.
  std::string fresh = absl::StartsWith(text, prefix_) ? text.substr(prefix_.size()) : text;
  const size_t new_prefix_index = ids_.size() - prefix_index_;
  ids_.erase(ids_.begin(), ids_.begin() + prefix_index_);
  prefix_ = tokenizer_.Decode(ids_, skip_special_tokens_);
  prefix_index_ = new_prefix_index;
  return fresh;
}

std::string DecodeStream::Flush() {
  std::string text = tokenizer_.Decode(ids_, skip_special_tokens_);
  std::string rest;
  if (text.size() > prefix_.size() && absl::StartsWith(text, prefix_)) {
    rest = text.substr(prefix_.size());
  }
  ids_.clear();
  prefix_.clear();
  prefix_index_ = 0;
  return rest;
}

}  // namespace engram
