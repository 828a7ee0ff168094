// The backbone weights of a model, as f32 tensors read from its safetensors files.
//
// Tensor names are the Hugging Face Llama ones (docs/architecture.md contract 2):
//   model.embed_tokens.weight                              [V, H]
//   model.layers.{i}.input_layernorm.weight                [H]
//   model.layers.{i}.self_attn.{q,k,v,o}_proj.weight       [Nq*D, H], [Nkv*D, H], [Nkv*D, H], [H,
//   Nq*D] model.layers.{i}.self_attn.{q,k,v,o}_proj.bias         optional, [rows of the weight]
//   model.layers.{i}.post_attention_layernorm.weight       [H]
//   model.layers.{i}.mlp.{gate,up}_proj.weight             [I, H]
//   model.layers.{i}.mlp.down_proj.weight                  [H, I]
//   model.norm.weight                                      [H]
//   lm_head.weight                                         [V, H] (absent when tie_word_embeddings)
// F32 tensors whose bytes are 4-byte aligned are used straight from the memory mapping; BF16, F16,
// F64 (and unaligned F32) are converted into owned f32 copies once at load. The Engram tables are
// never read here (the memory tier serves them); the Engram modules' small weights are loaded by
// model/engram_module.h.
#ifndef ENGRAM_MODEL_WEIGHTS_H_
#define ENGRAM_MODEL_WEIGHTS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/safetensors.h"
#include "model/model_config.h"

namespace engram {

// One f32 tensor, row-major. Either points into a file mapping (which must outlive it) or owns its
// data; copies share the data.
struct Weight {
  const float* data = nullptr;  // nullptr when the tensor is absent (optional biases)
  std::vector<int64_t> shape;
  std::shared_ptr<const std::vector<float>> owned;  // set when converted

  bool empty() const { return data == nullptr; }
};

struct LayerWeights {
  Weight input_layernorm;           // (H)
  Weight q_proj, q_bias;            // (Nq*D, H), (Nq*D) or empty
  Weight k_proj, k_bias;            // (Nkv*D, H), (Nkv*D) or empty
  Weight v_proj, v_bias;            // (Nkv*D, H), (Nkv*D) or empty
  Weight o_proj, o_bias;            // (H, Nq*D), (H) or empty
  Weight post_attention_layernorm;  // (H)
  Weight gate_proj;                 // (I, H)
  Weight up_proj;                   // (I, H)
  Weight down_proj;                 // (H, I)
};

struct BackboneWeights {
  Weight embed_tokens;               // (V, H)
  std::vector<LayerWeights> layers;  // (L)
  Weight norm;                       // (H)
  Weight lm_head;                    // (V, H); the same data as embed_tokens when tied
};

// Reads one tensor as f32 and checks its shape. NOT_FOUND naming the tensor when absent,
// INVALID_ARGUMENT naming it with the expected and actual shape when mis-shaped or not a float.
absl::StatusOr<Weight> LoadWeight(const SafetensorsDir& tensors, const std::string& name,
                                  const std::vector<int64_t>& shape);

// Loads every backbone tensor listed above. The first missing or mis-shaped tensor is the error
// (prefixed "loading backbone weights"). `tensors` must outlive the result.
absl::StatusOr<BackboneWeights> LoadBackboneWeights(const SafetensorsDir& tensors,
                                                    const ModelConfig& config);

}  // namespace engram

#endif  // ENGRAM_MODEL_WEIGHTS_H_
