#include "common/ngram_hash.h"

#include <algorithm>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/numpy_rng.h"
#include "common/status.h"

namespace engram {
namespace {

using u128 = unsigned __int128;

uint64_t MulMod(uint64_t a, uint64_t b, uint64_t m) {
  return static_cast<uint64_t>(static_cast<u128>(a) * b % m);
}

uint64_t PowMod(uint64_t base, uint64_t exp, uint64_t m) {
  uint64_t result = 1 % m;
  base %= m;
  while (exp > 0) {
    if (exp & 1) result = MulMod(result, base, m);
    base = MulMod(base, base, m);
    exp >>= 1;
  }
  return result;
}

// Smallest prime > `start` that is not in `seen` (the reference's find_next_prime).
int64_t NextUnseenPrime(int64_t start, const std::set<int64_t>& seen) {
  int64_t candidate = start + 1;
  while (!IsPrime(static_cast<uint64_t>(candidate)) || seen.count(candidate) > 0) ++candidate;
  return candidate;
}

// The hash of one position for one layer. `window` holds the last N compressed ids, oldest first:
// window[N-1] = x_t, window[N-1-k] = x_{t-k}. Prefill and decode both end up here, so they cannot
// disagree on the arithmetic; they differ only in how the window is kept.
//
// Products are computed in uint64: x' < V' and m < INT64_MAX / V' (the half_bound rule), so they
// stay below 2^63 and equal the reference's int64 products; the XOR of non-negative values is
// non-negative, so `%` matches numpy's floor modulo.
void HashWindow(const EngramHashConstants& c, int layer_index, const int64_t* window,
                bool add_offsets, int64_t* out) {
  const int n_max = c.max_ngram_size;
  const int heads = c.n_heads;
  const int64_t* m = c.multipliers[layer_index].data();
  const int64_t* primes = c.primes[layer_index].data();
  const int64_t* offsets = c.offsets[layer_index].data();
  const int64_t* x = window + (n_max - 1);  // x[-k] = x_{t-k}
  uint64_t mix = static_cast<uint64_t>(x[0]) * static_cast<uint64_t>(m[0]);
  for (int n = 2; n <= n_max; ++n) {
    const int k = n - 1;
    mix ^= static_cast<uint64_t>(x[-k]) * static_cast<uint64_t>(m[k]);
    const int base = (n - 2) * heads;
    for (int j = 0; j < heads; ++j) {
      const int col = base + j;
      const int64_t hash = static_cast<int64_t>(mix % static_cast<uint64_t>(primes[col]));
      out[col] = add_offsets ? hash + offsets[col] : hash;
    }
  }
}

absl::Status CheckId(int64_t id, int64_t vocab_size) {
  if (id < 0 || id >= vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("compressed token id ", id, " is outside [0, ", vocab_size, ")"));
  }
  return absl::OkStatus();
}

absl::Status ComputeIds(const EngramHashConstants& c, int layer_index,
                        absl::Span<const int64_t> context, absl::Span<const int64_t> ids,
                        absl::Span<int64_t> out, bool add_offsets) {
  if (layer_index < 0 || layer_index >= c.num_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Engram layer index ", layer_index, " is outside [0, ", c.num_layers(), ")"));
  }
  const size_t columns = static_cast<size_t>(c.columns());
  if (out.size() != ids.size() * columns) {
    return absl::InvalidArgumentError(absl::StrCat(
        "row id output holds ", out.size(), " values, expected ", ids.size(), " x ", columns));
  }
  const int history = c.max_ngram_size - 1;
  // ext = [pad' ... | last N-1 of context | ids]: position t's window is ext[t .. t + N - 1].
  std::vector<int64_t> ext(history + ids.size(), c.compressed_pad_id);
  const size_t used = std::min(context.size(), static_cast<size_t>(history));
  for (size_t i = 0; i < used; ++i) {
    const int64_t id = context[context.size() - used + i];
    if (absl::Status s = CheckId(id, c.compressed_vocab_size); !s.ok()) {
      return Annotate(s, "context");
    }
    ext[history - used + i] = id;
  }
  for (size_t t = 0; t < ids.size(); ++t) {
    if (absl::Status s = CheckId(ids[t], c.compressed_vocab_size); !s.ok()) {
      return Annotate(s, absl::StrCat("position ", t));
    }
    ext[history + t] = ids[t];
  }
  for (size_t t = 0; t < ids.size(); ++t) {
    HashWindow(c, layer_index, ext.data() + t, add_offsets, out.data() + t * columns);
  }
  return absl::OkStatus();
}

}  // namespace

bool IsPrime(uint64_t n) {
  if (n < 2) return false;
  static constexpr uint64_t kBases[] = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37};
  for (uint64_t p : kBases) {
    if (n % p == 0) return n == p;
  }
  uint64_t d = n - 1;
  int s = 0;
  while ((d & 1) == 0) {
    d >>= 1;
    ++s;
  }
  // These twelve bases decide primality exactly for every n < 3.3e24, hence for all of uint64.
  for (uint64_t a : kBases) {
    uint64_t x = PowMod(a, d, n);
    if (x == 1 || x == n - 1) continue;
    bool composite = true;
    for (int r = 1; r < s; ++r) {
      x = MulMod(x, x, n);
      if (x == n - 1) {
        composite = false;
        break;
      }
    }
    if (composite) return false;
  }
  return true;
}

