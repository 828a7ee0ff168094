// numpy default_rng(...).integers(...) bit-exactness: every vector of
// tests/vectors/numpy_rng_vectors.json (written by numpy itself, tests/vectors/generate.py) and
// every check value of docs/numpy-rng.md §5, including the rejection cases.
#include "common/numpy_rng.h"

#include <string>

#include "common/engram_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/test_paths.h"

namespace engram {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

std::vector<int64_t> Draw(uint64_t seed, int64_t high, int64_t n) {
  NumpyRng rng(seed);
  auto r = rng.Integers(high, n);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : std::vector<int64_t>{};
}

TEST(NumpyRngVectors, EverySeedOfTheJsonFile) {
  auto json = ReadJsonFile(engram::testing::VectorFile("numpy_rng_vectors.json"));
  ASSERT_TRUE(json.ok()) << json.status();
  const auto& seeds = (*json)["seeds"];
  ASSERT_GE(seeds.size(), 7u);
  int checked = 0;
  for (const auto& entry : seeds) {
    const uint64_t seed = entry["seed"].get<uint64_t>();
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    EXPECT_THAT(SeedSequenceGenerateState(seed, 8),
                ElementsAreArray(entry["seedseq_state_u32x8"].get<std::vector<uint32_t>>()));
    // generate_state(4, uint64) pairs the words low-first.
    std::vector<uint32_t> w = SeedSequenceGenerateState(seed, 8);
    std::vector<uint64_t> v;
    for (int k = 0; k < 4; ++k) v.push_back(uint64_t{w[2 * k]} | (uint64_t{w[2 * k + 1]} << 32));
    EXPECT_THAT(v, ElementsAreArray(entry["seedseq_state_u64x4"].get<std::vector<uint64_t>>()));

    NumpyRng rng(seed);
    for (uint64_t expected : entry["pcg64_raw_first5"].get<std::vector<uint64_t>>()) {
      EXPECT_EQ(rng.NextUint64(), expected);
    }
    for (const auto& [high_text, values] : entry["integers"].items()) {
      const int64_t high = std::stoll(high_text);
      const auto expected = values.get<std::vector<int64_t>>();
      EXPECT_THAT(Draw(seed, high, static_cast<int64_t>(expected.size())),
                  ElementsAreArray(expected))
          << "high " << high;
      ++checked;
    }
  }
  EXPECT_GE(checked, 70);
}

TEST(NumpyRngSpec, Intermediates) {
  // docs/numpy-rng.md §5.1: SeedSequence words of seed 10007.
  EXPECT_THAT(SeedSequenceGenerateState(10007, 8),
              ElementsAre(0x8ad70d07u, 0x77d32a34u, 0xb84a4fa5u, 0x993ed609u, 0xc8698e49u,
                          0xd5f972deu, 0xbcf148deu, 0x7d79ebaeu));
}

TEST(NumpyRngSpec, RawOutputs) {
  NumpyRng a(10007);
  EXPECT_EQ(a.NextUint64(), 15187255322829266483ULL);
  EXPECT_EQ(a.NextUint64(), 959186003677246517ULL);
  EXPECT_EQ(a.NextUint64(), 7126631698937927467ULL);
  EXPECT_EQ(a.NextUint64(), 14663106486854050627ULL);
  NumpyRng b(140098);
  EXPECT_EQ(b.NextUint64(), 13420388419549774097ULL);
  EXPECT_EQ(b.NextUint64(), 10208617735032736636ULL);
  EXPECT_EQ(b.NextUint64(), 6128116274024149523ULL);
  EXPECT_EQ(b.NextUint64(), 16373808781820707998ULL);
}

TEST(NumpyRngSpec, HalfBoundDraws) {
  // §5.3: V' = 99092, half_bound 46539438283891; r values and 2r+1.
  const int64_t half_bound = 46539438283891;
  EXPECT_THAT(Draw(10007, half_bound, 4),
              ElementsAre(38316048023122, 2419938046656, 17979836159674, 36993668729195));
  EXPECT_THAT(Draw(140098, half_bound, 4),
              ElementsAre(33858405369630, 25755403400457, 15460673601360, 41309613242795));
  std::vector<int64_t> r0 = Draw(0, half_bound, 4);
  for (int64_t& v : r0) v = 2 * v + 1;
  EXPECT_THAT(r0, ElementsAre(59287678272599, 25111444230055, 3813769577005, 1538373747317));
}

TEST(NumpyRngSpec, Rejection64) {
  // §5.4: seven raw outputs for four elements; outputs #1, #3 and #4 are rejected.
  const int64_t high = int64_t{3} << 60;
  EXPECT_THAT(Draw(49, high, 4), ElementsAre(2051798808460917632, 2268308529189037153,
                                             46990296261609033, 2685162033564919293));
  NumpyRng rng(49);
  EXPECT_EQ(rng.NextUint64(), 6693478420990483472ULL);
  rng.NextUint64();
  EXPECT_EQ(rng.NextUint64(), 7230205249739569824ULL);
  EXPECT_EQ(rng.NextUint64(), 11505221101831951744ULL);
  // After the draw, the generator has consumed exactly seven outputs.
  NumpyRng consumed(49), fresh(49);
  ASSERT_TRUE(consumed.Integers(high, 4).ok());
  for (int i = 0; i < 7; ++i) fresh.NextUint64();
  EXPECT_EQ(consumed.NextUint64(), fresh.NextUint64());
}

TEST(NumpyRngSpec, Rejection32) {
  // §5.4: halves 182541328 and 199506592 are rejected; lo == t (268435456) is accepted.
  EXPECT_THAT(Draw(49, int64_t{3} << 28, 4),
              ElementsAre(292208791, 685898624, 477721637, 315640001));
  NumpyRng rng(49);
  EXPECT_EQ(rng.NextUint64(), 0x5ce403290ae15c10ULL);
  EXPECT_EQ(rng.NextUint64(), 0x97dd161bda0a92acULL);
  EXPECT_EQ(rng.NextUint64(), 0x6456d95e0be43aa0ULL);
}

TEST(NumpyRngSpec, SmallChecks) {
  // §5.5, seed 10007.
  EXPECT_THAT(Draw(10007, 1000, 6), ElementsAre(149, 823, 619, 51, 547, 386));
  EXPECT_THAT(Draw(10007, int64_t{1} << 32, 4),
              ElementsAre(644226611, 3536058432, 2662691893, 223327894));
  EXPECT_THAT(Draw(10007, int64_t{1} << 62, 3),
              ElementsAre(3796813830707316620, 239796500919311629, 1781657924734481866));
  EXPECT_THAT(Draw(10007, 2, 4), ElementsAre(0, 1, 1, 0));
  // high == 1 draws nothing: the next raw output is still the first one.
  NumpyRng rng(10007);
  ASSERT_TRUE(rng.Integers(1, 4).ok());
  EXPECT_EQ(rng.NextUint64(), 15187255322829266483ULL);
}

TEST(NumpyRngSpec, ChainedCallsShareTheHalfBuffer) {
  NumpyRng rng(10007);
  auto a = rng.Integers(10, 1);
  auto b = rng.Integers(int64_t{1} << 40, 1);
  auto c = rng.Integers(7, 1);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_THAT(*a, ElementsAre(1));
  EXPECT_THAT(*b, ElementsAre(57171941022));
  EXPECT_THAT(*c, ElementsAre(5));  // the buffered high half of raw output #1
}

TEST(NumpyRngSpec, BadArguments) {
  NumpyRng rng(0);
  EXPECT_EQ(rng.Integers(0, 3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rng.Integers(-5, 3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rng.Integers(10, -1).status().code(), absl::StatusCode::kInvalidArgument);
  auto empty = rng.Integers(10, 0);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

}  // namespace
}  // namespace engram
