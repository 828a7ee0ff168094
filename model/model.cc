#include "model/model.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/ngram_hash.h"
#include "common/row_format.h"
#include "common/status.h"
#include "model/engram_constants.h"
#include "model/engram_module.h"
#include "model/tokenizer.h"

namespace engram {

Model::Model() = default;
Model::~Model() = default;

const EngramHashConstants& Model::hash_constants() const { return engram_constants_->hash; }

std::string Model::EngramTableName(int engram_layer_index) const {
  return EngramTableTensorName(config_.engram.layer_ids[engram_layer_index]);
}

namespace {

absl::Status LoadInto(const std::string& dir, ModelConfig* config,
                      std::unique_ptr<SafetensorsDir>* tensors, BackboneWeights* weights,
                      std::unique_ptr<Tokenizer>* tokenizer,
                      std::unique_ptr<EngramConstants>* constants,
                      std::vector<std::unique_ptr<EngramModule>>* modules) {
  ENGRAM_ASSIGN_OR_RETURN(*config, LoadModelConfig(dir));
  ENGRAM_ASSIGN_OR_RETURN(*tensors, SafetensorsDir::Open(dir));
  ENGRAM_ASSIGN_OR_RETURN(*weights, LoadBackboneWeights(**tensors, *config));

  const std::string tokenizer_path = dir + "/tokenizer.json";
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromFile(tokenizer_path);
  if (!tok.ok()) return Annotate(tok.status(), tokenizer_path);
  *tokenizer = *std::move(tok);
  // Every id the tokenizer can produce must have an embedding row.
  if ((*tokenizer)->max_id() >= static_cast<uint32_t>(config->vocab_size)) {
    return absl::FailedPreconditionError(
        absl::StrCat(tokenizer_path, " has token ids up to ", (*tokenizer)->max_id(),
                     " but config.json's vocab_size is ", config->vocab_size));
  }
  if (!config->has_engram()) return absl::OkStatus();

  ENGRAM_ASSIGN_OR_RETURN(EngramConstants c, LoadEngramConstants(dir, config->engram, **tokenizer));
  *constants = std::make_unique<EngramConstants>(std::move(c));
  const EngramConfig& ec = config->engram;
  for (size_t li = 0; li < ec.layer_ids.size(); ++li) {
    ENGRAM_ASSIGN_OR_RETURN(
        EngramModuleWeights w,
        LoadEngramModuleWeights(LookupIn(**tensors), EngramModulePrefix(ec.layer_ids[li]), ec));
    ENGRAM_ASSIGN_OR_RETURN(EngramModule m, EngramModule::Create(std::move(w)));
    modules->push_back(std::make_unique<EngramModule>(std::move(m)));
    // The worker never reads the table, but when the directory carries it (plain or the FP8
    // pair), it must be the table these constants address.
    absl::StatusOr<ModelTable> t = FindModelTable(**tensors, dir, ec.layer_ids[li], ec.head_dim);
    if (t.ok()) {
      ENGRAM_RETURN_IF_ERROR(
          ExpectShape(*t->values, {(*constants)->hash.rows_per_layer[li], ec.head_dim}));
    } else if (!absl::IsNotFound(t.status())) {
      return t.status();
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<const Model>> Model::Load(const std::string& dir) {
  std::unique_ptr<Model> model(new Model());
  model->dir_ = dir;
  absl::Status st =
      LoadInto(dir, &model->config_, &model->tensors_, &model->weights_, &model->tokenizer_,
               &model->engram_constants_, &model->engram_modules_);
  if (!st.ok()) return Annotate(st, absl::StrCat("loading model ", dir));
  ENGRAM_LOG(INFO)
          .With("dir", dir)
          .With("name", model->name())
          .With("layers", model->config_.num_hidden_layers)
          .With("hidden", model->config_.hidden_size)
          .With("vocab", model->config_.vocab_size)
          .With("engram_layers", model->config_.engram.layer_ids.size())
      << "model loaded";
  return std::unique_ptr<const Model>(std::move(model));
}

}  // namespace engram