absl::StatusOr<std::vector<int64_t>> EngramLayerMultipliers(int64_t seed, int layer_id,
                                                            int max_ngram_size,
                                                            int64_t compressed_vocab_size) {
  if (compressed_vocab_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("compressed vocab size must be >= 1, got ", compressed_vocab_size));
  }
  if (seed < 0 || layer_id < 0) {
    return absl::InvalidArgumentError("Engram seed and layer id must be >= 0");
  }
  const int64_t max_multiplier = std::numeric_limits<int64_t>::max() / compressed_vocab_size;
  const int64_t half_bound = std::max<int64_t>(1, max_multiplier / 2);
  // In uint64: seed + 10007 * layer may pass INT64_MAX (Python's ints do not overflow), and any
  // sum below 2^64 is a seed NumpyRng takes.
  NumpyRng rng(static_cast<uint64_t>(seed) +
               static_cast<uint64_t>(kEngramLayerSeedStride) * static_cast<uint64_t>(layer_id));
  ENGRAM_ASSIGN_OR_RETURN(std::vector<int64_t> r, rng.Integers(half_bound, max_ngram_size));
  for (int64_t& v : r) v = 2 * v + 1;
  return r;
}

std::vector<std::vector<int64_t>> EngramPrimes(const EngramConfig& config) {
  std::set<int64_t> seen;  // global across layers and orders: every column gets its own prime
  std::vector<std::vector<int64_t>> primes;
  for (size_t li = 0; li < config.layer_ids.size(); ++li) {
    std::vector<int64_t> layer;
    for (int n = 2; n <= config.max_ngram_size; ++n) {
      int64_t start = config.vocab_size_per_order[n - 2] - 1;
      for (int j = 0; j < config.n_heads; ++j) {
        const int64_t p = NextUnseenPrime(start, seen);
        seen.insert(p);
        layer.push_back(p);
        start = p;
      }
    }
    primes.push_back(std::move(layer));
  }
  return primes;
}

std::vector<int64_t> EngramLayerRowCounts(const EngramConfig& config) {
  std::vector<int64_t> rows;
  for (const auto& layer : EngramPrimes(config)) {
    int64_t sum = 0;
    for (int64_t p : layer) sum += p;
    rows.push_back(sum);
  }
  return rows;
}

absl::StatusOr<EngramHashConstants> ComputeEngramHashConstants(const EngramConfig& config,
                                                               int64_t compressed_vocab_size,
                                                               int64_t compressed_pad_id) {
  ENGRAM_RETURN_IF_ERROR(config.Validate());
  if (compressed_vocab_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("compressed vocab size must be >= 1, got ", compressed_vocab_size));
  }
  if (compressed_pad_id < 0 || compressed_pad_id >= compressed_vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("compressed pad id ", compressed_pad_id,
                                                   " is outside [0, ", compressed_vocab_size, ")"));
  }
  EngramHashConstants c;
  c.layer_ids = config.layer_ids;
  c.max_ngram_size = config.max_ngram_size;
  c.n_heads = config.n_heads;
  c.compressed_vocab_size = compressed_vocab_size;
  c.compressed_pad_id = compressed_pad_id;
  for (int layer_id : config.layer_ids) {
    ENGRAM_ASSIGN_OR_RETURN(std::vector<int64_t> m,
                            EngramLayerMultipliers(config.seed, layer_id, config.max_ngram_size,
                                                   compressed_vocab_size));
    c.multipliers.push_back(std::move(m));
  }
  c.primes = EngramPrimes(config);
  for (const auto& layer : c.primes) {
    std::vector<int64_t> offsets;
    int64_t sum = 0;
    for (int64_t p : layer) {
      offsets.push_back(sum);
      sum += p;
    }
    c.offsets.push_back(std::move(offsets));
    c.rows_per_layer.push_back(sum);
  }
  return c;
}

absl::Status ComputeNgramHashIds(const EngramHashConstants& constants, int layer_index,
                                 absl::Span<const int64_t> context, absl::Span<const int64_t> ids,
                                 absl::Span<int64_t> out) {
  return ComputeIds(constants, layer_index, context, ids, out, /*add_offsets=*/false);
}

absl::Status ComputeNgramRowIds(const EngramHashConstants& constants, int layer_index,
                                absl::Span<const int64_t> context, absl::Span<const int64_t> ids,
                                absl::Span<int64_t> out) {
  return ComputeIds(constants, layer_index, context, ids, out, /*add_offsets=*/true);
}

NgramState::NgramState(const EngramHashConstants& constants)
    : n_(constants.max_ngram_size), vocab_size_(constants.compressed_vocab_size) {
  window_.fill(constants.compressed_pad_id);
}

absl::Status NgramState::Push(int64_t compressed_id) {
  ENGRAM_RETURN_IF_ERROR(CheckId(compressed_id, vocab_size_));
  for (int i = 0; i + 1 < n_; ++i) window_[i] = window_[i + 1];
  window_[n_ - 1] = compressed_id;
  return absl::OkStatus();
}

void NgramState::RowIds(const EngramHashConstants& constants, int layer_index, int64_t* out) const {
  HashWindow(constants, layer_index, window_.data(), /*add_offsets=*/true, out);
}

absl::Span<const int64_t> NgramState::Context() const {
  if (n_ < 1) return {};
  return absl::Span<const int64_t>(window_.data() + 1, n_ - 1);
}

}  // namespace engram
