// config.json parsing and validation, backbone weight loading and its refusals.
#include "model/model_config.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/weights.h"
#include "nlohmann/json.hpp"
#include "tests/common/rewrite_safetensors.h"
#include "tests/common/temp_dir.h"
#include "tests/common/test_paths.h"

namespace engram {
namespace {

using ::testing::HasSubstr;

nlohmann::json BaseConfig() {
  return nlohmann::json{{"vocab_size", 100},
                        {"hidden_size", 32},
                        {"intermediate_size", 64},
                        {"num_hidden_layers", 3},
                        {"num_attention_heads", 4}};
}

nlohmann::json WithEngram(nlohmann::json c) {
  c["engram_layer_ids"] = {1, 2};
  c["engram_vocab_size"] = 101;
  c["engram_n_heads"] = 2;
  c["engram_head_dim"] = 8;
  return c;
}

std::string Error(const nlohmann::json& config) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(config, "/models/tiny");
  EXPECT_FALSE(c.ok());
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  return std::string(c.status().message());
}

TEST(ModelConfigTest, DefaultsFollowLlama) {
  absl::StatusOr<ModelConfig> c = ParseModelConfig(BaseConfig(), "/models/tiny/");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "tiny");
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c->rope_theta, 10000.0f);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->bos_token_id.has_value());
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_FALSE(c->has_engram());
}

TEST(ModelConfigTest, ReadsEveryKey) {
  nlohmann::json j = WithEngram(BaseConfig());
  j["model_name"] = "named";
  j["num_key_value_heads"] = 2;
  j["head_dim"] = 16;
  j["rms_norm_eps"] = 1e-5;
  j["rope_theta"] = 500000.0;
  j["max_position_embeddings"] = 128;
  j["tie_word_embeddings"] = true;
  j["bos_token_id"] = 1;
  j["eos_token_id"] = {2, 7};
  j["torch_dtype"] = "bfloat16";
  j["hidden_act"] = "silu";
  j["rope_scaling"] = nullptr;
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "/x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "named");
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->q_width(), 64);
  EXPECT_EQ(c->kv_width(), 32);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c->rope_theta, 500000.0f);
  EXPECT_EQ(c->max_position_embeddings, 128);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->bos_token_id, 1u);
  EXPECT_THAT(c->eos_token_ids, ::testing::ElementsAre(2u, 7u));
  EXPECT_TRUE(c->IsEos(7));
  EXPECT_FALSE(c->IsEos(1));
  EXPECT_EQ(c->torch_dtype, "bfloat16");
  ASSERT_TRUE(c->has_engram());
  EXPECT_THAT(c->engram.layer_ids, ::testing::ElementsAre(1, 2));
  EXPECT_EQ(c->engram.hidden_size, 32);
  EXPECT_EQ(c->engram.d_mem(), 2 * 2 * 8);
  j["eos_token_id"] = 5;
  c = ParseModelConfig(j, "/x");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(c->eos_token_ids, ::testing::ElementsAre(5u));
}

TEST(ModelConfigTest, ErrorsNameTheKey) {
  nlohmann::json j = BaseConfig();
  j.erase("vocab_size");
  EXPECT_THAT(Error(j), HasSubstr("vocab_size: missing"));
  j = BaseConfig();
  j["hidden_size"] = "32";
  EXPECT_THAT(Error(j), HasSubstr("hidden_size: must be an integer"));
  j = BaseConfig();
  j["num_key_value_heads"] = 3;
  EXPECT_THAT(Error(j), HasSubstr("num_key_value_heads: 3 does not divide"));
  j = BaseConfig();
  j["head_dim"] = 7;
  EXPECT_THAT(Error(j), HasSubstr("head_dim"));
  j = BaseConfig();
  j["eos_token_id"] = 100;
  EXPECT_THAT(Error(j), HasSubstr("eos_token_id: 100 is not below vocab_size"));
  j = BaseConfig();
  j["eos_token_id"] = {1, -1};
  EXPECT_THAT(Error(j), HasSubstr("eos_token_id"));
  j = BaseConfig();
  j["rope_scaling"] = {{"type", "linear"}};
  EXPECT_THAT(Error(j), HasSubstr("rope_scaling"));
  j = BaseConfig();
  j["hidden_act"] = "gelu";
  EXPECT_THAT(Error(j), HasSubstr("hidden_act"));
  j = BaseConfig();
  j["tie_word_embeddings"] = 1;
  EXPECT_THAT(Error(j), HasSubstr("tie_word_embeddings"));
  j = WithEngram(BaseConfig());
  j["engram_layer_ids"] = {1, 3};
  EXPECT_THAT(Error(j), HasSubstr("engram_layer_ids: layer 3 does not exist"));
  j = WithEngram(BaseConfig());
  j["hc_mult"] = 4;
  EXPECT_THAT(Error(j), HasSubstr("hc_mult"));
  j = WithEngram(BaseConfig());
  j.erase("engram_vocab_size");
  EXPECT_THAT(Error(j), HasSubstr("engram_vocab_size"));
  EXPECT_FALSE(ParseModelConfig(nlohmann::json::array(), "/x").ok());
}

