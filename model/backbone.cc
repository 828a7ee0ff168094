#include "model/backbone.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace engram {

absl::StatusOr<EngramRows> EngramRowSource::Locate(size_t item, int engram_layer_index) {
  absl::StatusOr<absl::Span<const float>> rows = Rows(item, engram_layer_index);
  if (!rows.ok()) return rows.status();
  EngramRows out;
  out.where = EngramRows::Where::kHost;
  out.data = rows->data();
  out.floats = rows->size();
  return out;
}

absl::Status ValidateBatch(absl::Span<const BatchItem> items, int vocab_size, StepOutput* out) {
  if (out == nullptr) return absl::InvalidArgumentError("Step: out must not be null");
  absl::flat_hash_set<const SequenceState*> seen;
  for (const BatchItem& item : items) {
    if (item.sequence == nullptr) return absl::InvalidArgumentError("Step: null sequence");
    if (!seen.insert(item.sequence).second) {
      return absl::InvalidArgumentError("Step: a sequence appears twice in one batch");
    }
  }
  out->status.assign(items.size(), absl::OkStatus());
  out->tokens.assign(items.size(), 0);
  for (size_t i = 0; i < items.size(); ++i) {
    const BatchItem& item = items[i];
    absl::Status& st = out->status[i];
    if (item.tokens.empty()) {
      st = absl::InvalidArgumentError("no tokens to process");
      continue;
    }
    for (uint32_t token : item.tokens) {
      if (token >= static_cast<uint32_t>(vocab_size)) {
        st = absl::InvalidArgumentError(
            absl::StrCat("token id ", token, " is outside the vocabulary (size ", vocab_size, ")"));
        break;
      }
    }
    if (!st.ok()) continue;
    const int end = item.sequence->position() + static_cast<int>(item.tokens.size());
    if (end > item.sequence->max_tokens()) {
      st = absl::OutOfRangeError(absl::StrCat("the sequence holds at most ",
                                              item.sequence->max_tokens(), " tokens; ", end,
                                              " do not fit"));
    }
  }
  return absl::OkStatus();
}

}  // namespace engram
