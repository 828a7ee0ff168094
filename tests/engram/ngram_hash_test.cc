// N-gram hashing: the public check values of docs/engram-reference.md §1.3 (V4.1 multipliers and
// prime sums, the demo's prime table), primality, and prefill == chunked prefill == decode.
#include "common/ngram_hash.h"

#include <random>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace engram {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

EngramConfig V41Config() {
  EngramConfig c;
  c.layer_ids = {1, 14};
  c.max_ngram_size = 4;
  c.n_heads = 8;
  c.head_dim = 256;
  c.vocab_size_per_order = {16000000, 16000000, 16000000};
  c.seed = 0;
  return c;
}

EngramConfig DemoConfig() {
  EngramConfig c;
  c.layer_ids = {1, 15};
  c.max_ngram_size = 3;
  c.n_heads = 8;
  c.head_dim = 64;
  c.vocab_size_per_order = {646400, 646400};
  c.seed = 0;
  return c;
}

std::vector<int64_t> Slice(const std::vector<int64_t>& v, int begin, int n) {
  return std::vector<int64_t>(v.begin() + begin, v.begin() + begin + n);
}

TEST(IsPrimeTest, AgreesWithASieveAndKnownHardCases) {
  const int limit = 200000;
  std::vector<bool> composite(limit, false);
  for (int i = 2; i * i < limit; ++i) {
    if (!composite[i]) {
      for (int j = i * i; j < limit; j += i) composite[j] = true;
    }
  }
  for (int n = 0; n < limit; ++n) {
    ASSERT_EQ(IsPrime(n), n >= 2 && !composite[n]) << n;
  }
  EXPECT_TRUE(IsPrime((uint64_t{1} << 61) - 1));
  EXPECT_TRUE(IsPrime(18446744073709551557ULL));  // largest 64-bit prime
  EXPECT_FALSE(IsPrime(18446744073709551559ULL));
  EXPECT_FALSE(IsPrime(3215031751ULL));           // strong pseudoprime to bases 2, 3, 5, 7
  EXPECT_FALSE(IsPrime(3825123056546413051ULL));  // strong pseudoprime to bases 2 .. 23
  EXPECT_FALSE(IsPrime(4294967297ULL));           // 641 * 6700417
}

TEST(MultipliersTest, V41PublicValues) {
  auto l1 = EngramLayerMultipliers(0, 1, 4, 99092);
  auto l14 = EngramLayerMultipliers(0, 14, 4, 99092);
  ASSERT_TRUE(l1.ok() && l14.ok());
  EXPECT_THAT(*l1, ElementsAre(76632096046245, 4839876093313, 35959672319349, 73987337458391));
  EXPECT_THAT(*l14, ElementsAre(67716810739261, 51510806800915, 30921347202721, 82619226485591));
}

TEST(MultipliersTest, OddAndBelowTheOverflowBound) {
  for (int64_t vocab : {1, 2, 7, 1000, 99092, 50257}) {
    auto m = EngramLayerMultipliers(3, 5, 6, vocab);
    ASSERT_TRUE(m.ok());
    const int64_t max_multiplier = INT64_MAX / vocab;
    for (int64_t v : *m) {
      EXPECT_EQ(v % 2, 1);
      EXPECT_LE(v, std::max<int64_t>(max_multiplier, 1));
    }
  }
  EXPECT_FALSE(EngramLayerMultipliers(0, 1, 4, 0).ok());
}

TEST(PrimesTest, V41RowCountsMatchPublishedNumEmbeddings) {
  const EngramConfig c = V41Config();
  EXPECT_THAT(EngramLayerRowCounts(c), ElementsAre(384006168, 384016682));
  const auto primes = EngramPrimes(c);
  ASSERT_EQ(primes.size(), 2u);
  ASSERT_EQ(primes[0].size(), 24u);
  // docs/engram-reference.md §1.3 table: first and last prime of each order.
  EXPECT_EQ(primes[0][0], 16000057);
  EXPECT_EQ(primes[0][7], 16000183);
  EXPECT_EQ(primes[0][8], 16000189);
  EXPECT_EQ(primes[0][15], 16000321);
  EXPECT_EQ(primes[0][16], 16000339);
  EXPECT_EQ(primes[0][23], 16000463);
  EXPECT_EQ(primes[1][0], 16000477);
  EXPECT_EQ(primes[1][7], 16000627);
  EXPECT_EQ(primes[1][8], 16000667);
  EXPECT_EQ(primes[1][15], 16000769);
  EXPECT_EQ(primes[1][16], 16000781);
  EXPECT_EQ(primes[1][23], 16000889);
}

