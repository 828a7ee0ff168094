// An Engram model loaded from its directory: config, backbone weights, tokenizer, the frozen Engram
// hash constants and the Engram modules' small weights.
//
// Directory layout (Hugging Face style, docs/architecture.md contract 2):
//   config.json              model_config.h
//   *.safetensors            backbone tensors (weights.h) + per Engram layer the module weights and
//                            the table
//                            model.layers.{i}.engram.multi_head_embedding.embedding.weight
//   tokenizer.json           model/tokenizer.h
//   engram_constants.json    optional; when present it must agree with the constants computed from
//                            the config and the tokenizer (model/engram_constants.h)
// The safetensors files stay memory-mapped for the model's lifetime; the tables are never read by
// Load (the memory tier serves them) but remain reachable through tensors() for in-process
// reference paths (model/local_generate.h). A Model is immutable after Load and may be shared by
// any number of threads.
#ifndef ENGRAM_MODEL_MODEL_H_
#define ENGRAM_MODEL_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/safetensors.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace engram {

class Tokenizer;             // model/tokenizer.h
struct EngramConstants;      // model/engram_constants.h
struct EngramHashConstants;  // common/ngram_hash.h
class EngramModule;          // model/engram_module.h

class Model {
 public:
  // Loads everything from `dir`. Errors name the file, key or tensor at fault, e.g.
  // "loading model demo/model: model.layers.3.mlp.up_proj.weight has shape [64, 32], expected
  // [172, 64]". Fails (FAILED_PRECONDITION) when engram_constants.json disagrees with the computed
  // constants.
  static absl::StatusOr<std::unique_ptr<const Model>> Load(const std::string& dir);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const std::string& dir() const { return dir_; }
  // ModelName(config.json, dir): the key under which the memory tier holds this model's tables.
  const std::string& name() const { return config_.name; }
  const ModelConfig& config() const { return config_; }
  const BackboneWeights& weights() const { return weights_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  // Every tensor of the model's safetensors files (still mapped), tables included.
  const SafetensorsDir& tensors() const { return *tensors_; }

  // ---- Engram (valid only when config().has_engram()) ----
  // The frozen constants: token map (raw id -> compressed id, EngramConstants::Compress), V', pad'
  // and per Engram layer the multipliers, primes, offsets and row counts
  // (model/engram_constants.h).
  const EngramConstants& engram_constants() const { return *engram_constants_; }
  // engram_constants().hash: what common/ngram_hash.h (NgramState, ComputeNgramRowIds) needs. Index
  // = position of the layer in config().engram.layer_ids.
  const EngramHashConstants& hash_constants() const;
  // The module of Engram layer index `engram_layer_index` (same indexing).
  const EngramModule& engram_module(int engram_layer_index) const {
    return *engram_modules_[engram_layer_index];
  }
  // All modules, in engram layer index order.
  std::vector<const EngramModule*> engram_modules() const {
    std::vector<const EngramModule*> out;
    for (const auto& m : engram_modules_) out.push_back(m.get());
    return out;
  }
  // Name of the table tensor of Engram layer index `engram_layer_index`.
  std::string EngramTableName(int engram_layer_index) const;

 private:
  Model();

  std::string dir_;
  ModelConfig config_;
  std::unique_ptr<SafetensorsDir> tensors_;
  BackboneWeights weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<EngramConstants> engram_constants_;
  std::vector<std::unique_ptr<EngramModule>> engram_modules_;
};

}  // namespace engram

#endif  // ENGRAM_MODEL_MODEL_H_
