#include "model/cpu_backbone.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "model/cpu_ops.h"
#include "model/engram_module.h"
#include "model/model.h"
#include "model/sampler.h"
#include "model/thread_pool.h"

namespace engram {

CpuSequenceState::CpuSequenceState(const ModelConfig& config, int max_tokens)
    : SequenceState(max_tokens),
      kv_(config.num_hidden_layers, config.num_key_value_heads, config.head_dim, max_tokens) {}

CpuSequenceState::~CpuSequenceState() = default;

// Activations of one step, reused across steps so a decode step allocates nothing once warm.
struct CpuBackbone::Scratch {
  std::vector<float> h;         // (T, H) residual stream
  std::vector<float> xn;        // (T, H) normalised input of a sub-block
  std::vector<float> q;         // (T, Nq*D)
  std::vector<float> k;         // (T, Nkv*D)
  std::vector<float> v;         // (T, Nkv*D)
  std::vector<float> att;       // (T, Nq*D)
  std::vector<float> proj;      // (T, H) output of o_proj / down_proj
  std::vector<float> gate;      // (T, I)
  std::vector<float> up;        // (T, I)
  std::vector<float> rope_cos;  // (T, D/2) RoPE angles of each token's position
  std::vector<float> rope_sin;  // (T, D/2)
  std::vector<float> engram;    // (T_item, H) Y of one item's Engram module
  std::vector<float> last;      // (items, H) last token of each item
  std::vector<float> logits;    // (items, V)
};

CpuBackbone::CpuBackbone(const Model& model, CpuBackboneOptions options)
    : CpuBackbone(model.config(), model.weights(), model.engram_modules(), options) {}

CpuBackbone::CpuBackbone(const ModelConfig& config, const BackboneWeights& weights,
                         std::vector<const EngramModule*> engram_modules,
                         CpuBackboneOptions options)
    : config_(config),
      weights_(weights),
      engram_modules_(std::move(engram_modules)),
      engram_index_of_layer_(config.num_hidden_layers, -1),
      pool_(std::make_unique<ThreadPool>(options.threads > 0 ? options.threads
                                                             : DefaultThreadCount())),
      scratch_(std::make_unique<Scratch>()) {
  for (size_t i = 0; i < config_.engram.layer_ids.size(); ++i) {
    engram_index_of_layer_[config_.engram.layer_ids[i]] = static_cast<int>(i);
  }
}

CpuBackbone::~CpuBackbone() = default;

std::unique_ptr<SequenceState> CpuBackbone::NewSequence(int max_tokens) {
  max_tokens = std::clamp(max_tokens, 1, config_.max_position_embeddings);
  std::unique_ptr<CpuSequenceState> s(new CpuSequenceState(config_, max_tokens));
  for (const EngramModule* module : engram_modules_) {
    s->conv_.push_back(
        module->has_conv() ? std::make_unique<EngramConvState>(module->NewConvState()) : nullptr);
  }
  return s;
}

absl::Status CpuBackbone::Forward(absl::Span<const BatchItem> items, EngramRowSource& rows,
                                  float* logits, std::vector<absl::Status>* item_status) {
  if (logits == nullptr || item_status == nullptr) {
    return absl::InvalidArgumentError("Forward: logits and item_status must not be null");
  }
  StepOutput checked;
  ENGRAM_RETURN_IF_ERROR(ValidateBatch(items, config_.vocab_size, &checked));
  *item_status = std::move(checked.status);
  auto state = [&](size_t i) -> CpuSequenceState& {
    return static_cast<CpuSequenceState&>(*items[i].sequence);
  };
  const int64_t H = config_.hidden_size, I = config_.intermediate_size, V = config_.vocab_size;
  const int Nq = config_.num_attention_heads, Nkv = config_.num_key_value_heads;
  const int D = config_.head_dim;
  const int64_t Q = config_.q_width(), KV = config_.kv_width();
  const size_t n_items = items.size();

  // ---- Admission: place the items that can run in the batch's token rows ---------------------
  std::vector<int64_t> row0(n_items, 0);  // first row of each item in the (T, ...) activations
  int64_t T = 0;
  for (size_t i = 0; i < n_items; ++i) {
    absl::Status& st = (*item_status)[i];
    if (st.ok()) {
      st = state(i).kv_.Reserve(state(i).position_ + static_cast<int>(items[i].tokens.size()));
    }
    row0[i] = T;
    if (st.ok()) T += static_cast<int64_t>(items[i].tokens.size());
  }
  if (T == 0) return absl::OkStatus();
  auto live = [&](size_t i) { return (*item_status)[i].ok(); };
  // Conv histories advance inside the Engram layers; a failed item gets its old ones back.
  std::vector<std::vector<EngramConvState>> saved_conv(n_items);
  for (size_t i = 0; i < n_items; ++i) {
    if (!live(i)) continue;
    for (const auto& c : state(i).conv_)
      saved_conv[i].push_back(c ? *c : EngramConvState{});
  }

  Scratch& s = *scratch_;
  s.h.resize(T * H);
  s.xn.resize(T * H);
  s.q.resize(T * Q);
  s.k.resize(T * KV);
  s.v.resize(T * KV);
  s.att.resize(T * Q);
  s.proj.resize(T * H);
  s.gate.resize(T * I);
  s.up.resize(T * I);
  s.rope_cos.resize(T * (D / 2));
  s.rope_sin.resize(T * (D / 2));
  ThreadPool* pool = pool_.get();
  // RoPE angles: the same positions in every layer, for queries and keys alike.
  for (size_t i = 0; i < n_items; ++i) {
    if (!live(i)) continue;
    RopeAngles(static_cast<int64_t>(items[i].tokens.size()), D, state(i).position_,
               config_.rope_theta, &s.rope_cos[row0[i] * (D / 2)], &s.rope_sin[row0[i] * (D / 2)]);
  }

  // ---- Embedding: h = embed_tokens[tokens]                                     (T, H) ----------
  for (size_t i = 0; i < n_items; ++i) {
    if (!live(i)) continue;
    for (size_t j = 0; j < items[i].tokens.size(); ++j) {
      std::memcpy(&s.h[(row0[i] + j) * H], weights_.embed_tokens.data + items[i].tokens[j] * H,
                  H * sizeof(float));
    }
  }

  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];

