// The Engram hyper-parameters of a model, as read from its config.json.
//
// Key names follow DeepSeek-V4.1 where they overlap (engram_layer_ids, engram_max_ngram_size,
// engram_n_heads, engram_head_dim, engram_vocab_size, engram_pad_token_id, ...) plus hc_mult,
// engram_kernel_size (0 = no conv) and engram_seed. See docs/architecture.md contract 2.
#ifndef ENGRAM_COMMON_ENGRAM_CONFIG_H_
#define ENGRAM_COMMON_ENGRAM_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace engram {

struct EngramConfig {
  // 0-based indices of the transformer blocks that carry an Engram module. Key engram_layer_ids.
  std::vector<int> layer_ids;
  // Largest n-gram order N; orders 2..N are hashed. Key engram_max_ngram_size. Default 3.
  int max_ngram_size = 3;
  // Hash heads per order (K). Key engram_n_heads. Default 8.
  int n_heads = 8;
  // Width of one table row in elements. Key engram_head_dim. Default 64.
  int head_dim = 64;
  // Start of the prime search per order (orders 2..N). Key engram_vocab_size: an int used for
  // every order or a list with one start per order.
  std::vector<int64_t> vocab_size_per_order;
  // Raw token id used for positions before the sequence start. Key engram_pad_token_id. Default 2.
  int64_t pad_token_id = 2;
  // Added to the per-layer RNG seed. Key engram_seed. Default 0.
  int64_t seed = 0;
  // Short-conv kernel size; 0 disables the conv. Key engram_kernel_size. Default 4.
  int kernel_size = 4;
  // Hyper-connection branches. Key hc_mult. Default 1.
  int hc_mult = 1;
  // Backbone hidden size H (the module's input/output width). Key hidden_size.
  int hidden_size = 0;
  // Published constants, checked against the computed ones when present.
  // Key engram_compressed_vocab_size.
  std::optional<int64_t> compressed_vocab_size;
  // Key engram_num_embeddings: rows per layer.
  std::vector<int64_t> num_embeddings;

  int num_orders() const { return max_ngram_size - 1; }
  // Row ids per position and layer: (N-1) * K.
  int columns() const { return num_orders() * n_heads; }
  // Width of the concatenated retrieved memory e_t: columns * head_dim.
  int d_mem() const { return columns() * head_dim; }
  // Index of `layer_id` in layer_ids, or -1.
  int LayerIndex(int layer_id) const;

  // Checks ranges and consistency; the message names the offending key.
  absl::Status Validate() const;
};

// Reads the engram_* keys (and hidden_size, hc_mult) of a config.json object.
absl::StatusOr<EngramConfig> ParseEngramConfig(const nlohmann::json& config);

// The model's name as the memory tier and the worker know it: config.json's "model_name" when
// present, otherwise the basename of the model directory. Tables are keyed by (name, layer).
std::string ModelName(const nlohmann::json& config, const std::string& model_dir);

// Tensor names of layer `layer_id`'s Engram module in a model directory (docs/architecture.md
// contract 2): the module prefix "model.layers.<L>.engram." and its table
// "<prefix>multi_head_embedding.embedding.weight".
std::string EngramModulePrefix(int layer_id);
std::string EngramTableTensorName(int layer_id);

// Reads and parses a JSON file; the error names the file and the position of a syntax error.
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path);

}  // namespace engram

#endif  // ENGRAM_COMMON_ENGRAM_CONFIG_H_
