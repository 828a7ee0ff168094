#include "model/weights.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace engram {

absl::StatusOr<Weight> LoadWeight(const SafetensorsDir& tensors, const std::string& name,
                                  const std::vector<int64_t>& shape) {
  ENGRAM_ASSIGN_OR_RETURN(const TensorView* view, tensors.Get(name));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(*view, shape));
  Weight w;
  w.shape = shape;
  // F32 is used in place when aligned: the mapping is the storage, nothing is copied.
  if (view->dtype == DType::kF32 && reinterpret_cast<uintptr_t>(view->data) % alignof(float) == 0) {
    w.data = reinterpret_cast<const float*>(view->data);
    return w;
  }
  if (view->dtype != DType::kF32 && view->dtype != DType::kF16 && view->dtype != DType::kBF16 &&
      view->dtype != DType::kF64) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has dtype ",
                                                   DTypeName(view->dtype),
                                                   ", expected F32, F16, BF16 or F64"));
  }
  ENGRAM_ASSIGN_OR_RETURN(std::vector<float> values, TensorToF32(*view));
  auto owned = std::make_shared<const std::vector<float>>(std::move(values));
  w.data = owned->data();
  w.owned = std::move(owned);
  return w;
}

namespace {

// An optional bias: absent is fine, present must have the right shape.
absl::StatusOr<Weight> LoadOptional(const SafetensorsDir& tensors, const std::string& name,
                                    const std::vector<int64_t>& shape) {
  if (tensors.Find(name) == nullptr) return Weight{};
  return LoadWeight(tensors, name, shape);
}

absl::Status LoadLayer(const SafetensorsDir& t, const ModelConfig& c, int i, LayerWeights* out) {
  const std::string p = absl::StrCat("model.layers.", i, ".");
  const int64_t H = c.hidden_size, I = c.intermediate_size, Q = c.q_width(), KV = c.kv_width();
  ENGRAM_ASSIGN_OR_RETURN(out->input_layernorm, LoadWeight(t, p + "input_layernorm.weight", {H}));
  ENGRAM_ASSIGN_OR_RETURN(out->q_proj, LoadWeight(t, p + "self_attn.q_proj.weight", {Q, H}));
  ENGRAM_ASSIGN_OR_RETURN(out->k_proj, LoadWeight(t, p + "self_attn.k_proj.weight", {KV, H}));
  ENGRAM_ASSIGN_OR_RETURN(out->v_proj, LoadWeight(t, p + "self_attn.v_proj.weight", {KV, H}));
  ENGRAM_ASSIGN_OR_RETURN(out->o_proj, LoadWeight(t, p + "self_attn.o_proj.weight", {H, Q}));
  ENGRAM_ASSIGN_OR_RETURN(out->q_bias, LoadOptional(t, p + "self_attn.q_proj.bias", {Q}));
  ENGRAM_ASSIGN_OR_RETURN(out->k_bias, LoadOptional(t, p + "self_attn.k_proj.bias", {KV}));
  ENGRAM_ASSIGN_OR_RETURN(out->v_bias, LoadOptional(t, p + "self_attn.v_proj.bias", {KV}));
  ENGRAM_ASSIGN_OR_RETURN(out->o_bias, LoadOptional(t, p + "self_attn.o_proj.bias", {H}));
  ENGRAM_ASSIGN_OR_RETURN(out->post_attention_layernorm,
                          LoadWeight(t, p + "post_attention_layernorm.weight", {H}));
  ENGRAM_ASSIGN_OR_RETURN(out->gate_proj, LoadWeight(t, p + "mlp.gate_proj.weight", {I, H}));
  ENGRAM_ASSIGN_OR_RETURN(out->up_proj, LoadWeight(t, p + "mlp.up_proj.weight", {I, H}));
  ENGRAM_ASSIGN_OR_RETURN(out->down_proj, LoadWeight(t, p + "mlp.down_proj.weight", {H, I}));
  return absl::OkStatus();
}

absl::StatusOr<BackboneWeights> LoadAll(const SafetensorsDir& t, const ModelConfig& c) {
  const int64_t V = c.vocab_size, H = c.hidden_size;
  BackboneWeights w;
  ENGRAM_ASSIGN_OR_RETURN(w.embed_tokens, LoadWeight(t, "model.embed_tokens.weight", {V, H}));
  // Layer by layer, so a config that names more layers than the files hold fails on the first
  // missing tensor instead of allocating num_hidden_layers entries up front.
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    ENGRAM_RETURN_IF_ERROR(LoadLayer(t, c, i, &w.layers.emplace_back()));
  }
  ENGRAM_ASSIGN_OR_RETURN(w.norm, LoadWeight(t, "model.norm.weight", {H}));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed_tokens;
  } else {
    if (t.Find("lm_head.weight") == nullptr) {
      return absl::NotFoundError(
          "tensor lm_head.weight is missing and tie_word_embeddings is false in config.json");
    }
    ENGRAM_ASSIGN_OR_RETURN(w.lm_head, LoadWeight(t, "lm_head.weight", {V, H}));
  }
  return w;
}

}  // namespace

absl::StatusOr<BackboneWeights> LoadBackboneWeights(const SafetensorsDir& tensors,
                                                    const ModelConfig& config) {
  absl::StatusOr<BackboneWeights> w = LoadAll(tensors, config);
  if (!w.ok()) return Annotate(w.status(), "loading backbone weights");
  return w;
}

}  // namespace engram
