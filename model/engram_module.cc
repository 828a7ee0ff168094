#include "model/engram_module.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "model/cpu_ops.h"

namespace engram {
namespace {

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// The reference's gate: sigmoid(sign(s) * sqrt(max(|s|, 1e-6))); sign(0) = 0 gives exactly 0.5.
float Gate(float s) {
  const float sign = s > 0 ? 1.0f : (s < 0 ? -1.0f : 0.0f);
  return Sigmoid(std::sqrt(std::max(std::fabs(s), kEngramGateClamp)) * sign);
}

absl::Status CheckSize(const std::vector<float>& v, size_t expected, absl::string_view field) {
  if (v.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("Engram module weight ", field, " has ",
                                                   v.size(), " values, expected ", expected));
  }
  return absl::OkStatus();
}

// Loads one tensor as f32 after checking its shape. Absent optional tensors give `fallback`.
absl::StatusOr<std::vector<float>> LoadF32(const TensorLookup& lookup, const std::string& name,
                                           std::vector<int64_t> shape, bool required,
                                           size_t fallback_zeros = 0) {
  const TensorView* t = lookup(name);
  if (t == nullptr) {
    if (!required) return std::vector<float>(fallback_zeros, 0.0f);
    return absl::NotFoundError(absl::StrCat("Engram module tensor ", name, " is missing"));
  }
  ENGRAM_RETURN_IF_ERROR(ExpectShape(*t, shape));
  auto values = TensorToF32(*t);
  if (!values.ok()) return Annotate(values.status(), name);
  return values;
}

// Appends tensor `name` to `dst`.
absl::Status Append(const TensorLookup& lookup, const std::string& name, std::vector<int64_t> shape,
                    bool required, std::vector<float>* dst) {
  size_t count = 1;
  for (int64_t d : shape) count *= static_cast<size_t>(d);
  ENGRAM_ASSIGN_OR_RETURN(std::vector<float> v, LoadF32(lookup, name, shape, required, count));
  dst->insert(dst->end(), v.begin(), v.end());
  return absl::OkStatus();
}

}  // namespace

absl::Status EngramModuleWeights::Validate() const {
  if (hidden_size < 1) return absl::InvalidArgumentError("Engram module: hidden_size must be >= 1");
  if (hc_mult < 1) return absl::InvalidArgumentError("Engram module: hc_mult must be >= 1");
  if (d_mem < 1) return absl::InvalidArgumentError("Engram module: d_mem must be >= 1");
  if (kernel_size < 0) return absl::InvalidArgumentError("Engram module: kernel_size must be >= 0");
  if (dilation < 1) return absl::InvalidArgumentError("Engram module: dilation must be >= 1");
  const size_t h = hidden_size, m = hc_mult, d = d_mem, k = kernel_size;
  ENGRAM_RETURN_IF_ERROR(CheckSize(value_proj_weight, h * d, "value_proj.weight"));
  ENGRAM_RETURN_IF_ERROR(CheckSize(value_proj_bias, h, "value_proj.bias"));
  ENGRAM_RETURN_IF_ERROR(CheckSize(key_proj_weight, m * h * d, "key_projs.*.weight"));
  ENGRAM_RETURN_IF_ERROR(CheckSize(key_proj_bias, m * h, "key_projs.*.bias"));
  ENGRAM_RETURN_IF_ERROR(CheckSize(key_norm_weight, m * h, "norm1.*.weight"));
  ENGRAM_RETURN_IF_ERROR(CheckSize(query_norm_weight, m * h, "norm2.*.weight"));
  ENGRAM_RETURN_IF_ERROR(CheckSize(conv_weight, m * h * k, "short_conv.conv.weight"));
  ENGRAM_RETURN_IF_ERROR(
      CheckSize(conv_norm_weight, k > 0 ? m * h : 0, "short_conv.norms.*.weight"));
  return absl::OkStatus();
}

TensorLookup LookupIn(const SafetensorsFile& file) {
  return [&file](absl::string_view name) { return file.Find(name); };
}

TensorLookup LookupIn(const SafetensorsDir& dir) {
  return [&dir](absl::string_view name) { return dir.Find(name); };
}

