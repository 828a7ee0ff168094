#include "model/engram_module_check.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/engram_config.h"
#include "common/ngram_hash.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "model/engram_constants.h"
#include "model/engram_module.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace engram {
namespace {

absl::StatusOr<nlohmann::json> MetadataValue(const SafetensorsFile& file, const std::string& key) {
  auto it = file.metadata().find(key);
  if (it == file.metadata().end()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": metadata key ", key, " is missing"));
  }
  nlohmann::json value = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": metadata key ", key, " is not JSON: \"", it->second, "\""));
  }
  return value;
}

absl::StatusOr<int64_t> MetadataInt(const SafetensorsFile& file, const std::string& key) {
  ENGRAM_ASSIGN_OR_RETURN(nlohmann::json v, MetadataValue(file, key));
  if (!v.is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": metadata key ", key, " must be an integer"));
  }
  return v.get<int64_t>();
}

// The reference's hyper-parameters, mapped onto config.json's keys so ParseEngramConfig validates
// them exactly as it validates a model.
absl::StatusOr<EngramConfig> ConfigFromMetadata(const SafetensorsFile& file, int* layer_id) {
  ENGRAM_ASSIGN_OR_RETURN(const int64_t n_embed, MetadataInt(file, "n_embed_per_ngram"));
  ENGRAM_ASSIGN_OR_RETURN(const int64_t n_head, MetadataInt(file, "n_head_per_ngram"));
  if (n_head < 1 || n_embed < 1 || n_embed % n_head != 0) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": n_embed_per_ngram (", n_embed,
                                                   ") must be a positive multiple of ",
                                                   "n_head_per_ngram (", n_head, ")"));
  }
  nlohmann::json config = {{"engram_n_heads", n_head}, {"engram_head_dim", n_embed / n_head}};
  const std::pair<const char*, const char*> keys[] = {{"layer_ids", "engram_layer_ids"},
                                                      {"max_ngram_size", "engram_max_ngram_size"},
                                                      {"engram_vocab_size", "engram_vocab_size"},
                                                      {"pad_id", "engram_pad_token_id"},
                                                      {"seed", "engram_seed"},
                                                      {"kernel_size", "engram_kernel_size"},
                                                      {"hc_mult", "hc_mult"},
                                                      {"hidden_size", "hidden_size"}};
  for (const auto& [meta_key, config_key] : keys) {
    ENGRAM_ASSIGN_OR_RETURN(config[config_key], MetadataValue(file, meta_key));
  }
  auto parsed = ParseEngramConfig(config);
  if (!parsed.ok()) return Annotate(parsed.status(), absl::StrCat(file.path(), " metadata"));
  ENGRAM_ASSIGN_OR_RETURN(const int64_t id, MetadataInt(file, "layer_id"));
  if (parsed->LayerIndex(static_cast<int>(id)) < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.path(), ": layer_id ", id, " is not in layer_ids"));
  }
  if (parsed->hidden_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": hidden_size must be >= 1"));
  }
  *layer_id = static_cast<int>(id);
  return parsed;
}

absl::StatusOr<std::vector<int64_t>> IntTensor(const TensorView& t) {
  std::vector<int64_t> out(t.num_elements());
  if (t.dtype == DType::kI64) {
    std::memcpy(out.data(), t.data, out.size() * sizeof(int64_t));
  } else if (t.dtype == DType::kI32) {
    for (size_t i = 0; i < out.size(); ++i) {
      int32_t v;
      std::memcpy(&v, t.data + i * sizeof(v), sizeof(v));
      out[i] = v;
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", t.name, " must be I64 or I32, is ", DTypeName(t.dtype)));
  }
  return out;
}

absl::StatusOr<std::vector<float>> FloatTensor(const SafetensorsFile& file, const std::string& name,
                                               std::vector<int64_t> shape) {
  ENGRAM_ASSIGN_OR_RETURN(const TensorView* t, file.Get(name));
  ENGRAM_RETURN_IF_ERROR(ExpectShape(*t, shape));
  return TensorToF32(*t);
}

}  // namespace

std::string EngramModuleCheckResult::Summary() const {
  std::string hashes = hash_ids_checked
                           ? absl::StrCat("hash ids ", hash_ids_compared - hash_id_mismatches, "/",
                                          hash_ids_compared, " equal")
                           : std::string("hash ids not in the file");
  return absl::StrFormat(
      "layer %d, B=%d L=%d hc_mult=%d H=%d, compressed vocab %d; %s; output %d values, max abs "
      "error %.3g, %d past tolerance: %s",
      layer_id, batch, length, hc_mult, hidden_size, compressed_vocab_size, hashes, values_compared,
      max_abs_error, output_mismatches, passed() ? "OK" : "MISMATCH");
}

