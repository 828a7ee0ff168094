#include "model/tokenizer_bpe.h"

#include <algorithm>
#include <queue>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "model/tokenizer_json.h"
#include "model/tokenizer_utf8.h"

namespace engram::tokenizer_internal {
namespace {

// The largest vocab id accepted: 16 x the largest vocabularies in use (Gemma's 262,144). Ids index
// dense tables downstream (the Engram compressed token map: 8 bytes per id up to the largest), so
// a few-byte file naming id 2^31 must not make them gigabytes.
constexpr uint32_t kMaxTokenId = (1u << 22) - 1;

absl::Status ParseMerges(const nlohmann::json& merges,
                         std::vector<std::pair<std::string, std::string>>* out) {
  if (!merges.is_array()) return JsonError("model.merges", "must be an array");
  for (size_t i = 0; i < merges.size(); ++i) {
    const nlohmann::json& m = merges[i];
    const std::string where = absl::StrCat("model.merges[", i, "]");
    if (m.is_string()) {
      // Legacy "a b" lines: "#version" lines are skipped, others must split into exactly two.
      const std::string& line = m.get_ref<const std::string&>();
      if (absl::StartsWith(line, "#version")) continue;
      std::vector<std::string> parts = absl::StrSplit(line, ' ');
      if (parts.size() != 2) return JsonError(where, "must be \"a b\" with exactly one space");
      out->emplace_back(std::move(parts[0]), std::move(parts[1]));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      out->emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return JsonError(where, "must be \"a b\" or [\"a\", \"b\"]");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const nlohmann::json& model) {
  if (!model.is_object()) return JsonError("model", "must be an object");
  if (const nlohmann::json* type = JsonField(model, "type")) {
    if (!type->is_string() || type->get<std::string>() != "BPE") {
      return JsonError("model.type", absl::StrCat("unsupported model ", type->dump(),
                                                  " (only byte-level BPE is implemented)"));
    }
  }
  if (const nlohmann::json* dropout = JsonField(model, "dropout")) {
    if (!dropout->is_number() || dropout->get<double>() < 0 || dropout->get<double>() > 1) {
      return JsonError("model.dropout", "must be null or a number in [0, 1]");
    }
    if (dropout->get<double>() > 0) {
      return JsonError("model.dropout", "BPE dropout samples merges at random; only 0 or null");
    }
  }
  auto bpe = std::unique_ptr<BpeModel>(new BpeModel());
  ENGRAM_ASSIGN_OR_RETURN(std::optional<std::string> unk_token,
                          JsonOptionalString(model, "unk_token", "model"));
  ENGRAM_ASSIGN_OR_RETURN(std::optional<std::string> prefix,
                          JsonOptionalString(model, "continuing_subword_prefix", "model"));
  ENGRAM_ASSIGN_OR_RETURN(std::optional<std::string> suffix,
                          JsonOptionalString(model, "end_of_word_suffix", "model"));
  bpe->continuing_subword_prefix_ = prefix.value_or("");
  bpe->end_of_word_suffix_ = suffix.value_or("");
  ENGRAM_ASSIGN_OR_RETURN(bpe->fuse_unk_, JsonBool(model, "fuse_unk", "model", false));
  ENGRAM_ASSIGN_OR_RETURN(bpe->byte_fallback_, JsonBool(model, "byte_fallback", "model", false));
  ENGRAM_ASSIGN_OR_RETURN(bpe->ignore_merges_, JsonBool(model, "ignore_merges", "model", false));

  const nlohmann::json* vocab = JsonField(model, "vocab");
  if (vocab == nullptr || !vocab->is_object()) {
    return JsonError("model.vocab", "missing or not an object of token -> id");
  }
  bpe->vocab_.reserve(vocab->size());
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    ENGRAM_ASSIGN_OR_RETURN(uint32_t id,
                            JsonId(it.value(), absl::StrCat("model.vocab[\"", it.key(), "\"]")));
    if (id > kMaxTokenId) {
      return JsonError(absl::StrCat("model.vocab[\"", it.key(), "\"]"),
                       absl::StrCat("id ", id, " is above the supported ", kMaxTokenId));
    }
    auto [at, inserted] = bpe->id_to_token_.try_emplace(id, it.key());
    if (!inserted) {
      return JsonError("model.vocab", absl::StrCat("id ", id, " is used by both \"", at->second,
                                                   "\" and \"", it.key(), "\""));
    }
    bpe->max_id_ = std::max(bpe->max_id_, id);
    bpe->vocab_.emplace(it.key(), id);
  }

  // An unk_token outside the vocab fails only when an unknown character needs it, as in the
  // library (byte-level vocabularies never need it).
  bpe->unk_token_ = unk_token;
  if (unk_token) bpe->unk_id_ = bpe->TokenToId(*unk_token);
  std::vector<std::pair<std::string, std::string>> merges;
  if (const nlohmann::json* m = JsonField(model, "merges"))
    ENGRAM_RETURN_IF_ERROR(ParseMerges(*m, &merges));
  bpe->merges_.reserve(merges.size());
  const size_t prefix_len = bpe->continuing_subword_prefix_.size();
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto missing = [&](const std::string& token) {
      return JsonError(absl::StrCat("model.merges[", rank, "]"),
                       absl::StrCat("token \"", token, "\" is not in the vocab"));
    };
    auto ia = bpe->vocab_.find(a);
    if (ia == bpe->vocab_.end()) return missing(a);
    auto ib = bpe->vocab_.find(b);
    if (ib == bpe->vocab_.end()) return missing(b);
    if (b.size() < prefix_len) return missing(b);
    const std::string merged = a + b.substr(prefix_len);
    auto in = bpe->vocab_.find(merged);
    if (in == bpe->vocab_.end()) return missing(merged);
    // A pair listed twice keeps its last rank, as the library's hash-map insert does.
    bpe->merges_[PairKey(ia->second, ib->second)] = {static_cast<uint32_t>(rank), in->second};
  }
  return bpe;
}

std::optional<uint32_t> BpeModel::TokenToId(absl::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(uint32_t id) const {
  auto it = id_to_token_.find(id);
  return it == id_to_token_.end() ? nullptr : &it->second;
}

absl::Status BpeModel::Tokenize(absl::string_view piece, std::vector<uint32_t>* ids) const {
  if (piece.empty()) return absl::OkStatus();
  if (ignore_merges_) {
    if (std::optional<uint32_t> id = TokenToId(piece)) {
      ids->push_back(*id);
      return absl::OkStatus();
    }
  }
  const bool cacheable = piece.size() < kCacheMaxWordBytes;
  if (cacheable) {
    absl::ReaderMutexLock lock(&cache_mutex_);
    auto it = cache_.find(piece);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return absl::OkStatus();
    }
  }
  std::vector<uint32_t> word;
  ENGRAM_RETURN_IF_ERROR(MergeWord(piece, &word));
  ids->insert(ids->end(), word.begin(), word.end());
  if (cacheable) {
    absl::MutexLock lock(&cache_mutex_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(piece, std::move(word));
  }
  return absl::OkStatus();
}

absl::Status BpeModel::MergeWord(absl::string_view word, std::vector<uint32_t>* symbols) const {
  // The unk token of the current run of unknown characters (one per character unless fuse_unk).
  bool unk_pending = false;
  uint32_t pending_unk = 0;
  std::string scratch;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t start = pos;
    NextCodepoint(word, &pos);
    absl::string_view ch = word.substr(start, pos - start);
    if ((start > 0 && !continuing_subword_prefix_.empty()) ||
        (pos == word.size() && !end_of_word_suffix_.empty())) {
      scratch.clear();
      if (start > 0) scratch += continuing_subword_prefix_;
      scratch.append(ch.data(), ch.size());
      if (pos == word.size()) scratch += end_of_word_suffix_;
      ch = scratch;
    }
    if (std::optional<uint32_t> id = TokenToId(ch)) {
      if (unk_pending) symbols->push_back(pending_unk);
      unk_pending = false;
      symbols->push_back(*id);
      continue;
    }
    if (byte_fallback_) {
      std::vector<uint32_t> bytes;
      for (unsigned char b : ch) {
        std::optional<uint32_t> id = TokenToId(absl::StrFormat("<0x%02X>", b));
        if (!id) break;
        bytes.push_back(*id);
      }
      if (bytes.size() == ch.size()) {
        // As in the library, a pending unknown stays pending across byte-fallback tokens.
        symbols->insert(symbols->end(), bytes.begin(), bytes.end());
        continue;
      }
    }
    if (unk_token_) {
      if (!unk_id_) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer.json model.unk_token \"",
                                                       *unk_token_, "\" is not in the vocab"));
      }
      if (unk_pending && !fuse_unk_) symbols->push_back(pending_unk);
      unk_pending = true;
      pending_unk = *unk_id_;
    }
    // Without unk_token an unknown character is dropped, as the library does.
  }
  if (unk_pending) symbols->push_back(pending_unk);
  MergeAll(symbols);
  return absl::OkStatus();
}

void BpeModel::MergeAll(std::vector<uint32_t>* ids) const {
  // word.rs Word::merge_all: a min-queue of (rank, position) candidates over a linked list of
  // symbols; stale candidates are skipped when popped.
  struct Symbol {
    uint32_t id;
    int prev;
    int next;
    bool alive;
  };
  struct Candidate {
    uint32_t rank;
    int pos;
    uint32_t new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const int n = static_cast<int>(ids->size());
  if (n < 2) return;
  std::vector<Symbol> symbols(n);
  for (int i = 0; i < n; ++i) symbols[i] = {(*ids)[i], i - 1, i + 1 < n ? i + 1 : -1, true};
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push = [&](int pos, uint32_t left, uint32_t right) {
    auto it = merges_.find(PairKey(left, right));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.new_id});
  };
  for (int i = 0; i + 1 < n; ++i) push(i, symbols[i].id, symbols[i + 1].id);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto it = merges_.find(PairKey(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push(left.prev, symbols[left.prev].id, left.id);
    if (left.next >= 0) push(top.pos, left.id, symbols[left.next].id);
  }
  ids->clear();
  for (const Symbol& s : symbols) {
    if (s.alive) ids->push_back(s.id);
  }
}

}  // namespace engram::tokenizer_internal