TEST(ModelConfigTest, RefusesValuesOutsideTheirTypes) {
  // Doubles beyond f32 would turn into inf (or UB) when narrowed.
  nlohmann::json j = BaseConfig();
  j["rms_norm_eps"] = 1e300;
  EXPECT_THAT(Error(j), HasSubstr("rms_norm_eps: 1e+300 is not a finite f32 number"));
  j = BaseConfig();
  j["rope_theta"] = -1e39;
  EXPECT_THAT(Error(j), HasSubstr("rope_theta"));
  // Sizes whose products overflow the int widths of the backbone.
  j = BaseConfig();
  j["num_attention_heads"] = 65536;
  j["num_key_value_heads"] = 1;
  j["head_dim"] = 65536;
  EXPECT_THAT(Error(j), HasSubstr("num_attention_heads * head_dim = 4294967296 is too large"));
  j = BaseConfig();
  j["num_hidden_layers"] = int64_t{1} << 31;
  EXPECT_THAT(Error(j), HasSubstr("num_hidden_layers: 2147483648 is out of range"));
}

TEST(ModelConfigTest, LoadNamesTheFile) {
  absl::StatusOr<ModelConfig> c = LoadModelConfig("/nonexistent/model");
  EXPECT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("/nonexistent/model/config.json"));
  testing::TempDir tmp;
  const std::string& dir = tmp.path();
  std::ofstream(dir + "/config.json") << "{\"vocab_size\": 10, ";
  c = LoadModelConfig(dir);
  EXPECT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("config.json"));
  std::ofstream(dir + "/config.json") << BaseConfig().dump();
  EXPECT_TRUE(LoadModelConfig(dir).ok());
}

// ---- Weights ---------------------------------------------------------------------------------

// The golden backbone model (tests/golden/backbone) as a source of well-formed tensors.
std::string GoldenModelDir() { return testing::SourceFile("tests/golden/backbone/model"); }

// Copies the golden model into tmp/name, dropping `drop` and replacing `reshape` by a [3, 5]
// tensor; `tie` rewrites config.json with tie_word_embeddings and drops lm_head.weight.
std::string Variant(const testing::TempDir& tmp, const std::string& name, const std::string& drop,
                    const std::string& reshape, bool tie = false) {
  std::string dir = tmp.path() + "/" + name;
  std::filesystem::create_directories(dir);
  const std::vector<float> junk(15, 0.5f);
  absl::Status written = testing::RewriteSafetensors(
      GoldenModelDir() + "/model.safetensors", dir + "/model.safetensors",
      [&](auto*, std::vector<TensorView>* tensors) {
        testing::DropTensor(tensors, drop);
        if (tie) testing::DropTensor(tensors, "lm_head.weight");
        for (TensorView& t : *tensors) {
          if (t.name != reshape) continue;
          t.dtype = DType::kF32;
          t.shape = {3, 5};
          t.data = reinterpret_cast<const uint8_t*>(junk.data());
          t.size_bytes = junk.size() * sizeof(float);
        }
      });
  EXPECT_TRUE(written.ok()) << written;
  auto config = nlohmann::json::parse(std::ifstream(GoldenModelDir() + "/config.json"));
  if (tie) config["tie_word_embeddings"] = true;
  std::ofstream(dir + "/config.json") << config.dump();
  return dir;
}

absl::StatusOr<BackboneWeights> LoadFrom(const std::string& dir,
                                         std::unique_ptr<SafetensorsDir>* keep) {
  auto config = LoadModelConfig(dir);
  if (!config.ok()) return config.status();
  auto tensors = SafetensorsDir::Open(dir);
  if (!tensors.ok()) return tensors.status();
  *keep = std::move(*tensors);
  return LoadBackboneWeights(**keep, *config);
}

