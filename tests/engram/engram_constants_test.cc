// The frozen Engram constants: computed from config + token map / tokenizer, stored as
// engram_constants.json, and a model load refusing (with a message naming the field) whenever the
// stored file or the published config keys disagree with the recomputed values.
#include "model/engram_constants.h"

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/common/temp_dir.h"
#include "tests/common/test_paths.h"

namespace engram {
namespace {

using ::testing::HasSubstr;

EngramConfig SmallConfig() {
  EngramConfig c;
  c.layer_ids = {1, 15};
  c.max_ngram_size = 3;
  c.n_heads = 4;
  c.head_dim = 8;
  c.vocab_size_per_order = {1000, 1200};
  c.pad_token_id = 2;
  c.hidden_size = 32;
  return c;
}

// raw id i -> i / 2 (pairs merge), raw id 9 unassigned; V' = 50.
std::vector<int64_t> PairMap() {
  std::vector<int64_t> map(100);
  for (int i = 0; i < 100; ++i) map[i] = i / 2;
  map[9] = -1;
  return map;
}

TEST(EngramConstantsTest, ComputedFromATokenMap) {
  auto c = ComputeEngramConstants(SmallConfig(), PairMap(), 50);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hash.compressed_vocab_size, 50);
  EXPECT_EQ(c->hash.compressed_pad_id, 1);  // raw 2 -> 1
  EXPECT_EQ(c->hash.rows_per_layer, EngramLayerRowCounts(SmallConfig()));
  auto one = c->Compress(7);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, 3);
  EXPECT_THAT(c->Compress(9).status().message(), HasSubstr("token id 9"));
  EXPECT_THAT(c->Compress(100).status().message(), HasSubstr("token id 100"));
  const std::vector<uint32_t> raw = {0, 1, 9};
  EXPECT_THAT(c->Compress(raw).status().message(), HasSubstr("position 2"));
}

TEST(EngramConstantsTest, RejectsInconsistentTokenMaps) {
  std::vector<int64_t> bad = PairMap();
  bad[4] = 50;  // outside [0, V')
  EXPECT_THAT(ComputeEngramConstants(SmallConfig(), bad, 50).status().message(),
              HasSubstr("raw id 4"));
  EngramConfig pad_unassigned = SmallConfig();
  pad_unassigned.pad_token_id = 9;
  EXPECT_THAT(ComputeEngramConstants(pad_unassigned, PairMap(), 50).status().message(),
              HasSubstr("token id 9"));
}

TEST(EngramConstantsTest, JsonRoundTripAndFileRoundTrip) {
  auto c = ComputeEngramConstants(SmallConfig(), PairMap(), 50);
  ASSERT_TRUE(c.ok());
  auto back = EngramConstantsFromJson(EngramConstantsToJson(*c));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(CompareEngramConstants(*back, *c).ok());
  testing::TempDir tmp;
  const std::string path = tmp.path() + "/engram_constants.json";
  ASSERT_TRUE(WriteEngramConstants(*c, path).ok());
  auto read = ReadEngramConstants(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(CompareEngramConstants(*read, *c).ok());
  EXPECT_EQ(read->hash.multipliers, c->hash.multipliers);
  EXPECT_EQ(read->token_map, c->token_map);
}

TEST(EngramConstantsTest, CompareNamesTheFirstDifference) {
  auto c = ComputeEngramConstants(SmallConfig(), PairMap(), 50);
  ASSERT_TRUE(c.ok());
  EngramConstants prime = *c;
  prime.hash.primes[1][3] += 2;
  absl::Status s = CompareEngramConstants(prime, *c);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("layer 15 prime 3: stored"));
  EngramConstants mult = *c;
  mult.hash.multipliers[0][2] ^= 2;
  EXPECT_THAT(CompareEngramConstants(mult, *c).message(), HasSubstr("layer 1 multiplier 2"));
  EngramConstants map = *c;
  map.token_map[42] = 7;
  EXPECT_THAT(CompareEngramConstants(map, *c).message(), HasSubstr("token_map[42]: stored 7"));
  EngramConstants vocab = *c;
  vocab.hash.compressed_vocab_size = 51;
  EXPECT_THAT(CompareEngramConstants(vocab, *c).message(),
              HasSubstr("compressed_vocab_size: stored 51, computed 50"));
}

