#include "common/numpy_rng.h"

#include <array>
#include <bit>

#include "absl/strings/str_cat.h"

namespace engram {
namespace {

using u128 = unsigned __int128;

// SeedSequence constants (numpy/random/bit_generator.pyx).
constexpr uint32_t kInitA = 0x43b0d7e5;
constexpr uint32_t kMultA = 0x931e8875;
constexpr uint32_t kInitB = 0x8b51f9dd;
constexpr uint32_t kMultB = 0x58f38ded;
constexpr uint32_t kMixMultL = 0xca01f9dd;
constexpr uint32_t kMixMultR = 0x4973f715;
constexpr int kPoolSize = 4;

// PCG64's full 128-bit LCG multiplier (not PCG64DXSM's cheap 64-bit one).
constexpr u128 kPcgMultiplier =
    (static_cast<u128>(0x2360ED051FC65DA4ULL) << 64) | 0x4385DF649FCCF645ULL;

uint32_t HashMix(uint32_t value, uint32_t& hash_const) {
  value ^= hash_const;
  hash_const *= kMultA;  // updated before the multiply, carried to the next call
  value *= hash_const;
  value ^= value >> 16;
  return value;
}

uint32_t Mix(uint32_t x, uint32_t y) {
  uint32_t r = kMixMultL * x - kMixMultR * y;
  r ^= r >> 16;
  return r;
}

// SeedSequence.mix_entropy for an integer seed (split into u32 words, least significant first;
// seed 0 is the single word [0]).
std::array<uint32_t, kPoolSize> MixEntropy(uint64_t seed) {
  std::vector<uint32_t> entropy = {static_cast<uint32_t>(seed)};
  if (seed >> 32) entropy.push_back(static_cast<uint32_t>(seed >> 32));
  std::array<uint32_t, kPoolSize> pool{};
  uint32_t hash_const = kInitA;
  for (int i = 0; i < kPoolSize; ++i) {
    pool[i] = HashMix(i < static_cast<int>(entropy.size()) ? entropy[i] : 0, hash_const);
  }
  for (int src = 0; src < kPoolSize; ++src) {
    for (int dst = 0; dst < kPoolSize; ++dst) {
      if (src != dst) pool[dst] = Mix(pool[dst], HashMix(pool[src], hash_const));
    }
  }
  // Entropy words beyond the pool size only exist for seeds >= 2^128: not reachable here.
  return pool;
}

}  // namespace

std::vector<uint32_t> SeedSequenceGenerateState(uint64_t seed, int n_words) {
  std::array<uint32_t, kPoolSize> pool = MixEntropy(seed);
  std::vector<uint32_t> out;
  out.reserve(n_words > 0 ? n_words : 0);
  uint32_t hash_const = kInitB;  // generate_state starts afresh on every call
  for (int i = 0; i < n_words; ++i) {
    uint32_t d = pool[i % kPoolSize];
    d ^= hash_const;
    hash_const *= kMultB;
    d *= hash_const;
    d ^= d >> 16;
    out.push_back(d);
  }
  return out;
}

NumpyRng::NumpyRng(uint64_t seed) {
  // generate_state(4, uint64) pairs u32 words low-first; PCG64 then takes v[0] as the HIGH half.
  std::vector<uint32_t> w = SeedSequenceGenerateState(seed, 8);
  uint64_t v[4];
  for (int k = 0; k < 4; ++k) v[k] = uint64_t{w[2 * k]} | (uint64_t{w[2 * k + 1]} << 32);
  const u128 init_state = (static_cast<u128>(v[0]) << 64) | v[1];
  const u128 init_seq = (static_cast<u128>(v[2]) << 64) | v[3];
  inc_ = (init_seq << 1) | 1;  // the top bit of init_seq falls off, as in numpy
  state_ = 0;
  state_ = state_ * kPcgMultiplier + inc_;
  state_ += init_state;
  state_ = state_ * kPcgMultiplier + inc_;
}

uint64_t NumpyRng::NextUint64() {
  state_ = state_ * kPcgMultiplier + inc_;  // step first, then output from the new state
  const uint64_t hi = static_cast<uint64_t>(state_ >> 64);
  const uint64_t lo = static_cast<uint64_t>(state_);
  return std::rotr(hi ^ lo, static_cast<int>(hi >> 58));
}

uint32_t NumpyRng::NextUint32() {
  if (has_uint32_) {
    has_uint32_ = false;
    return uinteger_;
  }
  const uint64_t x = NextUint64();
  uinteger_ = static_cast<uint32_t>(x >> 32);
  has_uint32_ = true;
  return static_cast<uint32_t>(x);
}

// numpy's random_bounded_uint64 with use_masked = false: Lemire's nearly divisionless method on
// 32-bit draws for ranges below 2^32 - 1, raw 32-bit draws for exactly 2^32 values, 64-bit Lemire
// above. Rejection tests are strict (lo < t), as in numpy.
uint64_t NumpyRng::BoundedUint64(uint64_t rng) {
  if (rng == 0) return 0;  // no draw at all
  if (rng < 0xFFFFFFFFULL) {
    const uint32_t range = static_cast<uint32_t>(rng) + 1;
    uint64_t m = uint64_t{NextUint32()} * range;
    uint32_t lo = static_cast<uint32_t>(m);
    if (lo < range) {
      const uint32_t t = (0xFFFFFFFFU - static_cast<uint32_t>(rng)) % range;
      while (lo < t) {
        m = uint64_t{NextUint32()} * range;
        lo = static_cast<uint32_t>(m);
      }
    }
    return m >> 32;
  }
  if (rng == 0xFFFFFFFFULL) return NextUint32();
  if (rng == ~uint64_t{0}) return NextUint64();
  const uint64_t range = rng + 1;
  u128 m = static_cast<u128>(NextUint64()) * range;
  uint64_t lo = static_cast<uint64_t>(m);
  if (lo < range) {
    const uint64_t t = (~uint64_t{0} - rng) % range;
    while (lo < t) {
      m = static_cast<u128>(NextUint64()) * range;
      lo = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

absl::StatusOr<std::vector<int64_t>> NumpyRng::Integers(int64_t high, int64_t n) {
  if (high <= 0)
    return absl::InvalidArgumentError(absl::StrCat("integers: high <= 0 (", high, ")"));
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("integers: negative size ", n));
  std::vector<int64_t> out(n);
  const uint64_t rng = static_cast<uint64_t>(high) - 1;
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int64_t>(BoundedUint64(rng));
  return out;
}

}  // namespace engram
