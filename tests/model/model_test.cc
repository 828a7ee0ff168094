// Model::Load on demo models written by model/demo_model.h: what loads, what is refused and how the
// message names the problem; the demo writer's determinism and idempotence.
#include "model/model.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/ngram_hash.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/demo_model.h"
#include "model/engram_constants.h"
#include "model/engram_module.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/common/rewrite_safetensors.h"

namespace engram {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// A small demo model: the real GPT-2 tokenizer, a 2-layer backbone, tables of ~8k rows per layer.
DemoModelOptions Small() {
  DemoModelOptions o;
  o.tokenizer_path = DefaultDemoTokenizerPath();
  o.hidden_size = 32;
  o.intermediate_size = 48;
  o.num_hidden_layers = 3;
  o.num_attention_heads = 4;
  o.num_key_value_heads = 2;
  o.max_position_embeddings = 64;
  o.engram_layer_ids = {0, 2};
  o.engram_n_heads = 2;
  o.engram_head_dim = 8;
  o.engram_vocab_size = 1000;
  return o;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class ModelTest : public ::testing::Test {
 protected:
  // Directories of this process under the test temp dir (the normal and sanitizer builds' runs
  // may overlap on one machine), removed with the suite.
  static std::string Root() {
    return ::testing::TempDir() + "/model_test_" + std::to_string(getpid());
  }
  static std::string Scratch(const std::string& name) { return Root() + "/" + name; }

  static void SetUpTestSuite() {
    ASSERT_TRUE(fs::exists(DefaultDemoTokenizerPath()))
        << DefaultDemoTokenizerPath() << " is missing: run scripts/fetch-testdata.sh";
    dir_ = new std::string(Scratch("demo"));
    fs::remove_all(*dir_);
    absl::Status st = WriteDemoModel(*dir_, Small());
    ASSERT_TRUE(st.ok()) << st;
  }
  static void TearDownTestSuite() {
    delete dir_;
    fs::remove_all(Root());
  }

  // A copy of the demo model to break.
  std::string Copy(const std::string& name) {
    std::string d = Scratch(name);
    fs::remove_all(d);
    fs::create_directories(d);
    for (const auto& e : fs::directory_iterator(*dir_)) fs::copy(e.path(), d / e.path().filename());
    return d;
  }

  static std::string* dir_;
};
std::string* ModelTest::dir_ = nullptr;

TEST_F(ModelTest, LoadsTheDemoModel) {
  auto model = Model::Load(*dir_);
  ASSERT_TRUE(model.ok()) << model.status();
  const Model& m = **model;
  EXPECT_EQ(m.name(), "engram-demo");
  EXPECT_EQ(m.config().vocab_size, 50257);
  EXPECT_EQ(m.config().num_hidden_layers, 3);
  EXPECT_THAT(m.config().eos_token_ids, ::testing::ElementsAre(50256u));
  EXPECT_TRUE(m.config().tie_word_embeddings);
  EXPECT_EQ(m.weights().lm_head.data, m.weights().embed_tokens.data);
  EXPECT_EQ(m.tokenizer().max_id(), 50256u);
  ASSERT_EQ(m.engram_modules().size(), 2u);
  EXPECT_TRUE(m.engram_module(1).has_conv());
  EXPECT_EQ(m.engram_module(0).d_mem(), 2 * 2 * 8);
  EXPECT_EQ(m.hash_constants().num_layers(), 2);
  EXPECT_EQ(m.hash_constants().rows_per_layer, EngramLayerRowCounts(m.config().engram));
  EXPECT_EQ(m.EngramTableName(1), "model.layers.2.engram.multi_head_embedding.embedding.weight");
  const TensorView* table = m.tensors().Find(m.EngramTableName(0));
  ASSERT_NE(table, nullptr);
  EXPECT_EQ(table->dtype, DType::kBF16);
  EXPECT_EQ(table->shape[0], m.hash_constants().rows_per_layer[0]);
  // The pad of the n-gram windows is <|endoftext|> through the token map.
  EXPECT_EQ(m.hash_constants().compressed_pad_id, m.engram_constants().token_map[50256]);
}

TEST_F(ModelTest, DemoWriterIsDeterministicAndIdempotent) {
  std::string other = Scratch("demo_again");
  fs::remove_all(other);
  ASSERT_TRUE(WriteDemoModel(other, Small()).ok());
  for (const char* f :
       {"config.json", "model.safetensors", "tokenizer.json", "engram_constants.json"}) {
    EXPECT_EQ(Slurp(*dir_ + "/" + f), Slurp(other + "/" + f)) << f;
  }
  auto before = fs::last_write_time(other + "/model.safetensors");
  ASSERT_TRUE(WriteDemoModel(other, Small()).ok());
  EXPECT_EQ(fs::last_write_time(other + "/model.safetensors"), before);  // not rewritten
  // Other options (here the seed) rewrite it with other weights.
  DemoModelOptions reseeded = Small();
  reseeded.seed = 99;
  ASSERT_TRUE(WriteDemoModel(other, reseeded).ok());
  EXPECT_NE(Slurp(*dir_ + "/model.safetensors"), Slurp(other + "/model.safetensors"));
  EXPECT_TRUE(Model::Load(other).ok());
}

TEST_F(ModelTest, DemoWriterNeedsItsTokenizer) {
  DemoModelOptions o = Small();
  o.tokenizer_path = "/nonexistent/tokenizer.json";
  absl::Status st = WriteDemoModel(Scratch("no_tok"), o);
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(st.message()), HasSubstr("/nonexistent/tokenizer.json"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("fetch-testdata.sh"));
}

TEST_F(ModelTest, MissingFilesAreNamed) {
  std::string d = Copy("no_tokenizer");
  fs::remove(d + "/tokenizer.json");
  auto m = Model::Load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("tokenizer.json"));
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("loading model " + d));

