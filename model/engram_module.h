// The Engram module forward pass on the CPU (f32), exactly as the reference computes it
// (docs/engram-reference.md §1.5-1.6, the demo's `Engram.forward` and `ShortConv`).
//
// Per position t, with e_t the gathered rows concatenated in column order ([d_mem]):
//   v     = W_V e_t + b_V                                          [H]  (shared by the branches)
//   per branch m < hc_mult:
//   k_m   = W_K^(m) e_t + b_K^(m)                                  [H]
//   s_m   = < RMSNorm1^(m)(k_m), RMSNorm2^(m)(h_{t,m}) > / sqrt(H)
//   a_m   = sigmoid(sign(s_m) * sqrt(max(|s_m|, 1e-6)))
//   u_m   = a_m * v
//   Y     = u + SiLU(DepthwiseCausalConv(RMSNorm3^(m)(u_m)))   (or Y = u without the conv)
// The caller adds Y to its hidden state (h += Y). Gate RMSNorms use eps = FLT_EPSILON (the
// reference builds nn.RMSNorm(H) with eps=None, which is torch.finfo(float32).eps); the conv's
// RMSNorms use eps = 1e-5 (ShortConv's norm_eps default). The conv is depthwise over hc_mult * H
// channels, kernel K = kernel_size, dilation = max_ngram_size: output t mixes normalised inputs at
// t, t-d, ..., t-(K-1)d (zeros before the sequence start). Weights load from the reference's module
// names, so a model trained with the reference module loads as is (contract 2 of
// docs/architecture.md).
//
// The module does not fetch rows: the caller passes them in (the worker gets them from the memory
// tier, `engram check-module` from the table in the file).
#ifndef ENGRAM_MODEL_ENGRAM_MODULE_H_
#define ENGRAM_MODEL_ENGRAM_MODULE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/engram_config.h"
#include "common/safetensors.h"

namespace engram {

// Gate RMSNorm eps: torch.finfo(torch.float32).eps, the default of nn.RMSNorm(H) in the reference.
inline constexpr float kEngramGateNormEps = 1.1920928955078125e-07f;
// ShortConv RMSNorm eps (the reference's norm_eps default).
inline constexpr float kEngramConvNormEps = 1e-5f;
// Lower clamp of |s| before the signed square root.
inline constexpr float kEngramGateClamp = 1e-6f;

// The module's small weights, all f32, row-major (PyTorch layouts). H = hidden_size,
// M = hc_mult, D = d_mem = (max_ngram_size - 1) * n_heads * head_dim, K = kernel_size.
struct EngramModuleWeights {
  int hidden_size = 0;                   // H
  int hc_mult = 1;                       // M
  int d_mem = 0;                         // D
  int kernel_size = 0;                   // K; 0 = no conv
  int dilation = 1;                      // = max_ngram_size
  std::vector<float> value_proj_weight;  // [H, D]      value_proj.weight
  std::vector<float> value_proj_bias;    // [H]         value_proj.bias (zeros when absent)
  std::vector<float> key_proj_weight;    // [M, H, D]   key_projs.{m}.weight
  std::vector<float> key_proj_bias;      // [M, H]      key_projs.{m}.bias (zeros when absent)
  std::vector<float> key_norm_weight;    // [M, H]      norm1.{m}.weight
  std::vector<float> query_norm_weight;  // [M, H]      norm2.{m}.weight
  std::vector<float> conv_weight;        // [M * H, K]  short_conv.conv.weight ([M*H, 1, K] on disk)
  std::vector<float> conv_norm_weight;   // [M, H]      short_conv.norms.{m}.weight

  // Checks every size against the dimensions; the message names the field.
  absl::Status Validate() const;
};

// Finds a tensor by its full name; nullptr when absent. Adapters for the safetensors readers below.
using TensorLookup = std::function<const TensorView*(absl::string_view name)>;
TensorLookup LookupIn(const SafetensorsFile& file);
TensorLookup LookupIn(const SafetensorsDir& dir);

// Loads `<prefix>value_proj.weight`, `<prefix>key_projs.{m}.weight`, `<prefix>norm1.{m}.weight`,
// `<prefix>norm2.{m}.weight`, `<prefix>short_conv.conv.weight`,
// `<prefix>short_conv.norms.{m}.weight`
// (+ the optional .bias of each Linear), e.g. prefix "model.layers.1.engram.", in any float dtype
// (F64, F32, F16, BF16), converted to f32. Dimensions come from `config` (hidden_size, hc_mult,
// kernel_size, max_ngram_size, n_heads, head_dim). NOT_FOUND / INVALID_ARGUMENT naming the tensor
// when one is missing or mis-shaped. The table (multi_head_embedding.embedding.weight) is not
// loaded.
absl::StatusOr<EngramModuleWeights> LoadEngramModuleWeights(const TensorLookup& lookup,
                                                            const std::string& prefix,
                                                            const EngramConfig& config);

// Per-sequence history of the depthwise conv: the normalised conv inputs of the last
// (K-1) * dilation positions. Create with EngramModule::NewConvState; empty when the conv is off.
struct EngramConvState {
  std::vector<float> history;  // ring of [(K-1) * dilation, M * H]; zeros = before the start
  int64_t positions = 0;       // positions processed so far (the ring's write cursor)

  // Back to a sequence start.
  void Reset();
};

class EngramModule {
 public:
  // Validates the weights.
  static absl::StatusOr<EngramModule> Create(EngramModuleWeights weights);

  int d_mem() const { return w_.d_mem; }
  bool has_conv() const { return w_.kernel_size > 0; }
  const EngramModuleWeights& weights() const { return w_; }

  // A fresh conv state for a new sequence (history of zeros; empty when !has_conv()).
  EngramConvState NewConvState() const;

  // T consecutive positions of one sequence.
  //   rows:   [T, d_mem]        the gathered rows of each position, concatenated in column order
  //   hidden: [T, hc_mult, H]   the hidden state before the module
  //   out:    [T, hc_mult, H]   Y (the caller does h += Y); may not alias rows or hidden
  // conv_state: the sequence's conv history, advanced by T positions, so a prompt processed in
  // chunks and then token by token gives the same Y as one call over the whole sequence. nullptr
  // means a fresh sequence whose history is not kept (one-shot use); ignored when !has_conv().
  // INVALID_ARGUMENT for T < 0 or a conv state of the wrong size. Thread-safe (const).
  absl::Status Forward(const float* rows, const float* hidden, int T, EngramConvState* conv_state,
                       float* out) const;

 private:
  explicit EngramModule(EngramModuleWeights weights) : w_(std::move(weights)) {}

  EngramModuleWeights w_;
};

}  // namespace engram

#endif  // ENGRAM_MODEL_ENGRAM_MODULE_H_
