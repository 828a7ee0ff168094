// `engram hash`: the Engram row ids of a token sequence, as the worker computes them.
//
//   engram hash --model DIR (--tokens 1,2,3 | --text TEXT)
// prints {"compressed_ids": [...], "layers": {"<layer id>": {"hash_ids": [[...]], "row_ids":
// [[...]]}}} with one inner list per position of (max_ngram_size-1) * n_heads values in (order,
// head) order; hash ids are before the per-column offsets, row ids after. DIR holds config.json and
// tokenizer.json (and engram_constants.json, which must then agree with them).
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "client/cli.h"
#include "common/engram_config.h"
#include "common/ngram_hash.h"
#include "common/status.h"
#include "model/engram_constants.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace engram::cli {
namespace {

absl::StatusOr<nlohmann::json> Hash(const Args& args) {
  ENGRAM_ASSIGN_OR_RETURN(const std::string dir, args.Require("model"));
  if (args.Has("tokens") == args.Has("text")) {
    return absl::InvalidArgumentError("give exactly one of --tokens and --text");
  }
  const std::filesystem::path model(dir);
  ENGRAM_ASSIGN_OR_RETURN(nlohmann::json config_json,
                          ReadJsonFile((model / "config.json").string()));
  auto config = ParseEngramConfig(config_json);
  if (!config.ok()) return Annotate(config.status(), (model / "config.json").string());
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                          Tokenizer::FromFile((model / "tokenizer.json").string()));
  ENGRAM_ASSIGN_OR_RETURN(EngramConstants constants, LoadEngramConstants(dir, *config, *tokenizer));

  std::vector<uint32_t> raw;
  if (args.Has("tokens")) {
    ENGRAM_ASSIGN_OR_RETURN(raw, ParseTokenIds(*args.Get("tokens"), "tokens"));
  } else {
    ENGRAM_ASSIGN_OR_RETURN(raw, tokenizer->Encode(*args.Get("text")));
  }
  ENGRAM_ASSIGN_OR_RETURN(std::vector<int64_t> compressed, constants.Compress(raw));

  const EngramHashConstants& hash = constants.hash;
  const size_t cols = hash.columns();
  nlohmann::json layers = nlohmann::json::object();
  std::vector<int64_t> hash_ids(compressed.size() * cols), row_ids(compressed.size() * cols);
  for (int li = 0; li < hash.num_layers(); ++li) {
    ENGRAM_RETURN_IF_ERROR(ComputeNgramHashIds(hash, li, {}, compressed, absl::MakeSpan(hash_ids)));
    ENGRAM_RETURN_IF_ERROR(ComputeNgramRowIds(hash, li, {}, compressed, absl::MakeSpan(row_ids)));
    nlohmann::json h = nlohmann::json::array(), r = nlohmann::json::array();
    for (size_t t = 0; t < compressed.size(); ++t) {
      h.push_back(
          std::vector<int64_t>(hash_ids.begin() + t * cols, hash_ids.begin() + (t + 1) * cols));
      r.push_back(
          std::vector<int64_t>(row_ids.begin() + t * cols, row_ids.begin() + (t + 1) * cols));
    }
    layers[std::to_string(hash.layer_ids[li])] = {{"hash_ids", h}, {"row_ids", r}};
  }
  return nlohmann::json{{"compressed_ids", compressed}, {"layers", layers}};
}

int RunHash(int argc, char** argv) {
  auto args = Args::Parse(argc, argv, {"model", "tokens", "text"});
  if (!args.ok()) return Fail("hash", args.status(), 2);
  auto json = Hash(*args);
  if (!json.ok()) return Fail("hash", json.status());
  std::printf("%s\n", json->dump().c_str());
  return 0;
}

}  // namespace

ENGRAM_CLI_COMMAND(hash, "hash",
                   "Engram hash and row ids of tokens: --model DIR (--tokens 1,2,3 | --text TEXT)",
                   RunHash);

}  // namespace engram::cli