TEST(PrimesTest, DemoTable) {
  const auto p = EngramPrimes(DemoConfig());
  ASSERT_EQ(p.size(), 2u);
  EXPECT_THAT(Slice(p[0], 0, 8),
              ElementsAre(646403, 646411, 646421, 646423, 646433, 646453, 646519, 646523));
  EXPECT_THAT(Slice(p[0], 8, 8),
              ElementsAre(646537, 646543, 646549, 646571, 646573, 646577, 646609, 646619));
  EXPECT_THAT(Slice(p[1], 0, 8),
              ElementsAre(646631, 646637, 646643, 646669, 646687, 646721, 646757, 646771));
  EXPECT_THAT(Slice(p[1], 8, 8),
              ElementsAre(646781, 646823, 646831, 646837, 646843, 646859, 646873, 646879));
  EXPECT_THAT(EngramLayerRowCounts(DemoConfig()), ElementsAre(10344164, 10348242));
}

TEST(PrimesTest, DistinctAcrossLayersWhenOrdersStartDifferently) {
  EngramConfig c = DemoConfig();
  c.vocab_size_per_order = {100, 90};  // order 3's search runs into order 2's primes
  const auto p = EngramPrimes(c);
  std::set<int64_t> all;
  for (const auto& layer : p) {
    for (int64_t v : layer) {
      EXPECT_TRUE(IsPrime(v));
      EXPECT_TRUE(all.insert(v).second) << "prime " << v << " used twice";
    }
  }
  // Layer 0 order 2 starts at 101; order 3 starts at 97 and must skip 101, 103, ... already taken.
  EXPECT_EQ(p[0][0], 101);
  EXPECT_EQ(p[0][8], 97);
}

TEST(ConstantsTest, OffsetsAreExclusivePrefixSums) {
  auto c = ComputeEngramHashConstants(DemoConfig(), 1000, 2);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->num_layers(), 2);
  EXPECT_EQ(c->columns(), 16);
  for (int li = 0; li < 2; ++li) {
    int64_t sum = 0;
    for (int col = 0; col < 16; ++col) {
      EXPECT_EQ(c->offsets[li][col], sum);
      sum += c->primes[li][col];
    }
    EXPECT_EQ(c->rows_per_layer[li], sum);
  }
  EXPECT_EQ(c->rows_per_layer, EngramLayerRowCounts(DemoConfig()));
}

TEST(ConstantsTest, RejectsBadInputs) {
  EXPECT_THAT(ComputeEngramHashConstants(DemoConfig(), 0, 0).status().message(),
              HasSubstr("compressed vocab size"));
  EXPECT_THAT(ComputeEngramHashConstants(DemoConfig(), 10, 10).status().message(),
              HasSubstr("compressed pad id"));
  EngramConfig bad = DemoConfig();
  bad.vocab_size_per_order = {646400};
  EXPECT_THAT(ComputeEngramHashConstants(bad, 10, 1).status().message(),
              HasSubstr("engram_vocab_size"));
}

TEST(HashTest, MatchesTheFormulaAtTheSequenceStart) {
  auto c = ComputeEngramHashConstants(DemoConfig(), 99092, 7);
  ASSERT_TRUE(c.ok());
  const std::vector<int64_t> ids = {123, 4567, 89};
  std::vector<int64_t> hashes(3 * 16), rows(3 * 16);
  ASSERT_TRUE(ComputeNgramHashIds(*c, 1, {}, ids, absl::MakeSpan(hashes)).ok());
  ASSERT_TRUE(ComputeNgramRowIds(*c, 1, {}, ids, absl::MakeSpan(rows)).ok());
  const auto& m = c->multipliers[1];
  // Position 0: x_{-1} = x_{-2} = pad'.
  const int64_t mix2 = (123 * m[0]) ^ (7 * m[1]);
  const int64_t mix3 = mix2 ^ (7 * m[2]);
  // Position 2: full trigram 89, 4567, 123.
  const int64_t mix2_t2 = (89 * m[0]) ^ (4567 * m[1]);
  const int64_t mix3_t2 = mix2_t2 ^ (123 * m[2]);
  for (int j = 0; j < 8; ++j) {
    EXPECT_EQ(hashes[j], mix2 % c->primes[1][j]);
    EXPECT_EQ(hashes[8 + j], mix3 % c->primes[1][8 + j]);
    EXPECT_EQ(hashes[32 + j], mix2_t2 % c->primes[1][j]);
    EXPECT_EQ(hashes[32 + 8 + j], mix3_t2 % c->primes[1][8 + j]);
  }
  for (int i = 0; i < 48; ++i) {
    EXPECT_EQ(rows[i], hashes[i] + c->offsets[1][i % 16]);
    EXPECT_LT(hashes[i], c->primes[1][i % 16]);
    EXPECT_LT(rows[i], c->rows_per_layer[1]);
  }
}

