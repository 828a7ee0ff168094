#include "model/model_config.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace engram {
namespace {

absl::Status Bad(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config key ", key, ": ", what));
}

// Reads an integer key into `out`; absent or null keeps the default unless `required`.
absl::Status ReadInt(const nlohmann::json& config, const char* key, bool required, int* out) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) {
    return required ? Bad(key, "missing") : absl::OkStatus();
  }
  if (!it->is_number_integer()) return Bad(key, "must be an integer");
  int64_t v = it->get<int64_t>();
  if (v < INT32_MIN || v > INT32_MAX) return Bad(key, absl::StrCat(v, " is out of range"));
  *out = static_cast<int>(v);
  return absl::OkStatus();
}

absl::Status ReadFloat(const nlohmann::json& config, const char* key, float* out) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return Bad(key, "must be a number");
  const double v = it->get<double>();
  if (!(std::fabs(v) <= std::numeric_limits<float>::max())) {
    return Bad(key, absl::StrCat(v, " is not a finite f32 number"));
  }
  *out = static_cast<float>(v);
  return absl::OkStatus();
}

absl::Status ReadTokenId(const nlohmann::json& value, const char* key, uint32_t* out) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
      value.get<int64_t>() > int64_t{UINT32_MAX}) {
    return Bad(key, "must be a non-negative integer token id");
  }
  *out = value.get<uint32_t>();
  return absl::OkStatus();
}

}  // namespace

bool ModelConfig::IsEos(uint32_t token) const {
  return std::find(eos_token_ids.begin(), eos_token_ids.end(), token) != eos_token_ids.end();
}

