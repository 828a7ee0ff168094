#include "model/engram_constants.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "model/compressed_vocab.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace engram {
namespace {

constexpr char kFormat[] = "engram-constants/v1";

absl::Status BadKey(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(kEngramConstantsFile, ": key ", key, " ", what));
}

absl::StatusOr<int64_t> GetInt(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return BadKey(key, "is missing");
  if (!it->is_number_integer()) return BadKey(key, "must be an integer");
  return it->get<int64_t>();
}

absl::StatusOr<std::vector<int64_t>> GetInts(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return BadKey(key, "is missing");
  if (!it->is_array()) return BadKey(key, "must be a list of integers");
  std::vector<int64_t> out;
  out.reserve(it->size());
  for (const auto& v : *it) {
    if (!v.is_number_integer()) return BadKey(key, "must be a list of integers");
    out.push_back(v.get<int64_t>());
  }
  return out;
}

absl::Status Differ(absl::string_view what, int64_t stored, int64_t computed) {
  return absl::FailedPreconditionError(
      absl::StrCat(what, ": stored ", stored, ", computed ", computed));
}

// The first differing element of two per-layer lists, named like "layer 14 prime 3".
absl::Status CompareList(absl::string_view what, int layer_id, const std::vector<int64_t>& stored,
                         const std::vector<int64_t>& computed) {
  if (stored.size() != computed.size()) {
    return Differ(absl::StrCat("layer ", layer_id, " number of ", what, "s"),
                  static_cast<int64_t>(stored.size()), static_cast<int64_t>(computed.size()));
  }
  for (size_t i = 0; i < stored.size(); ++i) {
    if (stored[i] != computed[i]) {
      return Differ(absl::StrCat("layer ", layer_id, " ", what, " ", i), stored[i], computed[i]);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int64_t> EngramConstants::Compress(int64_t raw_id) const {
  if (raw_id < 0 || raw_id >= static_cast<int64_t>(token_map.size()) || token_map[raw_id] < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token id ", raw_id, " is not in the Engram token map (", token_map.size(), " ids)"));
  }
  return token_map[raw_id];
}

absl::StatusOr<std::vector<int64_t>> EngramConstants::Compress(
    absl::Span<const uint32_t> raw_ids) const {
  std::vector<int64_t> out(raw_ids.size());
  for (size_t i = 0; i < raw_ids.size(); ++i) {
    auto id = Compress(static_cast<int64_t>(raw_ids[i]));
    if (!id.ok()) return Annotate(id.status(), absl::StrCat("position ", i));
    out[i] = *id;
  }
  return out;
}

absl::StatusOr<EngramConstants> ComputeEngramConstants(const EngramConfig& config,
                                                       std::vector<int64_t> token_map,
                                                       int64_t compressed_vocab_size) {
  ENGRAM_RETURN_IF_ERROR(config.Validate());
  for (size_t i = 0; i < token_map.size(); ++i) {
    if (token_map[i] < -1 || token_map[i] >= compressed_vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("Engram token map: raw id ", i, " maps to ",
                                                     token_map[i], ", outside [-1, ",
                                                     compressed_vocab_size, ")"));
    }
  }
  EngramConstants c;
  c.token_map = std::move(token_map);
  c.pad_token_id = config.pad_token_id;
  ENGRAM_ASSIGN_OR_RETURN(const int64_t compressed_pad, c.Compress(config.pad_token_id));
  ENGRAM_ASSIGN_OR_RETURN(
      c.hash, ComputeEngramHashConstants(config, compressed_vocab_size, compressed_pad));
  return c;
}

absl::StatusOr<EngramConstants> ComputeEngramConstants(const EngramConfig& config,
                                                       const Tokenizer& tokenizer) {
  ENGRAM_ASSIGN_OR_RETURN(CompressedTokenMap map, BuildCompressedTokenMap(tokenizer));
  auto constants = ComputeEngramConstants(config, std::move(map.lookup), map.size);
  if (!constants.ok()) return Annotate(constants.status(), "computing the Engram constants");
  return constants;
}

nlohmann::json EngramConstantsToJson(const EngramConstants& c) {
  nlohmann::json layers = nlohmann::json::array();
  for (int li = 0; li < c.hash.num_layers(); ++li) {
    layers.push_back({{"layer_id", c.hash.layer_ids[li]},
                      {"multipliers", c.hash.multipliers[li]},
                      {"primes", c.hash.primes[li]},
                      {"offsets", c.hash.offsets[li]},
                      {"rows", c.hash.rows_per_layer[li]}});
  }
  return {{"format", kFormat},
          {"max_ngram_size", c.hash.max_ngram_size},
          {"n_heads", c.hash.n_heads},
          {"compressed_vocab_size", c.hash.compressed_vocab_size},
          {"pad_token_id", c.pad_token_id},
          {"compressed_pad_id", c.hash.compressed_pad_id},
          {"token_map", c.token_map},
          {"layers", layers}};
}

absl::StatusOr<EngramConstants> EngramConstantsFromJson(const nlohmann::json& j) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(kEngramConstantsFile, " is not a JSON object"));
  }
  if (!j.contains("format") || j["format"] != kFormat) {
    return BadKey("format", absl::StrCat("must be \"", kFormat, "\""));
  }
  EngramConstants c;
  EngramHashConstants& h = c.hash;
  ENGRAM_ASSIGN_OR_RETURN(const int64_t n, GetInt(j, "max_ngram_size"));
  ENGRAM_ASSIGN_OR_RETURN(const int64_t heads, GetInt(j, "n_heads"));
  if (n < 2 || n > kMaxNgramSize) return BadKey("max_ngram_size", "is outside [2, 16]");
  if (heads < 1 || heads > 1024) return BadKey("n_heads", "is outside [1, 1024]");
  h.max_ngram_size = static_cast<int>(n);
  h.n_heads = static_cast<int>(heads);
  ENGRAM_ASSIGN_OR_RETURN(h.compressed_vocab_size, GetInt(j, "compressed_vocab_size"));
  ENGRAM_ASSIGN_OR_RETURN(c.pad_token_id, GetInt(j, "pad_token_id"));
  ENGRAM_ASSIGN_OR_RETURN(h.compressed_pad_id, GetInt(j, "compressed_pad_id"));
  ENGRAM_ASSIGN_OR_RETURN(c.token_map, GetInts(j, "token_map"));
  auto layers = j.find("layers");
  if (layers == j.end() || !layers->is_array()) return BadKey("layers", "must be a list");
  for (const auto& layer : *layers) {
    if (!layer.is_object()) return BadKey("layers", "must hold objects");
    ENGRAM_ASSIGN_OR_RETURN(const int64_t id, GetInt(layer, "layer_id"));
    ENGRAM_ASSIGN_OR_RETURN(std::vector<int64_t> m, GetInts(layer, "multipliers"));
    ENGRAM_ASSIGN_OR_RETURN(std::vector<int64_t> p, GetInts(layer, "primes"));
    ENGRAM_ASSIGN_OR_RETURN(std::vector<int64_t> o, GetInts(layer, "offsets"));
    ENGRAM_ASSIGN_OR_RETURN(const int64_t rows, GetInt(layer, "rows"));
    if (static_cast<int64_t>(m.size()) != n) {
      return BadKey("multipliers", absl::StrCat("of layer ", id, " must hold ", n, " values"));
    }
    if (static_cast<int>(p.size()) != h.columns() || static_cast<int>(o.size()) != h.columns()) {
      return BadKey("primes/offsets",
                    absl::StrCat("of layer ", id, " must hold ", h.columns(), " values each"));
    }
    h.layer_ids.push_back(static_cast<int>(id));
    h.multipliers.push_back(std::move(m));
    h.primes.push_back(std::move(p));
    h.offsets.push_back(std::move(o));
    h.rows_per_layer.push_back(rows);
  }
  return c;
}

