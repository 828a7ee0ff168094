// Fuzz target: a model's config.json (model/model_config.cc: the backbone keys and their
// validation; common/engram_config.cc: the engram_* keys) and, as part B, its
// engram_constants.json (model/engram_constants.cc), the two JSON files a worker reads from a
// model directory besides tokenizer.json.
//
// Input: CONFIG_JSON ['\0' ENGRAM_CONSTANTS_JSON] (fuzz_input.h).
#include <cstddef>
#include <cstdint>

#include "common/engram_config.h"
#include "model/engram_constants.h"
#include "model/model_config.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const engram::fuzz::TwoParts in = engram::fuzz::SplitAtNul(data, size);
  const nlohmann::json config =
      nlohmann::json::parse(in.a.begin(), in.a.end(), nullptr, /*allow_exceptions=*/false);
  if (!config.is_discarded()) {
    auto model = engram::ParseModelConfig(config, "/models/fuzz");
    if (model.ok()) {
      // A config that validated must describe a consistent model: these are what the loader
      // computes sizes from next.
      if (model->hidden_size <= 0 || model->num_hidden_layers <= 0 || model->vocab_size <= 0) {
        __builtin_trap();
      }
      // Widths the loader multiplies out (UBSan reports a signed overflow).
      (void)model->q_width();
      (void)model->kv_width();
      if (model->has_engram()) (void)model->engram.d_mem();
    }
    auto engram_config = engram::ParseEngramConfig(config);
    if (engram_config.ok()) (void)engram_config->Validate();
    (void)engram::ModelName(config, "/models/fuzz");
  }
  if (in.has_b) {
    const nlohmann::json constants =
        nlohmann::json::parse(in.b.begin(), in.b.end(), nullptr, /*allow_exceptions=*/false);
    if (!constants.is_discarded()) (void)engram::EngramConstantsFromJson(constants);
  }
  return 0;
}
