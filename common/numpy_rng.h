// numpy's `default_rng(seed).integers(0, high, size=n, dtype=np.int64)`, bit for bit.
//
// The Engram hash multipliers are drawn with numpy's Generator (PCG64 seeded through SeedSequence,
// Lemire's bounded sampling), so reproducing a model's row ids means reproducing those draws
// exactly. The specification, constants and check values are in docs/numpy-rng.md;
// every numpy release from 1.19 on produces the same bits for the calls supported here.
#ifndef ENGRAM_COMMON_NUMPY_RNG_H_
#define ENGRAM_COMMON_NUMPY_RNG_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace engram {

// `numpy.random.SeedSequence(seed).generate_state(n_words, np.uint32)`: the SeedSequence pool mixed
// from a non-negative integer seed, expanded into `n_words` 32-bit words.
std::vector<uint32_t> SeedSequenceGenerateState(uint64_t seed, int n_words);

// The bit generator and the `integers` method of `numpy.random.default_rng(seed)`.
// Not thread-safe; one instance per stream.
class NumpyRng {
 public:
  // Equivalent to `numpy.random.default_rng(seed)` (PCG64 XSL-RR 128/64 seeded by SeedSequence).
  explicit NumpyRng(uint64_t seed);

  // `bit_generator.random_raw()`: the next 64-bit PCG64 output.
  uint64_t NextUint64();
  // The next 32-bit output: the low half of a fresh 64-bit output, then its buffered high half.
  uint32_t NextUint32();

  // `integers(0, high, size=n, dtype=np.int64)`: n values uniform in [0, high), drawn in order.
  // INVALID_ARGUMENT when high <= 0 or n < 0 (numpy raises there too).
  absl::StatusOr<std::vector<int64_t>> Integers(int64_t high, int64_t n);

 private:
  // One bounded draw in [0, rng]; mirrors numpy's dispatch on the range.
  uint64_t BoundedUint64(uint64_t rng);

  unsigned __int128 state_ = 0;
  unsigned __int128 inc_ = 0;
  bool has_uint32_ = false;  // numpy's 32-bit half buffer, part of the generator state
  uint32_t uinteger_ = 0;
};

}  // namespace engram

#endif  // ENGRAM_COMMON_NUMPY_RNG_H_