    // ---- Engram (hc_mult = 1): h += Engram(rows, h), per item, before attention ------------
    if (const int li = engram_index_of_layer_[l]; li >= 0) {
      const EngramModule& module = *engram_modules_[li];
      for (size_t i = 0; i < n_items; ++i) {
        if (!live(i)) continue;
        const int n = static_cast<int>(items[i].tokens.size());
        float* h_i = &s.h[row0[i] * H];                                // (n, H)
        absl::StatusOr<absl::Span<const float>> r = rows.Rows(i, li);  // (n, d_mem)
        if (r.ok() && r->size() != size_t(n) * module.d_mem()) {
          r = absl::InternalError(absl::StrCat("Engram row source returned ", r->size(),
                                               " floats for layer ", l, ", expected ",
                                               size_t(n) * module.d_mem()));
        }
        if (!r.ok()) {
          (*item_status)[i] = r.status();
          continue;
        }
        s.engram.resize(n * H);
        absl::Status st = module.Forward(r->data(), h_i, n, state(i).conv_[li].get(),
                                         s.engram.data());  // Y: (n, H)
        if (!st.ok()) {
          (*item_status)[i] = Annotate(st, absl::StrCat("Engram layer ", l));
          continue;
        }
        AddInPlace(h_i, s.engram.data(), n * H);
      }
    }

    // ---- Attention: h += o_proj(GQA(RoPE(q), RoPE(k), v)) of RMSNorm(h) ---------------------
    RmsNorm(s.h.data(), w.input_layernorm.data, T, H, config_.rms_norm_eps, s.xn.data());  // (T, H)
    MatMul(pool, s.xn.data(), w.q_proj.data, w.q_bias.data, T, H, Q, s.q.data());   // (T, Nq*D)
    MatMul(pool, s.xn.data(), w.k_proj.data, w.k_bias.data, T, H, KV, s.k.data());  // (T, Nkv*D)
    MatMul(pool, s.xn.data(), w.v_proj.data, w.v_bias.data, T, H, KV, s.v.data());  // (T, Nkv*D)
    for (size_t i = 0; i < n_items; ++i) {
      if (!live(i)) continue;
      CpuSequenceState& seq = state(i);
      const int n = static_cast<int>(items[i].tokens.size());
      const int pos = seq.position_;
      float* q_i = &s.q[row0[i] * Q];   // (n, Nq, D)
      float* k_i = &s.k[row0[i] * KV];  // (n, Nkv, D)
      const float* cos = &s.rope_cos[row0[i] * (D / 2)];
      const float* sin = &s.rope_sin[row0[i] * (D / 2)];
      ApplyRopeAngles(q_i, n, Nq, D, cos, sin);
      ApplyRopeAngles(k_i, n, Nkv, D, cos, sin);
      for (int j = 0; j < n; ++j) {  // cache[pos + j] = k, v
        std::memcpy(seq.kv_.Keys(l, pos + j), k_i + j * KV, KV * sizeof(float));
        std::memcpy(seq.kv_.Values(l, pos + j), &s.v[(row0[i] + j) * KV], KV * sizeof(float));
      }
      Attention(pool, q_i, seq.kv_, l, n, pos, Nq, Nkv, D, &s.att[row0[i] * Q]);  // (n, Nq*D)
    }
    MatMul(pool, s.att.data(), w.o_proj.data, w.o_bias.data, T, Q, H, s.proj.data());  // (T, H)
    AddInPlace(s.h.data(), s.proj.data(), T * H);

