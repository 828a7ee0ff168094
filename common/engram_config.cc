#include "common/engram_config.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/config_util.h"
#include "nlohmann/json.hpp"

namespace engram {
namespace {

absl::Status Bad(absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("config key ", key, ": ", what));
}

template <typename T>
absl::Status ReadInt(const nlohmann::json& config, const char* key, T* out) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  if (!JsonIntValue(*it, out)) {
    return Bad(key, absl::StrCat("must be an integer in [", std::numeric_limits<T>::min(), ", ",
                                 std::numeric_limits<T>::max(), "], got ", it->dump()));
  }
  return absl::OkStatus();
}

// A list of integers that T holds exactly.
template <typename T>
absl::Status ReadIntList(const nlohmann::json& list, const char* key, std::vector<T>* out) {
  for (const auto& v : list) {
    T value;
    if (!JsonIntValue(v, &value)) {
      return Bad(key, absl::StrCat("must be a list of integers in [", std::numeric_limits<T>::min(),
                                   ", ", std::numeric_limits<T>::max(), "], got ", v.dump()));
    }
    out->push_back(value);
  }
  return absl::OkStatus();
}

}  // namespace

int EngramConfig::LayerIndex(int layer_id) const {
  for (size_t i = 0; i < layer_ids.size(); ++i) {
    if (layer_ids[i] == layer_id) return static_cast<int>(i);
  }
  return -1;
}

absl::Status EngramConfig::Validate() const {
  if (layer_ids.empty()) return Bad("engram_layer_ids", "must list at least one layer");
  for (size_t i = 0; i < layer_ids.size(); ++i) {
    if (layer_ids[i] < 0) return Bad("engram_layer_ids", "layer ids must be >= 0");
    for (size_t j = 0; j < i; ++j) {
      if (layer_ids[i] == layer_ids[j]) {
        return Bad("engram_layer_ids", absl::StrCat("layer ", layer_ids[i], " is listed twice"));
      }
    }
  }
  if (max_ngram_size < 2 || max_ngram_size > 16) {
    return Bad("engram_max_ngram_size", absl::StrCat(max_ngram_size, " is outside [2, 16]"));
  }
  if (n_heads < 1 || n_heads > 1024)
    return Bad("engram_n_heads", absl::StrCat(n_heads, " is outside [1, 1024]"));
  if (head_dim < 1 || head_dim > 65536)
    return Bad("engram_head_dim", absl::StrCat(head_dim, " is outside [1, 65536]"));
  if (static_cast<int>(vocab_size_per_order.size()) != num_orders()) {
    return Bad("engram_vocab_size",
               absl::StrCat("has ", vocab_size_per_order.size(),
                            " entries, expected one per order (", num_orders(), ")"));
  }
  for (int64_t v : vocab_size_per_order) {
    if (v < 2 || v > (int64_t{1} << 40))
      return Bad("engram_vocab_size", absl::StrCat(v, " is outside [2, 2^40]"));
  }
  if (pad_token_id < 0) return Bad("engram_pad_token_id", "must be >= 0");
  if (seed < 0) return Bad("engram_seed", "must be >= 0");
  if (kernel_size < 0 || kernel_size > 64) return Bad("engram_kernel_size", "must be in [0, 64]");
  if (hc_mult < 1 || hc_mult > 64) return Bad("hc_mult", "must be in [1, 64]");
  if (hidden_size < 0) return Bad("hidden_size", "must be >= 0");
  if (!num_embeddings.empty() && num_embeddings.size() != layer_ids.size()) {
    return Bad("engram_num_embeddings", "must have one entry per Engram layer");
  }
  return absl::OkStatus();
}