absl::Status ModelConfig::Validate() const {
  if (vocab_size < 1) return Bad("vocab_size", "must be >= 1");
  if (hidden_size < 1) return Bad("hidden_size", "must be >= 1");
  if (intermediate_size < 1) return Bad("intermediate_size", "must be >= 1");
  if (num_hidden_layers < 1) return Bad("num_hidden_layers", "must be >= 1");
  if (num_attention_heads < 1) return Bad("num_attention_heads", "must be >= 1");
  if (num_key_value_heads < 1 || num_key_value_heads > num_attention_heads) {
    return Bad("num_key_value_heads",
               absl::StrCat(num_key_value_heads, " is outside [1, ",
                            "num_attention_heads = ", num_attention_heads, "]"));
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return Bad("num_key_value_heads",
               absl::StrCat(num_key_value_heads,
                            " does not divide num_attention_heads = ", num_attention_heads));
  }
  if (head_dim < 2 || head_dim % 2 != 0) {
    return Bad("head_dim", absl::StrCat(head_dim, " must be even and >= 2 (RoPE rotates halves)"));
  }
  // q_width() and the activation sizes derived from it are ints.
  if (int64_t{num_attention_heads} * head_dim > INT32_MAX) {
    return Bad("head_dim", absl::StrCat("num_attention_heads * head_dim = ",
                                        int64_t{num_attention_heads} * head_dim, " is too large"));
  }
  if (!(rms_norm_eps > 0)) return Bad("rms_norm_eps", "must be > 0");
  if (!(rope_theta > 0)) return Bad("rope_theta", "must be > 0");
  if (max_position_embeddings < 1) return Bad("max_position_embeddings", "must be >= 1");
  if (bos_token_id && *bos_token_id >= static_cast<uint32_t>(vocab_size)) {
    return Bad("bos_token_id",
               absl::StrCat(*bos_token_id, " is not below vocab_size = ", vocab_size));
  }
  for (uint32_t id : eos_token_ids) {
    if (id >= static_cast<uint32_t>(vocab_size)) {
      return Bad("eos_token_id", absl::StrCat(id, " is not below vocab_size = ", vocab_size));
    }
  }
  if (has_engram()) {
    ENGRAM_RETURN_IF_ERROR(engram.Validate());
    for (int id : engram.layer_ids) {
      if (id >= num_hidden_layers) {
        return Bad("engram_layer_ids",
                   absl::StrCat("layer ", id,
                                " does not exist (num_hidden_layers = ", num_hidden_layers, ")"));
      }
    }
    if (engram.hidden_size != hidden_size) {
      return Bad("hidden_size", absl::StrCat("the Engram config says ", engram.hidden_size,
                                             ", the backbone ", hidden_size));
    }
    if (engram.hc_mult != 1) {
      return Bad("hc_mult", absl::StrCat(engram.hc_mult, " is not supported: the backbone has no ",
                                         "hyper-connections yet (hc_mult must be 1)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseModelConfig(const nlohmann::json& config,
                                             const std::string& model_dir) {
  if (!config.is_object()) return absl::InvalidArgumentError("config.json is not a JSON object");
  ModelConfig c;
  c.name = ModelName(config, model_dir);
  ENGRAM_RETURN_IF_ERROR(ReadInt(config, "vocab_size", true, &c.vocab_size));
  ENGRAM_RETURN_IF_ERROR(ReadInt(config, "hidden_size", true, &c.hidden_size));
  ENGRAM_RETURN_IF_ERROR(ReadInt(config, "intermediate_size", true, &c.intermediate_size));
  ENGRAM_RETURN_IF_ERROR(ReadInt(config, "num_hidden_layers", true, &c.num_hidden_layers));
  ENGRAM_RETURN_IF_ERROR(ReadInt(config, "num_attention_heads", true, &c.num_attention_heads));
  c.num_key_value_heads = c.num_attention_heads;
  ENGRAM_RETURN_IF_ERROR(ReadInt(config, "num_key_value_heads", false, &c.num_key_value_heads));
  if (c.num_attention_heads > 0) c.head_dim = c.hidden_size / c.num_attention_heads;
  ENGRAM_RETURN_IF_ERROR(ReadInt(config, "head_dim", false, &c.head_dim));
  ENGRAM_RETURN_IF_ERROR(ReadFloat(config, "rms_norm_eps", &c.rms_norm_eps));
  ENGRAM_RETURN_IF_ERROR(ReadFloat(config, "rope_theta", &c.rope_theta));
  ENGRAM_RETURN_IF_ERROR(
      ReadInt(config, "max_position_embeddings", false, &c.max_position_embeddings));
  if (auto it = config.find("tie_word_embeddings"); it != config.end() && !it->is_null()) {
    if (!it->is_boolean()) return Bad("tie_word_embeddings", "must be true or false");
    c.tie_word_embeddings = it->get<bool>();
  }
  if (auto it = config.find("bos_token_id"); it != config.end() && !it->is_null()) {
    uint32_t id;
    ENGRAM_RETURN_IF_ERROR(ReadTokenId(*it, "bos_token_id", &id));
    c.bos_token_id = id;
  }
  if (auto it = config.find("eos_token_id"); it != config.end() && !it->is_null()) {
    if (it->is_array()) {
      for (const auto& v : *it) {
        uint32_t id;
        ENGRAM_RETURN_IF_ERROR(ReadTokenId(v, "eos_token_id", &id));
        c.eos_token_ids.push_back(id);
      }
    } else {
      uint32_t id;
      ENGRAM_RETURN_IF_ERROR(ReadTokenId(*it, "eos_token_id", &id));
      c.eos_token_ids.push_back(id);
    }
  }
  if (auto it = config.find("torch_dtype"); it != config.end() && !it->is_null()) {
    if (!it->is_string()) return Bad("torch_dtype", "must be a string");
    c.torch_dtype = it->get<std::string>();
  }
  // Keys that change the architecture in ways this backbone does not implement are refused rather
  // than silently ignored.
  if (auto it = config.find("hidden_act"); it != config.end() && !it->is_null()) {
    if (!it->is_string() || it->get<std::string>() != "silu") {
      return Bad("hidden_act", "only \"silu\" (SwiGLU) is supported");
    }
  }
  if (auto it = config.find("rope_scaling"); it != config.end() && !it->is_null()) {
    return Bad("rope_scaling", "RoPE scaling is not supported (must be absent or null)");
  }
  if (config.contains("engram_layer_ids")) {
    ENGRAM_ASSIGN_OR_RETURN(c.engram, ParseEngramConfig(config));
  }
  ENGRAM_RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  ENGRAM_ASSIGN_OR_RETURN(nlohmann::json json, ReadJsonFile(path));
  absl::StatusOr<ModelConfig> config = ParseModelConfig(json, model_dir);
  if (!config.ok()) return Annotate(config.status(), path);
  return config;
}

}  // namespace engram