    // ---- MLP: h += down_proj(SiLU(gate_proj(x)) * up_proj(x)), x = RMSNorm(h) --------------
    RmsNorm(s.h.data(), w.post_attention_layernorm.data, T, H, config_.rms_norm_eps,
            s.xn.data());                                                            // (T, H)
    MatMul(pool, s.xn.data(), w.gate_proj.data, nullptr, T, H, I, s.gate.data());    // (T, I)
    MatMul(pool, s.xn.data(), w.up_proj.data, nullptr, T, H, I, s.up.data());        // (T, I)
    SwiGlu(s.gate.data(), s.up.data(), T * I);                                       // (T, I)
    MatMul(pool, s.gate.data(), w.down_proj.data, nullptr, T, I, H, s.proj.data());  // (T, H)
    AddInPlace(s.h.data(), s.proj.data(), T * H);
  }

  // ---- Head: logits of each item's last token = lm_head(RMSNorm(h_last))       (items, V) ----
  std::vector<size_t> done;
  for (size_t i = 0; i < n_items; ++i) {
    if (live(i)) done.push_back(i);
  }
  const int64_t B = static_cast<int64_t>(done.size());
  s.last.resize(B * H);
  for (int64_t b = 0; b < B; ++b) {
    const size_t i = done[b];
    const int64_t last_row = row0[i] + static_cast<int64_t>(items[i].tokens.size()) - 1;
    std::memcpy(&s.last[b * H], &s.h[last_row * H], H * sizeof(float));
  }
  RmsNorm(s.last.data(), weights_.norm.data, B, H, config_.rms_norm_eps, s.last.data());  // (B, H)
  s.logits.resize(B * V);
  MatMul(pool, s.last.data(), weights_.lm_head.data, nullptr, B, H, V, s.logits.data());  // (B, V)
  for (int64_t b = 0; b < B; ++b) {
    std::memcpy(logits + done[b] * V, &s.logits[b * V], V * sizeof(float));
  }

  // ---- Commit: live items advance; failed ones keep their position and conv histories -------
  for (size_t i = 0; i < n_items; ++i) {
    CpuSequenceState& seq = state(i);
    if (live(i)) {
      seq.position_ += static_cast<int>(items[i].tokens.size());
    } else if (!saved_conv[i].empty()) {
      for (size_t li = 0; li < seq.conv_.size(); ++li) {
        if (seq.conv_[li]) *seq.conv_[li] = std::move(saved_conv[i][li]);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackbone::Step(absl::Span<const BatchItem> items, EngramRowSource& rows,
                               StepOutput* out) {
  if (out == nullptr) return absl::InvalidArgumentError("Step: out must not be null");
  const size_t V = static_cast<size_t>(config_.vocab_size);
  float* logits = out->logits;
  if (logits == nullptr) {
    step_logits_.resize(items.size() * V);
    logits = step_logits_.data();
  }
  ENGRAM_RETURN_IF_ERROR(Forward(items, rows, logits, &out->status));
  out->tokens.assign(items.size(), 0);
  for (size_t i = 0; i < items.size(); ++i) {
    if (!out->status[i].ok() || items[i].sampler == nullptr) continue;
    out->tokens[i] = items[i].sampler->Sample(absl::MakeConstSpan(logits + i * V, V));
  }
  return absl::OkStatus();
}

}  // namespace engram