TEST(EngramConstantsTest, MalformedFilesNameTheKey) {
  auto c = ComputeEngramConstants(SmallConfig(), PairMap(), 50);
  ASSERT_TRUE(c.ok());
  nlohmann::json j = EngramConstantsToJson(*c);
  j["layers"][0]["primes"] = {1, 2};
  EXPECT_THAT(EngramConstantsFromJson(j).status().message(), HasSubstr("primes"));
  j = EngramConstantsToJson(*c);
  j.erase("token_map");
  EXPECT_THAT(EngramConstantsFromJson(j).status().message(), HasSubstr("token_map is missing"));
  j = EngramConstantsToJson(*c);
  j["format"] = "something-else";
  EXPECT_THAT(EngramConstantsFromJson(j).status().message(), HasSubstr("format"));
  testing::TempDir tmp;
  const std::string path = tmp.path() + "/engram_constants.json";
  std::ofstream(path) << "{\"format\": ";
  EXPECT_THAT(ReadEngramConstants(path).status().message(), HasSubstr("malformed JSON"));
}

TEST(EngramConstantsTest, PublishedConfigKeysAreChecked) {
  auto c = ComputeEngramConstants(SmallConfig(), PairMap(), 50);
  ASSERT_TRUE(c.ok());
  EngramConfig config = SmallConfig();
  config.compressed_vocab_size = 50;
  config.num_embeddings = c->hash.rows_per_layer;
  EXPECT_TRUE(CheckPublishedConstants(config, *c).ok());
  config.compressed_vocab_size = 99092;
  EXPECT_THAT(CheckPublishedConstants(config, *c).message(),
              HasSubstr("engram_compressed_vocab_size is 99092 but the tokenizer gives 50"));
  config.compressed_vocab_size.reset();
  config.num_embeddings[1] += 1;
  absl::Status s = CheckPublishedConstants(config, *c);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("engram_num_embeddings[1] (layer 15)"));
}

class ModelDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(testing::Gpt2Path()))
        << testing::Gpt2Path() << " is missing: run scripts/fetch-testdata.sh";
    auto t = Tokenizer::FromFile(testing::Gpt2Path());
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = std::move(*t);
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(ModelDirTest, StoredFileMustAgree) {
  testing::TempDir tmp;
  const std::string& dir = tmp.path();
  const EngramConfig config = SmallConfig();
  // No stored file: the computed constants are used.
  auto computed = LoadEngramConstants(dir, config, *tokenizer_);
  ASSERT_TRUE(computed.ok()) << computed.status();
  EXPECT_EQ(computed->token_map.size(), tokenizer_->size());
  // An agreeing file loads.
  const std::string path = dir + "/engram_constants.json";
  ASSERT_TRUE(WriteEngramConstants(*computed, path).ok());
  EXPECT_TRUE(LoadEngramConstants(dir, config, *tokenizer_).ok());
  // A stale file (one token map entry changed) refuses the load, naming file and field.
  EngramConstants stale = *computed;
  stale.token_map[1000] = (stale.token_map[1000] + 1) % stale.hash.compressed_vocab_size;
  ASSERT_TRUE(WriteEngramConstants(stale, path).ok());
  auto refused = LoadEngramConstants(dir, config, *tokenizer_);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr(path));
  EXPECT_THAT(refused.status().message(), HasSubstr("token_map[1000]"));
  // A config whose seed changed no longer matches the stored multipliers.
  ASSERT_TRUE(WriteEngramConstants(*computed, path).ok());
  EngramConfig reseeded = config;
  reseeded.seed = 1;
  EXPECT_THAT(LoadEngramConstants(dir, reseeded, *tokenizer_).status().message(),
              HasSubstr("layer 1 multiplier 0"));
}

TEST_F(ModelDirTest, PublishedKeysMustAgree) {
  testing::TempDir tmp;
  const std::string& dir = tmp.path();
  EngramConfig config = SmallConfig();
  auto computed = LoadEngramConstants(dir, config, *tokenizer_);
  ASSERT_TRUE(computed.ok());
  config.compressed_vocab_size = computed->hash.compressed_vocab_size + 1;
  auto refused = LoadEngramConstants(dir, config, *tokenizer_);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("engram_compressed_vocab_size"));
  config.compressed_vocab_size = computed->hash.compressed_vocab_size;
  config.num_embeddings = {computed->hash.rows_per_layer[0], 5};
  EXPECT_THAT(LoadEngramConstants(dir, config, *tokenizer_).status().message(),
              HasSubstr("engram_num_embeddings[1]"));
  config.num_embeddings = computed->hash.rows_per_layer;
  EXPECT_TRUE(LoadEngramConstants(dir, config, *tokenizer_).ok());
}

}  // namespace
}  // namespace engram