absl::StatusOr<EngramModuleWeights> LoadEngramModuleWeights(const TensorLookup& lookup,
                                                            const std::string& prefix,
                                                            const EngramConfig& config) {
  ENGRAM_RETURN_IF_ERROR(config.Validate());
  if (config.hidden_size < 1) {
    return absl::InvalidArgumentError("config key hidden_size: the Engram module needs it (>= 1)");
  }
  EngramModuleWeights w;
  w.hidden_size = config.hidden_size;
  w.hc_mult = config.hc_mult;
  w.d_mem = config.d_mem();
  w.kernel_size = config.kernel_size;
  w.dilation = config.max_ngram_size;
  const int64_t h = w.hidden_size, d = w.d_mem;
  // Biases are optional: the reference's Linears have them, bias-free checkpoints load as zeros.
  ENGRAM_ASSIGN_OR_RETURN(w.value_proj_weight,
                          LoadF32(lookup, prefix + "value_proj.weight", {h, d}, true));
  ENGRAM_ASSIGN_OR_RETURN(w.value_proj_bias,
                          LoadF32(lookup, prefix + "value_proj.bias", {h}, false, h));
  for (int m = 0; m < w.hc_mult; ++m) {
    const std::string b = absl::StrCat(m);
    ENGRAM_RETURN_IF_ERROR(
        Append(lookup, prefix + "key_projs." + b + ".weight", {h, d}, true, &w.key_proj_weight));
    ENGRAM_RETURN_IF_ERROR(
        Append(lookup, prefix + "key_projs." + b + ".bias", {h}, false, &w.key_proj_bias));
    ENGRAM_RETURN_IF_ERROR(
        Append(lookup, prefix + "norm1." + b + ".weight", {h}, true, &w.key_norm_weight));
    ENGRAM_RETURN_IF_ERROR(
        Append(lookup, prefix + "norm2." + b + ".weight", {h}, true, &w.query_norm_weight));
    if (w.kernel_size > 0) {
      ENGRAM_RETURN_IF_ERROR(Append(lookup, prefix + "short_conv.norms." + b + ".weight", {h}, true,
                                    &w.conv_norm_weight));
    }
  }
  if (w.kernel_size > 0) {
    ENGRAM_ASSIGN_OR_RETURN(w.conv_weight,
                            LoadF32(lookup, prefix + "short_conv.conv.weight",
                                    {int64_t{w.hc_mult} * h, 1, w.kernel_size}, true));
  }
  ENGRAM_RETURN_IF_ERROR(w.Validate());
  return w;
}

void EngramConvState::Reset() {
  std::fill(history.begin(), history.end(), 0.0f);
  positions = 0;
}

absl::StatusOr<EngramModule> EngramModule::Create(EngramModuleWeights weights) {
  ENGRAM_RETURN_IF_ERROR(weights.Validate());
  return EngramModule(std::move(weights));
}

EngramConvState EngramModule::NewConvState() const {
  EngramConvState state;
  if (has_conv()) {
    state.history.assign(
        static_cast<size_t>(w_.kernel_size - 1) * w_.dilation * w_.hc_mult * w_.hidden_size, 0.0f);
  }
  return state;
}

