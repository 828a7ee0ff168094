// The key/value cache of one sequence on the CPU.
//
// Per layer, keys and values are stored position-major: (capacity, Nkv, D) f32 each, so appending a
// chunk is one contiguous copy and attention reads the keys of one position together. Storage
// grows geometrically up to max_tokens (a sequence that stops early never pays for its whole
// window).
#ifndef ENGRAM_MODEL_KV_CACHE_H_
#define ENGRAM_MODEL_KV_CACHE_H_

#include <cstddef>
#include <vector>

#include "absl/status/status.h"

namespace engram {

class KvCache {
 public:
  // `max_tokens` bounds the positions the cache can ever hold.
  KvCache(int num_layers, int num_kv_heads, int head_dim, int max_tokens);

  // Nkv * D: floats per position per layer, for keys (and the same for values).
  int width() const { return width_; }
  // Positions for which storage is allocated now (<= max_tokens).
  int capacity() const { return capacity_; }

  // Makes positions [0, n) addressable. OUT_OF_RANGE when n > max_tokens.
  absl::Status Reserve(int n);

  // Keys / values of `layer` at `position`: (Nkv, D). Position must be < capacity().
  float* Keys(int layer, int position) { return &keys_[layer][size_t(position) * width_]; }
  float* Values(int layer, int position) { return &values_[layer][size_t(position) * width_]; }
  const float* Keys(int layer, int position) const {
    return &keys_[layer][size_t(position) * width_];
  }
  const float* Values(int layer, int position) const {
    return &values_[layer][size_t(position) * width_];
  }

  // Bytes currently allocated.
  size_t bytes() const;

 private:
  int num_layers_;
  int width_;
  int max_tokens_;
  int capacity_ = 0;
  std::vector<std::vector<float>> keys_;    // [layer] (capacity, Nkv, D)
  std::vector<std::vector<float>> values_;  // [layer] (capacity, Nkv, D)
};

}  // namespace engram

#endif  // ENGRAM_MODEL_KV_CACHE_H_
