// Sampler and stop conditions: greedy, temperature, top-k, top-p, seeds, stop tokens and strings.
#include "model/sampler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace engram {
namespace {

std::vector<float> LogProbs(std::vector<double> probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}

std::vector<uint32_t> Draw(const SamplingParams& p, const std::vector<float>& logits, int n) {
  Sampler sampler(p);
  std::vector<uint32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(sampler.Sample(logits));
  return out;
}

TEST(SamplerTest, GreedyPicksTheLargestLogitAndTheLowestIdAmongEquals) {
  EXPECT_EQ(ArgMax(std::vector<float>{0.1f, 3.0f, -1.0f, 2.0f}), 1u);
  EXPECT_EQ(ArgMax(std::vector<float>{1.0f, 5.0f, 5.0f, 5.0f}), 1u);
  EXPECT_EQ(ArgMax(std::vector<float>{NAN, -1.0f, -2.0f}), 1u);
  Sampler greedy(SamplingParams{});
  EXPECT_EQ(greedy.Sample(std::vector<float>{0.0f, 0.0f, 9.0f}), 2u);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  std::vector<float> logits(50, 0.0f);  // uniform over 50 ids
  SamplingParams p{.temperature = 1.0f, .seed = 42};
  auto a = Draw(p, logits, 64);
  EXPECT_EQ(a, Draw(p, logits, 64));
  p.seed = 43;
  EXPECT_NE(a, Draw(p, logits, 64));
}

TEST(SamplerTest, OneDrawPerTokenWhateverTheFilters) {
  // The k-th token depends only on the seed and the k-th logits: a request interleaved with other
  // requests (another batch composition) or with filters that keep a single candidate still gets
  // the same stream afterwards.
  std::vector<float> flat(10, 0.0f), peaked(10, 0.0f);
  peaked[7] = 100.0f;
  SamplingParams p{.temperature = 0.8f, .seed = 7};
  Sampler a(p), b(p);
  for (int i = 0; i < 5; ++i) a.Sample(flat);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b.Sample(peaked), 7u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(a.Sample(flat), b.Sample(flat));
}

TEST(SamplerTest, TemperatureSamplingFollowsTheSoftmax) {
  auto logits = LogProbs({0.5, 0.3, 0.2});
  const int n = 20000;
  std::map<uint32_t, int> counts;
  for (uint32_t t : Draw({.temperature = 1.0f, .seed = 1}, logits, n)) counts[t]++;
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.2, 0.02);
  // Temperature 0.5 squares the odds: 25:9:4.
  counts.clear();
  for (uint32_t t : Draw({.temperature = 0.5f, .seed = 2}, logits, n)) counts[t]++;
  EXPECT_NEAR(counts[0] / double(n), 25.0 / 38, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 4.0 / 38, 0.02);
}

TEST(SamplerTest, TopKKeepsOnlyTheKMostLikely) {
  auto logits = LogProbs({0.1, 0.4, 0.05, 0.3, 0.15});
  std::map<uint32_t, int> counts;
  for (uint32_t t : Draw({.temperature = 1.0f, .top_k = 2, .seed = 3}, logits, 5000)) counts[t]++;
  EXPECT_THAT(counts, testing::SizeIs(2));
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[3], 0);
  // Renormalised: 0.4 / 0.7.
  EXPECT_NEAR(counts[1] / 5000.0, 0.4 / 0.7, 0.03);
  EXPECT_EQ(Draw({.temperature = 5.0f, .top_k = 1, .seed = 3}, logits, 50),
            std::vector<uint32_t>(50, 1u));
}

TEST(SamplerTest, TopPKeepsTheSmallestSetReachingTheMass) {
  auto logits = LogProbs({0.5, 0.3, 0.15, 0.05});
  // 0.5 < 0.6 <= 0.8: ids 0 and 1.
  std::map<uint32_t, int> counts;
  for (uint32_t t : Draw({.temperature = 1.0f, .top_p = 0.6f, .seed = 4}, logits, 5000))
    counts[t]++;
  EXPECT_THAT(counts, testing::SizeIs(2));
  EXPECT_NEAR(counts[0] / 5000.0, 0.5 / 0.8, 0.03);
  // A tiny mass still keeps one token: the most likely.
  EXPECT_EQ(Draw({.temperature = 1.0f, .top_p = 1e-6f, .seed = 4}, logits, 20),
            std::vector<uint32_t>(20, 0u));
  // top_k then top_p: top-2 renormalised is {0.625, 0.375}; top_p 0.5 keeps id 0 only.
  EXPECT_EQ(Draw({.temperature = 1.0f, .top_k = 2, .top_p = 0.5f, .seed = 4}, logits, 20),
            std::vector<uint32_t>(20, 0u));
}

