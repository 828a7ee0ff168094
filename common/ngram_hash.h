// The Engram n-gram hash: which table rows a token position reads, bit-exact with the reference
// (docs/engram-reference.md §1.3-1.4, the demo's NgramHashMapping + MultiHeadEmbedding).
//
// Vocabulary of this file:
//   N        max_ngram_size; orders n = 2..N are hashed.
//   K        hash heads per order (n_heads).
//   column   (n - 2) * K + head: the (order, head) pairs in the reference's output order.
//   V'       the compressed vocabulary size; every id here is a COMPRESSED token id in [0, V').
//   layer index  the position of a layer id in EngramConfig::layer_ids (not the layer id itself).
//
// For layer l, position t, order n and head j:
//   mix     = XOR over k < n of (x'_{t-k} * m_{l,k})    (x'_{t-k} = pad' before the sequence start)
//   hash id = mix mod p_{l,n,j}                          (p: a distinct prime per column)
//   row id  = hash id + offset_{l,column}                (offsets: exclusive prefix sums of primes)
// A row id is a pure function of the current id and the N-1 ids before it, so it is computed on the
// host before the layer runs: a whole prompt at once (ComputeNgramRowIds) or one position per
// sampled token from a small per-sequence state (NgramState), with identical results.
#ifndef ENGRAM_COMMON_NGRAM_HASH_H_
#define ENGRAM_COMMON_NGRAM_HASH_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/engram_config.h"

namespace engram {

// The reference's per-layer seed stride: layer l draws from default_rng(seed + 10007 * l).
inline constexpr int64_t kEngramLayerSeedStride = 10007;
// Largest max_ngram_size this implementation supports (EngramConfig::Validate enforces it).
inline constexpr int kMaxNgramSize = 16;

// Everything the hash needs, derived from an EngramConfig, V' and the compressed pad id.
// Immutable after construction; shared by all sequences.
struct EngramHashConstants {
  std::vector<int> layer_ids;                     // copy of EngramConfig::layer_ids
  int max_ngram_size = 0;                         // N
  int n_heads = 0;                                // K
  int64_t compressed_vocab_size = 0;              // V'
  int64_t compressed_pad_id = 0;                  // pad' = token map of the raw pad id
  std::vector<std::vector<int64_t>> multipliers;  // [layer index][k], k < N; odd, m = 2r + 1
  std::vector<std::vector<int64_t>> primes;       // [layer index][column]
  std::vector<std::vector<int64_t>> offsets;      // [layer index][column], exclusive prefix sums
  std::vector<int64_t> rows_per_layer;            // [layer index]: sum of the layer's primes

  int num_layers() const { return static_cast<int>(layer_ids.size()); }
  // (N - 1) * K row ids per position and layer.
  int columns() const { return (max_ngram_size - 1) * n_heads; }
};

// Deterministic Miller-Rabin, exact for every 64-bit n.
bool IsPrime(uint64_t n);

// The multipliers of one layer: 2 * default_rng(seed + 10007 * layer_id).integers(0, half_bound,
// size=N) + 1 with half_bound = max(1, (INT64_MAX // V') // 2), so x' * m never overflows int64.
absl::StatusOr<std::vector<int64_t>> EngramLayerMultipliers(int64_t seed, int layer_id,
                                                            int max_ngram_size,
                                                            int64_t compressed_vocab_size);

// The primes of every layer, [layer index][column], by the reference's search: layers in order,
// then orders, then heads; each head takes the smallest prime > the previous search start
// (initially vocab_size_per_order[n-2] - 1) not taken anywhere before. Needs no tokenizer.
// `config` must be valid (EngramConfig::Validate).
std::vector<std::vector<int64_t>> EngramPrimes(const EngramConfig& config);

// Rows of each layer's flat table (sum of its primes), [layer index]. Needs no tokenizer.
std::vector<int64_t> EngramLayerRowCounts(const EngramConfig& config);

// All hash constants. INVALID_ARGUMENT for an invalid config, V' < 1, or pad' outside [0, V').
absl::StatusOr<EngramHashConstants> ComputeEngramHashConstants(const EngramConfig& config,
                                                               int64_t compressed_vocab_size,
                                                               int64_t compressed_pad_id);

// ---- Prefill: many positions at once -----------------------------------------------------------
//
// `ids` are the compressed ids of consecutive positions; `context` the compressed ids immediately
// before ids[0], oldest first (only its last N-1 are used; missing ones are pad', so an empty
// context means "sequence start"). Writes ids.size() * columns() values, position-major, to `out`.
// INVALID_ARGUMENT for a bad layer index, an id outside [0, V') or a wrong output size.

// Hash ids (before offsets): out[t * columns + c] < primes[layer_index][c].
absl::Status ComputeNgramHashIds(const EngramHashConstants& constants, int layer_index,
                                 absl::Span<const int64_t> context, absl::Span<const int64_t> ids,
                                 absl::Span<int64_t> out);
// Row ids (hash id + offset): out[t * columns + c] < rows_per_layer[layer_index].
absl::Status ComputeNgramRowIds(const EngramHashConstants& constants, int layer_index,
                                absl::Span<const int64_t> context, absl::Span<const int64_t> ids,
                                absl::Span<int64_t> out);

// ---- Decode: one position per token ------------------------------------------------------------

// The per-sequence hash state: the last N compressed ids (the current one and N-1 before it).
// A fixed-size value type: Push and RowIds never allocate.
//   NgramState state(constants);          // all pad': a sequence start
//   state.Push(x);                        // x becomes the current position
//   state.RowIds(constants, li, out);     // columns() row ids of that position for layer index li
class NgramState {
 public:
  NgramState() = default;
  // A fresh state for a sequence start (every earlier position is pad').
  explicit NgramState(const EngramHashConstants& constants);

  // Advances one position. INVALID_ARGUMENT (state unchanged) for an id outside [0, V').
  absl::Status Push(int64_t compressed_id);
  // Row ids of the current position for `layer_index` into out[0 .. columns()).
  // `constants` must be the ones the state was created with and layer_index in range.
  void RowIds(const EngramHashConstants& constants, int layer_index, int64_t* out) const;
  // The last N-1 ids, oldest first: the `context` for a prefill chunk that follows.
  absl::Span<const int64_t> Context() const;

 private:
  std::array<int64_t, kMaxNgramSize>
      window_{};  // window_[n_ - 1] = current, window_[n_-1-k] = x_{t-k}
  int n_ = 0;
  int64_t vocab_size_ = 0;
};

}  // namespace engram

#endif  // ENGRAM_COMMON_NGRAM_HASH_H_
