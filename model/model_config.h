// The hyper-parameters of an Engram model, read from the config.json of its directory.
//
// Backbone keys use the Hugging Face Llama names (vocab_size, hidden_size, intermediate_size,
// num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, rms_norm_eps, rope_theta,
// max_position_embeddings, tie_word_embeddings, bos_token_id, eos_token_id, torch_dtype); the
// Engram keys are those of common/engram_config.h (docs/architecture.md contract 2). A config
// without engram_layer_ids is a plain Llama-style model (no Engram module anywhere).
#ifndef ENGRAM_MODEL_MODEL_CONFIG_H_
#define ENGRAM_MODEL_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/engram_config.h"
#include "nlohmann/json_fwd.hpp"

namespace engram {

struct ModelConfig {
  // The model's name as the memory tier knows it: ModelName(config.json, model dir).
  std::string name;
  // Rows of embed_tokens and lm_head. Key vocab_size. Required.
  int vocab_size = 0;
  // Residual stream width H. Key hidden_size. Required.
  int hidden_size = 0;
  // SwiGLU inner width I. Key intermediate_size. Required.
  int intermediate_size = 0;
  // Number of decoder blocks L. Key num_hidden_layers. Required.
  int num_hidden_layers = 0;
  // Query heads. Key num_attention_heads. Required.
  int num_attention_heads = 0;
  // Key/value heads (grouped-query attention). Key num_key_value_heads. Default
  // num_attention_heads.
  int num_key_value_heads = 0;
  // Width of one attention head. Key head_dim. Default hidden_size / num_attention_heads.
  int head_dim = 0;
  // Epsilon of every backbone RMSNorm. Key rms_norm_eps. Default 1e-6.
  float rms_norm_eps = 1e-6f;
  // RoPE base (Llama convention, rotate_half over the whole head). Key rope_theta. Default 10000.
  float rope_theta = 10000.0f;
  // The context window in tokens (prompt + generated). Key max_position_embeddings. Default 2048.
  int max_position_embeddings = 2048;
  // lm_head shares embed_tokens. Key tie_word_embeddings. Default false.
  bool tie_word_embeddings = false;
  // Key bos_token_id; absent or null = none.
  std::optional<uint32_t> bos_token_id;
  // Key eos_token_id: an int or a list of ints; absent or null = none.
  std::vector<uint32_t> eos_token_ids;
  // Storage dtype named by the file (informational; weights are converted to f32). Key torch_dtype.
  std::string torch_dtype;
  // The Engram modules. engram.layer_ids is empty when the model has none.
  EngramConfig engram;

  bool has_engram() const { return !engram.layer_ids.empty(); }
  int q_width() const { return num_attention_heads * head_dim; }
  int kv_width() const { return num_key_value_heads * head_dim; }
  // True when `token` is one of eos_token_ids.
  bool IsEos(uint32_t token) const;

  // Checks ranges and consistency (heads divide evenly, Engram layers exist, hc_mult == 1, token
  // ids inside the vocabulary, ...). INVALID_ARGUMENT naming the offending key.
  absl::Status Validate() const;
};

// Parses a config.json object. `model_dir` only feeds ModelConfig::name (see ModelName). Validates.
absl::StatusOr<ModelConfig> ParseModelConfig(const nlohmann::json& config,
                                             const std::string& model_dir);

// Reads and parses `<model_dir>/config.json`; errors name the file.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace engram

#endif  // ENGRAM_MODEL_MODEL_CONFIG_H_