  d = Copy("no_config");
  fs::remove(d + "/config.json");
  m = Model::Load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("config.json"));

  d = Copy("no_weights");
  fs::remove(d + "/model.safetensors");
  m = Model::Load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("safetensors"));
}

TEST_F(ModelTest, InconsistentConfigIsRefused) {
  // A vocabulary smaller than the tokenizer's ids.
  std::string d = Copy("small_vocab");
  auto j = nlohmann::json::parse(Slurp(d + "/config.json"));
  j["vocab_size"] = 50000;
  std::ofstream(d + "/config.json") << j.dump();
  auto m = Model::Load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              HasSubstr("bos_token_id: 50256 is not below vocab_size = 50000"));
  // Without the special ids, the embedding no longer matches the config.
  j.erase("bos_token_id");
  j.erase("eos_token_id");
  std::ofstream(d + "/config.json") << j.dump();
  m = Model::Load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              HasSubstr("model.embed_tokens.weight\" has shape [50257, 32], expected [50000, 32]"));

  // Engram at a layer that does not exist.
  d = Copy("bad_layer");
  j = nlohmann::json::parse(Slurp(d + "/config.json"));
  j["engram_layer_ids"] = {0, 5};
  std::ofstream(d + "/config.json") << j.dump();
  m = Model::Load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("engram_layer_ids"));
}

TEST_F(ModelTest, StoredConstantsMustAgree) {
  std::string d = Copy("bad_constants");
  auto j = nlohmann::json::parse(Slurp(d + "/engram_constants.json"));
  j["layers"][1]["primes"][2] = j["layers"][1]["primes"][2].get<int64_t>() + 2;
  std::ofstream(d + "/engram_constants.json") << j.dump();
  auto m = Model::Load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("prime"));

  // A table that is not the size the constants address.
  d = Copy("bad_table_vocab");
  j = nlohmann::json::parse(Slurp(d + "/config.json"));
  j["engram_vocab_size"] = 1200;
  std::ofstream(d + "/config.json") << j.dump();
  fs::remove(d + "/engram_constants.json");
  m = Model::Load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              HasSubstr("multi_head_embedding.embedding.weight"));
}

TEST_F(ModelTest, MissingEngramModuleTensorIsNamed) {
  std::string d = Copy("no_module");
  absl::Status st = testing::RewriteSafetensors(
      d + "/model.safetensors", d + "/model.safetensors", [](auto*, std::vector<TensorView>* t) {
        testing::DropTensor(t, "model.layers.2.engram.key_projs.0.weight");
      });
  ASSERT_TRUE(st.ok()) << st;
  auto m = Model::Load(d);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()),
              HasSubstr("model.layers.2.engram.key_projs.0.weight"));
}

}  // namespace
}  // namespace engram
