// The small built-in demo model (`engram model init-demo DIR`): a real tokenizer (GPT-2's
// tokenizer.json), a Llama-style backbone of a few MB with deterministic weights and Engram modules
// at two layers whose tables hold some millions of bf16 rows.
//
// Files written into DIR: tokenizer.json (a copy), config.json, model.safetensors (backbone in
// bf16, Engram module weights in f32, tables in bf16) and engram_constants.json. All weights come
// from a fixed seed, so the same options always give byte-identical files. Writing is idempotent:
// when DIR already holds a complete demo model written with the same options, nothing is rewritten.
#ifndef ENGRAM_MODEL_DEMO_MODEL_H_
#define ENGRAM_MODEL_DEMO_MODEL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace engram {

struct DemoModelOptions {
  // tokenizer.json to copy; empty = DefaultDemoTokenizerPath().
  std::string tokenizer_path;
  // config.json "model_name" (the key of its tables in the memory tier); empty = the directory's
  // basename (ModelName).
  std::string model_name = "engram-demo";
  // Backbone shape. vocab_size 0 = the tokenizer's size (a larger one leaves ids the tokenizer
  // never produces, and is refused with Engram layers: those ids could not be hashed); head_dim
  // 0 = hidden_size / num_attention_heads.
  int vocab_size = 0;
  int head_dim = 0;
  int hidden_size = 64;
  int intermediate_size = 192;
  int num_hidden_layers = 4;
  int num_attention_heads = 4;
  int num_key_value_heads = 2;
  int max_position_embeddings = 1024;
  // Engram shape: 2 orders x 4 heads x 32 wide (d_mem 256) at layers 1 and 2; with 160,000 as the
  // prime search start each layer has 8 sub-tables of ~160k rows (~1.28 M rows, 82 MB in bf16).
  std::vector<int> engram_layer_ids = {1, 2};
  int engram_max_ngram_size = 3;
  int engram_n_heads = 4;
  int engram_head_dim = 32;
  int64_t engram_vocab_size = 160000;
  int engram_kernel_size = 4;
  // Write the Engram tables into model.safetensors. Off for models whose tables are written
  // straight into the memory tier's store by `engram table synth` (the worker never reads them).
  bool write_tables = true;
  // Seed of every weight.
  uint64_t seed = 2026;
  // Written into the safetensors metadata ("generator").
  std::string generator = "engram model init-demo";
};

// Shapes for `engram model init-random --preset NAME`: random bf16 weights of a real model's shape
// and no Engram layers (backbone benchmarks, docs/benchmarks.md):
//   dense-4b  Qwen3-4B's shape: hidden 2560, 36 layers, 32 query / 8 KV heads of 128, intermediate
//             9728, vocab 151936, tied embeddings (~4.0 B parameters, 8 GB in bf16)
//   dense-8b  Qwen3-8B's shape: hidden 4096, 36 layers, 32 / 8 heads of 128, intermediate 12288,
//             vocab 151936 (~7.6 B parameters with tied embeddings)
//   tiny      hidden 256, 4 layers, 4 / 2 heads of 64, intermediate 512 (tests)
// INVALID_ARGUMENT for another name.
absl::StatusOr<DemoModelOptions> RandomModelPreset(const std::string& name);

// The Engram shape of a benchmark model (`engram model init-random --engram-layers 1
// --engram-params 100e9`): modules at `layer_ids`, each with a table of about `params_per_layer`
// parameters (rows x head_dim), orders 2..max_ngram_size with n_heads heads each.
struct RandomEngramShape {
  std::vector<int> layer_ids;
  double params_per_layer = 0;
  int max_ngram_size = 3;
  int n_heads = 8;
  int head_dim = 256;
  int kernel_size = 4;
};

// Sets the Engram keys of `options` for `shape`: the prime search starts at
// params / (head_dim * (max_ngram_size - 1) * n_heads), so each layer's table (the sum of its
// primes) holds about params_per_layer / head_dim rows; tables are not written (write_tables =
// false: `engram table synth` writes them into the store). INVALID_ARGUMENT names the bad field
// (no layer, a layer outside the backbone, fewer than 2 orders, a table of fewer than 2 rows per
// sub-table or more than 2^40 rows).
absl::Status SetRandomEngram(const RandomEngramShape& shape, DemoModelOptions* options);

// The GPT-2 tokenizer.json fetched by scripts/fetch-testdata.sh:
// $ENGRAM_TESTDATA_DIR/tokenizer-gpt2/package/models/tokenizer.json when the variable is set,
// otherwise the same path under this source tree's .cache/testdata.
std::string DefaultDemoTokenizerPath();

// Writes (or confirms) the demo model in `dir`, creating the directory. Errors name the file.
absl::Status WriteDemoModel(const std::string& dir, const DemoModelOptions& options = {});

}  // namespace engram

#endif  // ENGRAM_MODEL_DEMO_MODEL_H_
