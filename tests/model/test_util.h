// Helpers shared by the model tests: the golden backbone model (tests/golden/backbone/model) loaded
// without a tokenizer, and an EngramRowSource over rows prepared by the test.
#ifndef ENGRAM_TESTS_MODEL_TEST_UTIL_H_
#define ENGRAM_TESTS_MODEL_TEST_UTIL_H_

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "model/cpu_backbone.h"
#include "model/engram_module.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace engram::testing_util {

inline std::string SourceDir() {
  const char* src = std::getenv("ENGRAM_SOURCE_DIR");
  return src ? src : ".";
}

inline std::string GoldenDir() { return SourceDir() + "/tests/golden/backbone"; }

// Config, weights and Engram modules of a model directory, for CpuBackbone's Model-free
// constructor.
struct LoadedModel {
  ModelConfig config;
  std::unique_ptr<SafetensorsDir> tensors;
  BackboneWeights weights;
  std::vector<std::unique_ptr<EngramModule>> modules;

  std::vector<const EngramModule*> module_ptrs() const {
    std::vector<const EngramModule*> out;
    for (const auto& m : modules) out.push_back(m.get());
    return out;
  }
};

inline absl::StatusOr<std::unique_ptr<LoadedModel>> LoadModelDir(const std::string& dir) {
  auto m = std::make_unique<LoadedModel>();
  ENGRAM_ASSIGN_OR_RETURN(m->config, LoadModelConfig(dir));
  ENGRAM_ASSIGN_OR_RETURN(m->tensors, SafetensorsDir::Open(dir));
  ENGRAM_ASSIGN_OR_RETURN(m->weights, LoadBackboneWeights(*m->tensors, m->config));
  for (int id : m->config.engram.layer_ids) {
    ENGRAM_ASSIGN_OR_RETURN(
        EngramModuleWeights w,
        LoadEngramModuleWeights(LookupIn(*m->tensors),
                                absl::StrCat("model.layers.", id, ".engram."), m->config.engram));
    ENGRAM_ASSIGN_OR_RETURN(EngramModule module, EngramModule::Create(std::move(w)));
    m->modules.push_back(std::make_unique<EngramModule>(std::move(module)));
  }
  return m;
}

// The golden file of tests/golden/backbone (make_golden.py): input ids, the Engram rows of each
// layer, the float64 PyTorch logits of every position, and the same with the CUDA backbone's bf16
// roundings emulated (logits_bf16).
struct BackboneGolden {
  int B = 0, L = 0, V = 0, d_mem = 0;
  std::vector<std::vector<uint32_t>> ids;  // [b][t]
  std::vector<std::vector<float>> rows;    // [layer] (B, L, d_mem)
  std::vector<float> logits;               // (B, L, V)
  std::vector<float> logits_bf16;          // (B, L, V)

  const float* Rows(int layer, int b, int t) const {
    return &rows[layer][(size_t(b) * L + t) * d_mem];
  }
  const float* Logits(int b, int t) const { return &logits[(size_t(b) * L + t) * V]; }
  const float* LogitsBf16(int b, int t) const { return &logits_bf16[(size_t(b) * L + t) * V]; }
  // Rows of sequence b, positions [start, start + n), of every Engram layer.
  std::vector<std::vector<float>> RowsOf(int b, int start, int n) const {
    std::vector<std::vector<float>> out;
    for (size_t l = 0; l < rows.size(); ++l) {
      const float* r = Rows(static_cast<int>(l), b, start);
      out.emplace_back(r, r + size_t(n) * d_mem);
    }
    return out;
  }
};

inline absl::StatusOr<BackboneGolden> ReadBackboneGolden(int n_layers) {
  BackboneGolden g;
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                          SafetensorsFile::Open(GoldenDir() + "/golden.safetensors"));
  const TensorView* ids = file->Find("input_ids");
  const TensorView* logits = file->Find("logits");
  if (!ids || !logits || ids->dtype != DType::kI32) {
    return absl::InvalidArgumentError("golden.safetensors lacks input_ids (i32) or logits");
  }
  g.B = ids->shape[0];
  g.L = ids->shape[1];
  g.V = logits->shape[2];
  for (int b = 0; b < g.B; ++b) {
    g.ids.emplace_back();
    for (int t = 0; t < g.L; ++t) {
      int32_t v;
      std::memcpy(&v, ids->data + (size_t(b) * g.L + t) * 4, 4);
      g.ids.back().push_back(static_cast<uint32_t>(v));
    }
  }
  ENGRAM_ASSIGN_OR_RETURN(g.logits, TensorToF32(*logits));
  const TensorView* logits_bf16 = file->Find("logits_bf16");
  if (logits_bf16 == nullptr) return absl::NotFoundError("golden.safetensors lacks logits_bf16");
  ENGRAM_ASSIGN_OR_RETURN(g.logits_bf16, TensorToF32(*logits_bf16));
  for (int l = 0; l < n_layers; ++l) {
    const TensorView* r = file->Find(absl::StrCat("engram_rows.", l));
    if (r == nullptr) return absl::NotFoundError(absl::StrCat("engram_rows.", l, " is missing"));
    g.d_mem = r->shape[2];
    ENGRAM_ASSIGN_OR_RETURN(std::vector<float> rows, TensorToF32(*r));
    g.rows.push_back(std::move(rows));
  }
  return g;
}

// Rows handed over per (item, engram layer index); errors injected per (item, layer).
class FixedRowSource : public EngramRowSource {
 public:
  // rows[item][layer]: (tokens, d_mem).
  std::vector<std::vector<std::vector<float>>> rows;
  std::map<std::pair<size_t, int>, absl::Status> errors;
  std::vector<std::pair<size_t, int>> calls;

  absl::StatusOr<absl::Span<const float>> Rows(size_t item, int layer) override {
    calls.emplace_back(item, layer);
    if (auto it = errors.find({item, layer}); it != errors.end()) return it->second;
    return absl::MakeConstSpan(rows.at(item).at(layer));
  }
};

// Deterministic rows of a sequence `seq` at absolute positions [start, start + n) of one layer: a
// pure function of (seq, layer, position), so any chunking sees the same rows.
inline std::vector<float> SyntheticRows(int seq, int layer, int start, int n, int d_mem) {
  std::vector<float> out(size_t(n) * d_mem);
  for (int t = 0; t < n; ++t) {
    for (int j = 0; j < d_mem; ++j) {
      double x = 0.37 * (start + t) + 0.11 * j + 1.7 * layer + 2.3 * seq;
      out[size_t(t) * d_mem + j] = static_cast<float>(std::sin(x) + 0.5 * std::cos(3.1 * x));
    }
  }
  return out;
}

}  // namespace engram::testing_util

#endif  // ENGRAM_TESTS_MODEL_TEST_UTIL_H_