TEST(HashTest, PrefillChunkedPrefillAndDecodeAgree) {
  auto c = ComputeEngramHashConstants(V41Config(), 99092, 2);
  ASSERT_TRUE(c.ok());
  std::mt19937_64 gen(7);
  std::uniform_int_distribution<int64_t> dist(0, 99091);
  std::vector<int64_t> ids(257);
  for (auto& id : ids) id = dist(gen);
  const int cols = c->columns();
  for (int li = 0; li < c->num_layers(); ++li) {
    std::vector<int64_t> prefill(ids.size() * cols);
    ASSERT_TRUE(ComputeNgramRowIds(*c, li, {}, ids, absl::MakeSpan(prefill)).ok());

    // Decode, one position at a time.
    NgramState state(*c);
    std::vector<int64_t> step(cols);
    for (size_t t = 0; t < ids.size(); ++t) {
      ASSERT_TRUE(state.Push(ids[t]).ok());
      state.RowIds(*c, li, step.data());
      ASSERT_EQ(step, Slice(prefill, static_cast<int>(t * cols), cols)) << "position " << t;
    }

    // Chunks of awkward sizes, each continuing from the state of the previous one.
    NgramState chunk_state(*c);
    size_t t = 0;
    for (size_t chunk : {1, 2, 19, 111, 124}) {
      absl::Span<const int64_t> part(ids.data() + t, chunk);
      std::vector<int64_t> out(chunk * cols);
      ASSERT_TRUE(
          ComputeNgramRowIds(*c, li, chunk_state.Context(), part, absl::MakeSpan(out)).ok());
      ASSERT_EQ(out, Slice(prefill, static_cast<int>(t * cols), static_cast<int>(chunk * cols)));
      for (int64_t id : part) ASSERT_TRUE(chunk_state.Push(id).ok());
      t += chunk;
    }
    ASSERT_EQ(t, ids.size());
  }
}

TEST(HashTest, ContextLongerThanNeededUsesItsTail) {
  auto c = ComputeEngramHashConstants(DemoConfig(), 500, 3);
  ASSERT_TRUE(c.ok());
  const std::vector<int64_t> a = {9, 8, 7, 6, 5};
  std::vector<int64_t> out_long(16), out_short(16);
  ASSERT_TRUE(ComputeNgramRowIds(*c, 0, {1, 2, 3, 4}, {5}, absl::MakeSpan(out_long)).ok());
  ASSERT_TRUE(ComputeNgramRowIds(*c, 0, {3, 4}, {5}, absl::MakeSpan(out_short)).ok());
  EXPECT_EQ(out_long, out_short);
  // A short context is padded with pad' at the front.
  std::vector<int64_t> out_one(16), out_pad(16);
  ASSERT_TRUE(ComputeNgramRowIds(*c, 0, {4}, {5}, absl::MakeSpan(out_one)).ok());
  ASSERT_TRUE(ComputeNgramRowIds(*c, 0, {3, 4}, {5}, absl::MakeSpan(out_pad)).ok());
  EXPECT_EQ(out_one, out_pad);  // pad' is 3
}

TEST(HashTest, OrderSensitive) {
  auto c = ComputeEngramHashConstants(DemoConfig(), 500, 3);
  ASSERT_TRUE(c.ok());
  std::vector<int64_t> ab(2 * 16), ba(2 * 16);
  ASSERT_TRUE(ComputeNgramHashIds(*c, 0, {}, {10, 20}, absl::MakeSpan(ab)).ok());
  ASSERT_TRUE(ComputeNgramHashIds(*c, 0, {}, {20, 10}, absl::MakeSpan(ba)).ok());
  EXPECT_NE(Slice(ab, 16, 8), Slice(ba, 16, 8));
}

TEST(HashTest, RejectsBadInput) {
  auto c = ComputeEngramHashConstants(DemoConfig(), 500, 3);
  ASSERT_TRUE(c.ok());
  std::vector<int64_t> out(2 * 16);
  EXPECT_THAT(ComputeNgramRowIds(*c, 0, {}, {1, 500}, absl::MakeSpan(out)).message(),
              HasSubstr("position 1: compressed token id 500 is outside [0, 500)"));
  EXPECT_THAT(ComputeNgramRowIds(*c, 0, {-1}, {1, 2}, absl::MakeSpan(out)).message(),
              HasSubstr("context"));
  EXPECT_THAT(ComputeNgramRowIds(*c, 2, {}, {1, 2}, absl::MakeSpan(out)).message(),
              HasSubstr("layer index 2"));
  EXPECT_THAT(ComputeNgramRowIds(*c, 0, {}, {1}, absl::MakeSpan(out)).message(),
              HasSubstr("expected 1 x 16"));
  NgramState state(*c);
  EXPECT_FALSE(state.Push(-4).ok());
  EXPECT_FALSE(state.Push(500).ok());
  EXPECT_THAT(state.Context(), ElementsAre(3, 3));  // unchanged by the failed pushes
}

}  // namespace
}  // namespace engram