absl::Status EngramModule::Forward(const float* rows, const float* hidden, int T,
                                   EngramConvState* conv_state, float* out) const {
  if (T < 0) return absl::InvalidArgumentError(absl::StrCat("Engram module: T = ", T));
  if (T == 0) return absl::OkStatus();
  const int H = w_.hidden_size, M = w_.hc_mult, D = w_.d_mem;
  const size_t C = static_cast<size_t>(M) * H;  // channels of the conv: branches side by side

  // value = W_V e + b_V; shared by the branches.                             value: [T, H]
  std::vector<float> value(static_cast<size_t>(T) * H);
  for (int o = 0; o < H; ++o) {
    const float* w = w_.value_proj_weight.data() + static_cast<size_t>(o) * D;
    for (int t = 0; t < T; ++t) {
      value[static_cast<size_t>(t) * H + o] =
          Dot(w, rows + static_cast<size_t>(t) * D, D) + w_.value_proj_bias[o];
    }
  }

  // Per branch: key, the two RMSNorms, the gate; u = gate * value written to out. out: [T, M, H]
  std::vector<float> key(static_cast<size_t>(T) * H), normed_key(H), normed_query(H);
  const float inv_sqrt_h = 1.0f / std::sqrt(static_cast<float>(H));
  for (int m = 0; m < M; ++m) {
    const size_t wm = static_cast<size_t>(m) * H;
    for (int o = 0; o < H; ++o) {
      const float* w = w_.key_proj_weight.data() + (wm + o) * D;
      for (int t = 0; t < T; ++t) {
        key[static_cast<size_t>(t) * H + o] =
            Dot(w, rows + static_cast<size_t>(t) * D, D) + w_.key_proj_bias[wm + o];
      }
    }
    for (int t = 0; t < T; ++t) {
      const size_t row = static_cast<size_t>(t) * C + wm;  // (t, m) in [T, M, H]
      RmsNorm(key.data() + static_cast<size_t>(t) * H, w_.key_norm_weight.data() + wm, 1, H,
              kEngramGateNormEps, normed_key.data());
      RmsNorm(hidden + row, w_.query_norm_weight.data() + wm, 1, H, kEngramGateNormEps,
              normed_query.data());
      const float gate = Gate(Dot(normed_key.data(), normed_query.data(), H) * inv_sqrt_h);
      for (int i = 0; i < H; ++i) out[row + i] = gate * value[static_cast<size_t>(t) * H + i];
    }
  }
  if (!has_conv()) return absl::OkStatus();

  // Short conv: Y = u + SiLU(conv(RMSNorm_m(u))), causal, over this chunk plus the history.
  EngramConvState local;
  if (conv_state == nullptr) {
    local = NewConvState();
    conv_state = &local;
  }
  const int K = w_.kernel_size, dil = w_.dilation;
  const int64_t ring = static_cast<int64_t>(K - 1) * dil;  // positions of history kept
  if (conv_state->history.size() != static_cast<size_t>(ring) * C) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Engram conv state holds ", conv_state->history.size(), " values, expected ",
        static_cast<size_t>(ring) * C, " (create it with EngramModule::NewConvState)"));
  }
  std::vector<float> normed(static_cast<size_t>(T) * C);  // [T, M*H]
  for (int t = 0; t < T; ++t) {
    for (int m = 0; m < M; ++m) {
      const size_t at = static_cast<size_t>(t) * C + static_cast<size_t>(m) * H;
      RmsNorm(out + at, w_.conv_norm_weight.data() + static_cast<size_t>(m) * H, 1, H,
              kEngramConvNormEps, normed.data() + at);
    }
  }
  const int64_t start = conv_state->positions;   // absolute position of t = 0
  auto input = [&](int64_t q) -> const float* {  // normalised conv input at absolute position q
    if (q >= start) return normed.data() + static_cast<size_t>(q - start) * C;
    return conv_state->history.data() + static_cast<size_t>(q % ring) * C;
  };
  std::vector<float> acc(C);
  for (int t = 0; t < T; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    // PyTorch pads (K-1)*dil zeros on the left: tap j reads position t - (K-1-j)*dil.
    for (int j = 0; j < K; ++j) {
      const int64_t q = start + t - static_cast<int64_t>(K - 1 - j) * dil;
      if (q < 0) continue;
      const float* x = input(q);
      for (size_t c = 0; c < C; ++c) acc[c] += w_.conv_weight[c * K + j] * x[c];
    }
    float* y = out + static_cast<size_t>(t) * C;
    for (size_t c = 0; c < C; ++c) y[c] += acc[c] * Sigmoid(acc[c]);  // SiLU
  }
  for (int64_t q = std::max(start, start + T - ring); q < start + T; ++q) {
    std::copy_n(normed.data() + static_cast<size_t>(q - start) * C, C,
                conv_state->history.data() + static_cast<size_t>(q % ring) * C);
  }
  conv_state->positions = start + T;
  return absl::OkStatus();
}

}  // namespace engram