absl::StatusOr<EngramConfig> ParseEngramConfig(const nlohmann::json& config) {
  if (!config.is_object()) return absl::InvalidArgumentError("config.json is not a JSON object");
  EngramConfig c;
  auto layers = config.find("engram_layer_ids");
  if (layers == config.end()) return Bad("engram_layer_ids", "missing");
  if (!layers->is_array()) return Bad("engram_layer_ids", "must be a list of integers");
  if (absl::Status s = ReadIntList(*layers, "engram_layer_ids", &c.layer_ids); !s.ok()) return s;
  if (absl::Status s = ReadInt(config, "engram_max_ngram_size", &c.max_ngram_size); !s.ok())
    return s;
  if (absl::Status s = ReadInt(config, "engram_n_heads", &c.n_heads); !s.ok()) return s;
  if (absl::Status s = ReadInt(config, "engram_head_dim", &c.head_dim); !s.ok()) return s;
  if (absl::Status s = ReadInt(config, "engram_pad_token_id", &c.pad_token_id); !s.ok()) return s;
  if (absl::Status s = ReadInt(config, "engram_seed", &c.seed); !s.ok()) return s;
  if (absl::Status s = ReadInt(config, "engram_kernel_size", &c.kernel_size); !s.ok()) return s;
  if (absl::Status s = ReadInt(config, "hc_mult", &c.hc_mult); !s.ok()) return s;
  if (absl::Status s = ReadInt(config, "hidden_size", &c.hidden_size); !s.ok()) return s;
  auto vocab = config.find("engram_vocab_size");
  if (vocab == config.end()) return Bad("engram_vocab_size", "missing");
  if (vocab->is_number_integer()) {
    int64_t v = 0;
    if (absl::Status s = ReadInt(config, "engram_vocab_size", &v); !s.ok()) return s;
    c.vocab_size_per_order.assign(std::max(c.max_ngram_size - 1, 0), v);
  } else if (vocab->is_array()) {
    if (absl::Status s = ReadIntList(*vocab, "engram_vocab_size", &c.vocab_size_per_order);
        !s.ok()) {
      return s;
    }
  } else {
    return Bad("engram_vocab_size", "must be an integer or a list of integers");
  }
  if (auto it = config.find("engram_compressed_vocab_size"); it != config.end() && !it->is_null()) {
    int64_t v = 0;
    if (absl::Status s = ReadInt(config, "engram_compressed_vocab_size", &v); !s.ok()) return s;
    c.compressed_vocab_size = v;
  }
  if (auto it = config.find("engram_num_embeddings"); it != config.end() && !it->is_null()) {
    if (!it->is_array()) return Bad("engram_num_embeddings", "must be a list of integers");
    if (absl::Status s = ReadIntList(*it, "engram_num_embeddings", &c.num_embeddings); !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  return c;
}

std::string ModelName(const nlohmann::json& config, const std::string& model_dir) {
  if (config.is_object()) {
    auto it = config.find("model_name");
    if (it != config.end() && it->is_string() && !it->get<std::string>().empty()) {
      return it->get<std::string>();
    }
  }
  std::filesystem::path p(model_dir);
  while (p.has_relative_path() && p.filename().empty()) p = p.parent_path();
  std::string name = p.filename().string();
  if (name.empty() || name == "." || name == "..") {
    name = std::filesystem::weakly_canonical(p).filename().string();
  }
  return name;
}

std::string EngramModulePrefix(int layer_id) {
  return absl::StrCat("model.layers.", layer_id, ".engram.");
}

std::string EngramTableTensorName(int layer_id) {
  return absl::StrCat(EngramModulePrefix(layer_id), "multi_head_embedding.embedding.weight");
}

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Re-parse with exceptions only to extract the position for the message.
    try {
      nlohmann::json ignored = nlohmann::json::parse(buffer.str());
      (void)ignored;
    } catch (const nlohmann::json::parse_error& e) {
      return absl::InvalidArgumentError(absl::StrCat("malformed JSON in ", path, ": ", e.what()));
    }
    return absl::InvalidArgumentError(absl::StrCat("malformed JSON in ", path));
  }
  return j;
}

}  // namespace engram