absl::StatusOr<EngramConstants> ReadEngramConstants(const std::string& path) {
  ENGRAM_ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(path));
  auto c = EngramConstantsFromJson(j);
  if (!c.ok()) return Annotate(c.status(), path);
  return c;
}

absl::Status WriteEngramConstants(const EngramConstants& constants, const std::string& path) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
    out << EngramConstantsToJson(constants).dump() << "\n";
    if (!out.flush()) return absl::DataLossError(absl::StrCat("writing ", tmp, " failed"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("renaming ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status CompareEngramConstants(const EngramConstants& stored,
                                    const EngramConstants& computed) {
  const EngramHashConstants& s = stored.hash;
  const EngramHashConstants& c = computed.hash;
  if (s.max_ngram_size != c.max_ngram_size) {
    return Differ("max_ngram_size", s.max_ngram_size, c.max_ngram_size);
  }
  if (s.n_heads != c.n_heads) return Differ("n_heads", s.n_heads, c.n_heads);
  if (s.compressed_vocab_size != c.compressed_vocab_size) {
    return Differ("compressed_vocab_size", s.compressed_vocab_size, c.compressed_vocab_size);
  }
  if (stored.pad_token_id != computed.pad_token_id) {
    return Differ("pad_token_id", stored.pad_token_id, computed.pad_token_id);
  }
  if (s.compressed_pad_id != c.compressed_pad_id) {
    return Differ("compressed_pad_id", s.compressed_pad_id, c.compressed_pad_id);
  }
  if (stored.token_map.size() != computed.token_map.size()) {
    return Differ("token_map size", static_cast<int64_t>(stored.token_map.size()),
                  static_cast<int64_t>(computed.token_map.size()));
  }
  for (size_t i = 0; i < stored.token_map.size(); ++i) {
    if (stored.token_map[i] != computed.token_map[i]) {
      return Differ(absl::StrCat("token_map[", i, "]"), stored.token_map[i], computed.token_map[i]);
    }
  }
  if (s.layer_ids != c.layer_ids) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer ids: stored [", absl::StrJoin(s.layer_ids, ", "), "], computed [",
                     absl::StrJoin(c.layer_ids, ", "), "]"));
  }
  for (int li = 0; li < c.num_layers(); ++li) {
    const int id = c.layer_ids[li];
    ENGRAM_RETURN_IF_ERROR(CompareList("multiplier", id, s.multipliers[li], c.multipliers[li]));
    ENGRAM_RETURN_IF_ERROR(CompareList("prime", id, s.primes[li], c.primes[li]));
    ENGRAM_RETURN_IF_ERROR(CompareList("offset", id, s.offsets[li], c.offsets[li]));
    if (s.rows_per_layer[li] != c.rows_per_layer[li]) {
      return Differ(absl::StrCat("layer ", id, " rows"), s.rows_per_layer[li],
                    c.rows_per_layer[li]);
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPublishedConstants(const EngramConfig& config, const EngramConstants& constants) {
  if (config.compressed_vocab_size &&
      *config.compressed_vocab_size != constants.hash.compressed_vocab_size) {
    return absl::FailedPreconditionError(
        absl::StrCat("config.json engram_compressed_vocab_size is ", *config.compressed_vocab_size,
                     " but the tokenizer gives ", constants.hash.compressed_vocab_size,
                     " (wrong tokenizer.json for this model?)"));
  }
  if (!config.num_embeddings.empty()) {
    for (int li = 0; li < constants.hash.num_layers(); ++li) {
      const int64_t published =
          li < static_cast<int>(config.num_embeddings.size()) ? config.num_embeddings[li] : -1;
      if (published != constants.hash.rows_per_layer[li]) {
        return absl::FailedPreconditionError(absl::StrCat(
            "config.json engram_num_embeddings[", li, "] (layer ", constants.hash.layer_ids[li],
            ") is ", published, " but the prime search gives ", constants.hash.rows_per_layer[li],
            " rows"));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<EngramConstants> LoadEngramConstants(const std::string& model_dir,
                                                    const EngramConfig& config,
                                                    const Tokenizer& tokenizer) {
  ENGRAM_ASSIGN_OR_RETURN(EngramConstants computed, ComputeEngramConstants(config, tokenizer));
  ENGRAM_RETURN_IF_ERROR(CheckPublishedConstants(config, computed));
  const std::string path = (std::filesystem::path(model_dir) / kEngramConstantsFile).string();
  // Absent is fine; a file that cannot even be looked at is reported by the read below.
  std::error_code ec;
  if (!std::filesystem::exists(path, ec) && !ec) return computed;
  ENGRAM_ASSIGN_OR_RETURN(EngramConstants stored, ReadEngramConstants(path));
  if (absl::Status s = CompareEngramConstants(stored, computed); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " disagrees with the constants computed from config.json and tokenizer.json: ",
        s.message(), "; refusing to load (regenerate the file or fix the config)"));
  }
  return computed;
}

}  // namespace engram