TEST(WeightsTest, LoadsEveryTensorConvertingDtypes) {
  std::unique_ptr<SafetensorsDir> keep;
  auto w = LoadFrom(GoldenModelDir(), &keep);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->layers.size(), 3u);
  EXPECT_THAT(w->embed_tokens.shape, ::testing::ElementsAre(96, 32));
  EXPECT_THAT(w->layers[1].gate_proj.shape, ::testing::ElementsAre(80, 32));
  EXPECT_THAT(w->layers[2].down_proj.shape, ::testing::ElementsAre(32, 80));
  EXPECT_FALSE(w->layers[0].q_bias.empty());
  EXPECT_FALSE(w->layers[0].o_bias.empty());
  // F32 is used in place; BF16 (MLP) and F16 (norms) are converted copies.
  EXPECT_EQ(w->embed_tokens.owned, nullptr);
  EXPECT_NE(w->layers[0].up_proj.owned, nullptr);
  EXPECT_NE(w->norm.owned, nullptr);
  const TensorView* up = keep->Find("model.layers.0.mlp.up_proj.weight");
  ASSERT_NE(up, nullptr);
  ASSERT_EQ(up->dtype, DType::kBF16);
  uint16_t bits;
  std::memcpy(&bits, up->data + 2 * 7, 2);
  EXPECT_EQ(w->layers[0].up_proj.data[7], Bf16ToF32(bits));
  EXPECT_NE(w->lm_head.data, w->embed_tokens.data);
}

TEST(WeightsTest, TiedEmbeddingsShareTheTable) {
  testing::TempDir tmp;
  std::unique_ptr<SafetensorsDir> keep;
  auto w = LoadFrom(Variant(tmp, "tied", "", "", /*tie=*/true), &keep);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->lm_head.data, w->embed_tokens.data);
}

TEST(WeightsTest, MissingTensorIsNamed) {
  testing::TempDir tmp;
  std::unique_ptr<SafetensorsDir> keep;
  auto w = LoadFrom(Variant(tmp, "missing", "model.layers.2.mlp.up_proj.weight", ""), &keep);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("model.layers.2.mlp.up_proj.weight"));
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("loading backbone weights"));
  w = LoadFrom(Variant(tmp, "no_head", "lm_head.weight", ""), &keep);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("lm_head.weight"));
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("tie_word_embeddings"));
}

// A config that names far more layers than the files hold fails on the first missing layer; it
// does not try to allocate them all first (that threw std::bad_alloc).
TEST(WeightsTest, MoreLayersThanTheFilesHoldIsNotFound) {
  testing::TempDir tmp;
  const std::string dir = Variant(tmp, "many_layers", "", "");
  auto config = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  config["num_hidden_layers"] = 2000000000;
  std::ofstream(dir + "/config.json") << config.dump();
  std::unique_ptr<SafetensorsDir> keep;
  auto w = LoadFrom(dir, &keep);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("model.layers.3."));
}

TEST(WeightsTest, MisShapedTensorIsNamedWithBothShapes) {
  testing::TempDir tmp;
  std::unique_ptr<SafetensorsDir> keep;
  auto w = LoadFrom(Variant(tmp, "shape", "", "model.layers.1.self_attn.k_proj.weight"), &keep);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      std::string(w.status().message()),
      HasSubstr("model.layers.1.self_attn.k_proj.weight\" has shape [3, 5], expected [16, 32]"));
  // A mis-shaped optional bias is refused too.
  w = LoadFrom(Variant(tmp, "bias", "", "model.layers.0.self_attn.v_proj.bias"), &keep);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("v_proj.bias"));
}

TEST(WeightsTest, NonFloatTensorIsRefused) {
  testing::TempDir tmp;
  std::string dir = Variant(tmp, "int", "model.norm.weight", "");
  {
    // Re-add model.norm.weight as I32.
    auto src = SafetensorsDir::Open(dir);
    ASSERT_TRUE(src.ok());
    SafetensorsWriter writer;
    for (const TensorView* t : (*src)->tensors()) {
      writer.Add(t->name, t->dtype, t->shape, absl::MakeConstSpan(t->data, t->size_bytes));
    }
    std::vector<uint8_t> ints(32 * 4, 0);
    writer.Add("model.norm.weight", DType::kI32, {32}, ints);
    ASSERT_TRUE(writer.Write(dir + "/model2.safetensors.tmpfile").ok());
    src->reset();
    std::filesystem::rename(dir + "/model2.safetensors.tmpfile", dir + "/model.safetensors");
  }
  std::unique_ptr<SafetensorsDir> keep;
  auto w = LoadFrom(dir, &keep);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("model.norm.weight"));
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("I32"));
}

}  // namespace
}  // namespace engram