// The nucleus of a large vocabulary is found by sorting only as far as it reaches, in blocks; it
// must be the same set a full sort gives, whatever the number of blocks it takes.
TEST(SamplerTest, TopPOverALargeVocabularyMatchesAFullSort) {
  // 1000 equal logits: ties go to the lower id, so top_p 0.5 keeps ids 0..499 (two blocks).
  std::vector<float> flat(1000, 0.25f);
  std::map<uint32_t, int> counts;
  for (uint32_t t : Draw({.temperature = 1.0f, .top_p = 0.5f, .seed = 9}, flat, 4000)) counts[t]++;
  EXPECT_EQ(counts.begin()->first, 0u);
  EXPECT_EQ(counts.rbegin()->first, 499u);
  EXPECT_GT(counts.size(), 400u);
  // Random logits of 5,000 ids against a plain full-sort reference of the nucleus.
  std::vector<float> logits(5000);
  uint64_t x = 12345;
  for (float& l : logits) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    l = static_cast<float>((x >> 40) % 1000) / 100.0f;  // 0..9.99: many ties, a broad nucleus
  }
  for (float top_p : {0.3f, 0.9f, 0.999f}) {
    std::vector<uint32_t> order(logits.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    double sum = 0;
    for (float l : logits) sum += std::exp(double(l) - 9.99);
    double cumulative = 0;
    std::set<uint32_t> nucleus;
    for (uint32_t id : order) {
      nucleus.insert(id);
      cumulative += std::exp(double(logits[id]) - 9.99);
      if (cumulative >= top_p * sum) break;
    }
    std::set<uint32_t> seen;
    for (uint32_t t : Draw({.temperature = 1.0f, .top_p = top_p, .seed = 5}, logits, 3000)) {
      EXPECT_TRUE(nucleus.count(t)) << "id " << t << " is outside the top_p " << top_p << " set";
      seen.insert(t);
    }
    // The draws spread over the nucleus (it holds hundreds to thousands of ids).
    EXPECT_GT(seen.size(), std::min<size_t>(nucleus.size(), 3000) / 4) << top_p;
  }
}

TEST(SamplerTest, ValidationNamesTheField) {
  EXPECT_TRUE(ValidateSamplingParams({}).ok());
  auto bad = [](SamplingParams p) { return std::string(ValidateSamplingParams(p).message()); };
  EXPECT_THAT(bad({.temperature = -1.0f}), testing::HasSubstr("temperature"));
  EXPECT_THAT(bad({.temperature = NAN}), testing::HasSubstr("temperature"));
  EXPECT_THAT(bad({.top_k = -2}), testing::HasSubstr("top_k"));
  EXPECT_THAT(bad({.top_p = 0.0f}), testing::HasSubstr("top_p"));
  EXPECT_THAT(bad({.top_p = 1.5f}), testing::HasSubstr("top_p"));
  EXPECT_EQ(ValidateSamplingParams({.top_p = 0.0f}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(StopTest, TokenStopPrecedence) {
  StopConditions stop{
      .max_tokens = 3, .stop_token_ids = {7}, .eos_token_ids = {2}, .stop_strings = {}};
  EXPECT_EQ(CheckStopToken(stop, 5, 1), FinishReason::kNone);
  EXPECT_EQ(CheckStopToken(stop, 2, 1), FinishReason::kEos);
  EXPECT_EQ(CheckStopToken(stop, 7, 1), FinishReason::kStop);
  EXPECT_EQ(CheckStopToken(stop, 5, 3), FinishReason::kLength);
  EXPECT_EQ(CheckStopToken(stop, 2, 3), FinishReason::kEos);
  stop.ignore_eos = true;
  EXPECT_EQ(CheckStopToken(stop, 2, 1), FinishReason::kNone);
  EXPECT_EQ(FinishReasonName(FinishReason::kLength), "length");
}

TEST(StopTest, StopStringsAcrossPiecesAndHoldBack) {
  StopStringMatcher m({"</s>", "STOP"});
  bool stopped = false;
  EXPECT_EQ(m.Push("hello <", &stopped), "hello ");  // "<" may begin "</s>"
  EXPECT_FALSE(stopped);
  EXPECT_EQ(m.Push("b> and </", &stopped), "<b> and ");
  EXPECT_EQ(m.Push("s> tail", &stopped), "");
  EXPECT_TRUE(stopped);
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.Push("more", &stopped), "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopTest, EarliestMatchWinsAndFlushReturnsHeldText) {
  StopStringMatcher m({"cd", "b"});
  bool stopped = false;
  EXPECT_EQ(m.Push("abcd", &stopped), "a");
  EXPECT_TRUE(stopped);
  StopStringMatcher n({"xyz"});
  EXPECT_EQ(n.Push("abxy", &stopped), "ab");
  EXPECT_FALSE(stopped);
  EXPECT_EQ(n.Flush(), "xy");
  StopStringMatcher none({});
  EXPECT_EQ(none.Push("anything", &stopped), "anything");
  EXPECT_FALSE(stopped);
}

}  // namespace
}  // namespace engram