absl::StatusOr<EngramModuleCheckResult> CheckEngramModuleFile(
    const std::string& path, const EngramModuleCheckOptions& options) {
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
  EngramModuleCheckResult result;
  ENGRAM_ASSIGN_OR_RETURN(EngramConfig config, ConfigFromMetadata(*file, &result.layer_id));
  const int li = config.LayerIndex(result.layer_id);

  const std::string tokenizer_path =
      !options.tokenizer_path.empty()
          ? options.tokenizer_path
          : (std::filesystem::path(path).parent_path() / "tokenizer.json").string();
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                          Tokenizer::FromFile(tokenizer_path));
  ENGRAM_ASSIGN_OR_RETURN(EngramConstants constants, ComputeEngramConstants(config, *tokenizer));
  const EngramHashConstants& hash = constants.hash;
  result.compressed_vocab_size = hash.compressed_vocab_size;
  if (file->metadata().count("compressed_vocab_size") > 0) {
    ENGRAM_ASSIGN_OR_RETURN(const int64_t expected, MetadataInt(*file, "compressed_vocab_size"));
    if (expected != hash.compressed_vocab_size) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " was made with a compressed vocabulary of ", expected, " ids but ", tokenizer_path,
          " gives ", hash.compressed_vocab_size, " (a different tokenizer?)"));
    }
  }

  // Inputs and shapes.
  ENGRAM_ASSIGN_OR_RETURN(const TensorView* ids_tensor, file->Get("io.input_ids"));
  if (ids_tensor->shape.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("io.input_ids must be [B, L], is ", ids_tensor->ShapeString()));
  }
  const int64_t B = ids_tensor->shape[0], L = ids_tensor->shape[1];
  const int64_t M = config.hc_mult, H = config.hidden_size, cols = hash.columns();
  const int64_t head_dim = config.head_dim, d_mem = config.d_mem();
  result.batch = static_cast<int>(B);
  result.length = static_cast<int>(L);
  result.hc_mult = static_cast<int>(M);
  result.hidden_size = static_cast<int>(H);
  result.columns = static_cast<int>(cols);
  ENGRAM_ASSIGN_OR_RETURN(std::vector<int64_t> raw_ids, IntTensor(*ids_tensor));
  ENGRAM_ASSIGN_OR_RETURN(std::vector<float> hidden,
                          FloatTensor(*file, "io.hidden_states", {B, L, M, H}));
  ENGRAM_ASSIGN_OR_RETURN(std::vector<float> want, FloatTensor(*file, "io.output", {B, L, M, H}));
  std::vector<int64_t> want_hash;
  if (const TensorView* t = file->Find("io.hash_ids"); t != nullptr) {
    ENGRAM_RETURN_IF_ERROR(ExpectShape(*t, {B, L, cols}));
    ENGRAM_ASSIGN_OR_RETURN(want_hash, IntTensor(*t));
    result.hash_ids_checked = true;
  }
  ENGRAM_ASSIGN_OR_RETURN(std::vector<float> table,
                          FloatTensor(*file, "multi_head_embedding.embedding.weight",
                                      {hash.rows_per_layer[li], head_dim}));
  ENGRAM_ASSIGN_OR_RETURN(EngramModuleWeights weights,
                          LoadEngramModuleWeights(LookupIn(*file), "", config));
  ENGRAM_ASSIGN_OR_RETURN(EngramModule module, EngramModule::Create(std::move(weights)));

  // Per sequence: compress, hash, gather, forward, compare.
  std::vector<int64_t> hash_ids(L * cols), row_ids(L * cols);
  std::vector<float> rows(L * d_mem), out(L * M * H);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> compressed(L);
    for (int64_t t = 0; t < L; ++t) {
      auto id = constants.Compress(raw_ids[b * L + t]);
      if (!id.ok()) return Annotate(id.status(), absl::StrCat("io.input_ids[", b, ", ", t, "]"));
      compressed[t] = *id;
    }
    ENGRAM_RETURN_IF_ERROR(ComputeNgramHashIds(hash, li, {}, compressed, absl::MakeSpan(hash_ids)));
    ENGRAM_RETURN_IF_ERROR(ComputeNgramRowIds(hash, li, {}, compressed, absl::MakeSpan(row_ids)));
    if (result.hash_ids_checked) {
      for (int64_t i = 0; i < L * cols; ++i) {
        ++result.hash_ids_compared;
        const int64_t w = want_hash[b * L * cols + i];
        if (hash_ids[i] != w && result.hash_id_mismatches++ == 0) {
          result.first_hash_mismatch = absl::StrCat("b ", b, " t ", i / cols, " column ", i % cols,
                                                    ": got ", hash_ids[i], ", want ", w);
        }
      }
    }
    for (int64_t i = 0; i < L * cols; ++i) {  // e_t = concatenation of the rows in column order
      std::memcpy(&rows[i * head_dim], &table[row_ids[i] * head_dim], head_dim * sizeof(float));
    }
    ENGRAM_RETURN_IF_ERROR(module.Forward(rows.data(), &hidden[b * L * M * H], static_cast<int>(L),
                                          nullptr, out.data()));
    for (int64_t i = 0; i < L * M * H; ++i) {
      const double w = want[b * L * M * H + i];
      const double err = std::fabs(out[i] - w);
      ++result.values_compared;
      result.max_abs_error = std::max(result.max_abs_error, err);
      if (!(err <= options.atol + options.rtol * std::fabs(w)) && result.output_mismatches++ == 0) {
        result.first_output_mismatch =
            absl::StrFormat("b %d t %d branch %d channel %d: got %.8g, want %.8g", b, i / (M * H),
                            (i / H) % M, i % H, out[i], w);
      }
    }
  }
  return result;
}

}  // namespace engram
