// Checks the C++ Engram path end to end against a reference file: token ids -> compressed ids ->
// hash ids -> row ids -> gathered rows -> module output, compared with what the reference
// (PyTorch + numpy) computed. Used by `engram check-module` and by the golden tests.
//
// The file is a safetensors file holding
//   - the module's weights under the reference names: multi_head_embedding.embedding.weight (the
//     layer's flat table), value_proj.weight/.bias, key_projs.{m}.weight/.bias, norm1.{m}.weight,
//     norm2.{m}.weight, short_conv.conv.weight, short_conv.norms.{m}.weight;
//   - io.input_ids [B, L] (raw token ids), io.hidden_states [B, L, hc_mult, H], io.output
//     [B, L, hc_mult, H] and optionally io.hash_ids [B, L, (N-1)*K] (int64);
//   - metadata (JSON values as strings): hidden_size, hc_mult, engram_vocab_size, max_ngram_size,
//     n_embed_per_ngram, n_head_per_ngram, layer_ids, layer_id, kernel_size, pad_id, seed, and
//     optionally compressed_vocab_size.
// Float tensors may be F64, F32, F16 or BF16. tests/golden/engram_module/generate.py writes them.
#ifndef ENGRAM_MODEL_ENGRAM_MODULE_CHECK_H_
#define ENGRAM_MODEL_ENGRAM_MODULE_CHECK_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace engram {

struct EngramModuleCheckOptions {
  // tokenizer.json that defines the compressed vocabulary; empty = "tokenizer.json" beside the
  // file.
  std::string tokenizer_path;
  // An output value passes when |got - want| <= atol + rtol * |want|.
  double atol = 1e-4;
  double rtol = 1e-4;
};

struct EngramModuleCheckResult {
  int layer_id = 0;
  int batch = 0, length = 0, hc_mult = 0, hidden_size = 0;
  int columns = 0;  // row ids per position: (N-1) * K
  int64_t compressed_vocab_size = 0;
  bool hash_ids_checked = false;  // io.hash_ids was present
  int64_t hash_ids_compared = 0;
  int64_t hash_id_mismatches = 0;
  std::string first_hash_mismatch;  // "b 0 t 3 column 5: got 12, want 17"; empty when none
  int64_t values_compared = 0;
  int64_t output_mismatches = 0;  // values past atol + rtol * |want|
  double max_abs_error = 0;
  std::string first_output_mismatch;

  bool passed() const { return hash_id_mismatches == 0 && output_mismatches == 0; }
  // One line: shapes, hash ids, largest absolute error, verdict.
  std::string Summary() const;
};

// Runs the check. Errors (not mismatches) for unreadable or malformed files, missing tensors or
// metadata, inconsistent hyper-parameters and token ids outside the tokenizer's vocabulary.
absl::StatusOr<EngramModuleCheckResult> CheckEngramModuleFile(
    const std::string& path, const EngramModuleCheckOptions& options);

}  // namespace engram

#endif  // ENGRAM_MODEL_ENGRAM_MODULE_CHECK_H_
