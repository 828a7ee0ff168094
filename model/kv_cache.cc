#include "model/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace engram {

KvCache::KvCache(int num_layers, int num_kv_heads, int head_dim, int max_tokens)
    : num_layers_(num_layers),
      width_(num_kv_heads * head_dim),
      max_tokens_(max_tokens),
      keys_(num_layers),
      values_(num_layers) {}

absl::Status KvCache::Reserve(int n) {
  if (n < 0 || n > max_tokens_) {
    return absl::OutOfRangeError(absl::StrCat(
        "KV cache: ", n, " positions requested, the sequence holds at most ", max_tokens_));
  }
  if (n <= capacity_) return absl::OkStatus();
  // Doubling keeps the number of copies logarithmic in the sequence length.
  int target = std::min(max_tokens_, std::max({n, 2 * capacity_, 16}));
  for (int l = 0; l < num_layers_; ++l) {
    keys_[l].resize(size_t(target) * width_);
    values_[l].resize(size_t(target) * width_);
  }
  capacity_ = target;
  return absl::OkStatus();
}

size_t KvCache::bytes() const {
  return size_t(2) * num_layers_ * capacity_ * width_ * sizeof(float);
}

}  // namespace engram
