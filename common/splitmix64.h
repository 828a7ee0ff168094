// SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit mixing function and the tiny generator built
// on it. The same values on every platform, unlike the std:: distributions; used for seeded
// sampling, the demo model's weights and the access-statistics sketch.
#ifndef ENGRAM_COMMON_SPLITMIX64_H_
#define ENGRAM_COMMON_SPLITMIX64_H_

#include <cstdint>

namespace engram {

inline constexpr uint64_t kSplitMix64Gamma = 0x9E3779B97F4A7C15ull;

// The finaliser: a bijective mix of all 64 bits.
inline uint64_t SplitMix64Mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The next value of the generator whose state is *state.
inline uint64_t SplitMix64Next(uint64_t* state) {
  return SplitMix64Mix(*state += kSplitMix64Gamma);
}

// The top 53 bits of `bits` as a double in [0, 1).
inline double UnitInterval(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

}  // namespace engram

#endif  // ENGRAM_COMMON_SPLITMIX64_H_
