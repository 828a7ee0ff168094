#include "model/demo_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/engram_config.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "common/splitmix64.h"
#include "common/status.h"
#include "model/engram_constants.h"
#include "model/model_config.h"
#include "model/tokenizer.h"
#include "model/tokenizer_utf8.h"
#include "nlohmann/json.hpp"

#ifndef ENGRAM_DEFAULT_TESTDATA_DIR
#define ENGRAM_DEFAULT_TESTDATA_DIR ".cache/testdata"
#endif

namespace engram {
namespace {

namespace fs = std::filesystem;

constexpr char kEndOfText[] = "<|endoftext|>";

// ---- Deterministic values --------------------------------------------------------------------
// Every element is a pure function of (seed, tensor name, element index): the files do not depend
// on the order tensors are written in, and a table can be produced in any chunking.

uint64_t StreamKey(uint64_t seed, absl::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return SplitMix64Mix(h ^ SplitMix64Mix(seed));
}

// Uniform on [-sqrt(3), sqrt(3)) * std: mean 0, standard deviation `std`. A uniform is as good as a
// normal for a demo and keeps producing a table of millions of rows cheap.
float Value(uint64_t key, uint64_t index, float std) {
  const double u = UnitInterval(SplitMix64Mix(key + (index + 1) * kSplitMix64Gamma));
  return static_cast<float>((2.0 * u - 1.0) * 1.7320508075688772 * std);
}

std::vector<float> Fill(uint64_t seed, const std::string& name, int64_t n, float std,
                        float mean = 0) {
  const uint64_t key = StreamKey(seed, name);
  std::vector<float> v(n);
  // Each value depends only on its index, so large tensors (a 4B model's) fill in parallel.
  const int64_t threads = std::clamp<int64_t>(n >> 22, 1, 16);
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int64_t i = n * t / threads; i < n * (t + 1) / threads; ++i) {
        v[i] = mean + Value(key, i, std);
      }
    });
  }
  for (auto& th : pool) th.join();
  return v;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view data) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(data.data(), data.size());
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec)
    return absl::InternalError(absl::StrCat("rename ", tmp, " -> ", path, ": ", ec.message()));
  return absl::OkStatus();
}

nlohmann::ordered_json DemoConfig(const DemoModelOptions& o, int vocab_size, uint32_t eos) {
  nlohmann::ordered_json c;
  if (!o.model_name.empty()) c["model_name"] = o.model_name;
  if (o.vocab_size > 0) vocab_size = o.vocab_size;
  c["architectures"] = {"LlamaForCausalLM"};
  c["hidden_act"] = "silu";
  c["vocab_size"] = vocab_size;
  c["hidden_size"] = o.hidden_size;
  c["intermediate_size"] = o.intermediate_size;
  c["num_hidden_layers"] = o.num_hidden_layers;
  c["num_attention_heads"] = o.num_attention_heads;
  c["num_key_value_heads"] = o.num_key_value_heads;
  c["head_dim"] = o.head_dim > 0 ? o.head_dim : o.hidden_size / o.num_attention_heads;
  c["rms_norm_eps"] = 1e-5;
  c["rope_theta"] = 10000.0;
  c["max_position_embeddings"] = o.max_position_embeddings;
  c["tie_word_embeddings"] = true;
  c["bos_token_id"] = eos;
  c["eos_token_id"] = eos;
  c["torch_dtype"] = "bfloat16";
  if (!o.engram_layer_ids.empty()) {  // a plain Llama has no Engram keys at all
    c["engram_layer_ids"] = o.engram_layer_ids;
    c["engram_max_ngram_size"] = o.engram_max_ngram_size;
    c["engram_n_heads"] = o.engram_n_heads;
    c["engram_head_dim"] = o.engram_head_dim;
    c["engram_vocab_size"] = o.engram_vocab_size;
    // GPT-2 has no pad token; <|endoftext|> is what precedes a document, so it stands for
    // "before the sequence start" in the n-gram windows.
    c["engram_pad_token_id"] = eos;
    c["engram_seed"] = 0;
    c["engram_kernel_size"] = o.engram_kernel_size;
    c["hc_mult"] = 1;
  }
  // Not a model key: records the weights' seed so a different seed is not mistaken for this model.
  c["demo_weights_seed"] = o.seed;
  if (!o.engram_layer_ids.empty() && !o.write_tables) {
    // Not a model key either: the tables live only in the memory tier (`engram table synth`).
    c["demo_tables_in_store_only"] = true;
  }
  return c;
}

// Backbone (bf16, norms f32) and Engram module weights (f32) into `w`; the values are kept alive by
// `keep` until the file is written.
void AddBackbone(const ModelConfig& c, uint64_t seed, SafetensorsWriter* w) {
  const int64_t V = c.vocab_size, H = c.hidden_size, I = c.intermediate_size;
  const int64_t Q = c.q_width(), KV = c.kv_width();
  // Scales of a randomly initialised Llama that still does something visible per layer: unit-ish
  // embeddings (the tied lm_head then gives logits of order 1-10), projections ~ 1/sqrt(fan_in).
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float std, float mean = 0,
                 DType dtype = DType::kBF16) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    w->AddF32As(name, dtype, std::move(shape), Fill(seed, name, n, std, mean));
  };
  add("model.embed_tokens.weight", {V, H}, 0.5f);
  const float in_h = 1.0f / std::sqrt(float(H)), in_i = 1.0f / std::sqrt(float(I));
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(p + "input_layernorm.weight", {H}, 0.05f, 1.0f, DType::kF32);
    add(p + "self_attn.q_proj.weight", {Q, H}, in_h);
    add(p + "self_attn.k_proj.weight", {KV, H}, in_h);
    add(p + "self_attn.v_proj.weight", {KV, H}, in_h);
    add(p + "self_attn.o_proj.weight", {H, Q}, 1.0f / std::sqrt(float(Q)));
    add(p + "post_attention_layernorm.weight", {H}, 0.05f, 1.0f, DType::kF32);
    add(p + "mlp.gate_proj.weight", {I, H}, in_h);
    add(p + "mlp.up_proj.weight", {I, H}, in_h);
    add(p + "mlp.down_proj.weight", {H, I}, in_i);
    if (c.engram.LayerIndex(l) < 0) continue;
    // The Engram module under the reference names (hc_mult = 1).
    const std::string e = p + "engram.";
    const int64_t D = c.engram.d_mem(), K = c.engram.kernel_size;
    const float in_d = 1.0f / std::sqrt(float(D));
    add(e + "value_proj.weight", {H, D}, in_d, 0, DType::kF32);
    add(e + "value_proj.bias", {H}, 0.02f, 0, DType::kF32);
    add(e + "key_projs.0.weight", {H, D}, in_d, 0, DType::kF32);
    add(e + "key_projs.0.bias", {H}, 0.02f, 0, DType::kF32);
    add(e + "norm1.0.weight", {H}, 0.05f, 1.0f, DType::kF32);
    add(e + "norm2.0.weight", {H}, 0.05f, 1.0f, DType::kF32);
    if (K > 0) {
      add(e + "short_conv.conv.weight", {H, 1, K}, 0.2f, 0, DType::kF32);
      add(e + "short_conv.norms.0.weight", {H}, 0.05f, 1.0f, DType::kF32);
    }
  }
  add("model.norm.weight", {H}, 0.05f, 1.0f, DType::kF32);
}

// The tables: rows x head_dim bf16 values with unit variance (the reference's nn.Embedding init
// scale), produced in chunks straight into the file.
void AddTables(const ModelConfig& c, const EngramConstants& constants, uint64_t seed,
               SafetensorsWriter* w) {
  for (size_t li = 0; li < c.engram.layer_ids.size(); ++li) {
    const std::string name = EngramTableTensorName(c.engram.layer_ids[li]);
    const uint64_t key = StreamKey(seed, name);
    w->AddProduced(name, DType::kBF16, {constants.hash.rows_per_layer[li], c.engram.head_dim},
                   [key](uint64_t offset, uint8_t* out, size_t n) {
                     const uint64_t first = offset / 2;
                     for (size_t i = 0; i < n / 2; ++i) {
                       uint16_t bits = F32ToBf16(Value(key, first + i, 1.0f));
                       out[2 * i] = static_cast<uint8_t>(bits);
                       out[2 * i + 1] = static_cast<uint8_t>(bits >> 8);
                     }
                     return absl::OkStatus();
                   });
  }
}

bool Complete(const std::string& dir, const std::string& config_text,
              const std::string& tokenizer_text, bool engram) {
  auto config = ReadFile(dir + "/config.json");
  auto tokenizer = ReadFile(dir + "/tokenizer.json");
  std::error_code ec;
  return config.ok() && *config == config_text && tokenizer.ok() && *tokenizer == tokenizer_text &&
         fs::exists(dir + "/model.safetensors", ec) &&
         (!engram || fs::exists(dir + "/" + kEngramConstantsFile, ec));
}

absl::Status Write(const std::string& dir, const DemoModelOptions& options) {
  const std::string tokenizer_path =
      options.tokenizer_path.empty() ? DefaultDemoTokenizerPath() : options.tokenizer_path;
  absl::StatusOr<std::string> tokenizer_text = ReadFile(tokenizer_path);
  if (!tokenizer_text.ok()) {
    return absl::NotFoundError(
        absl::StrCat("cannot read the tokenizer ", tokenizer_path,
                     " (run scripts/fetch-testdata.sh, or pass --tokenizer)"));
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> parsed = Tokenizer::FromJson(*tokenizer_text);
  if (!parsed.ok()) return Annotate(parsed.status(), tokenizer_path);
  std::unique_ptr<Tokenizer> tokenizer = *std::move(parsed);
  std::optional<uint32_t> eos = tokenizer->SpecialTokenId(kEndOfText);
  if (!eos) {
    return absl::InvalidArgumentError(
        absl::StrCat(tokenizer_path, " has no ", kEndOfText, " token (the demo needs GPT-2's)"));
  }
  const int vocab_size = static_cast<int>(tokenizer->max_id()) + 1;
  // A random model samples every id of its vocabulary; with Engram an id past the tokenizer has no
  // compressed id, and the request that samples it would fail.
  if (!options.engram_layer_ids.empty() && options.vocab_size > vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the vocabulary (", options.vocab_size, " ids) is larger than what ", tokenizer_path,
        " covers (", vocab_size, " ids), so sampled ids past it could not be hashed by Engram; ",
        "use a vocabulary of ", vocab_size, " (engram model init-random --vocab-size ", vocab_size,
        ", and the same for the dense model you compare with)"));
  }
  const std::string config_text = DemoConfig(options, vocab_size, *eos).dump(2) + "\n";
  if (Complete(dir, config_text, *tokenizer_text, !options.engram_layer_ids.empty())) {
    ENGRAM_LOG(INFO).With("dir", dir) << "demo model already present";
    return absl::OkStatus();
  }

  ENGRAM_ASSIGN_OR_RETURN(
      ModelConfig config,
      ParseModelConfig(nlohmann::json::parse(config_text, nullptr, false), dir));
  EngramConstants constants;
  if (config.has_engram()) {
    ENGRAM_ASSIGN_OR_RETURN(constants, ComputeEngramConstants(config.engram, *tokenizer));
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  // config.json goes last: its presence with the expected content marks a complete model.
  fs::remove(dir + "/config.json", ec);

  SafetensorsWriter writer;
  writer.SetMetadata("format", "pt");
  writer.SetMetadata("generator", options.generator);
  AddBackbone(config, options.seed, &writer);
  if (options.write_tables) AddTables(config, constants, options.seed, &writer);
  ENGRAM_RETURN_IF_ERROR(writer.Write(dir + "/model.safetensors"));
  ENGRAM_RETURN_IF_ERROR(WriteFileAtomically(dir + "/tokenizer.json", *tokenizer_text));
  if (config.has_engram()) {
    ENGRAM_RETURN_IF_ERROR(WriteEngramConstants(constants, dir + "/" + kEngramConstantsFile));
  }
  ENGRAM_RETURN_IF_ERROR(WriteFileAtomically(dir + "/config.json", config_text));
  int64_t rows = 0;
  for (int64_t r : constants.hash.rows_per_layer) rows += r;
  ENGRAM_LOG(INFO)
          .With("dir", dir)
          .With("vocab", vocab_size)
          .With("engram_layers", config.engram.layer_ids.size())
          .With("table_rows", rows)
      << "demo model written";
  return absl::OkStatus();
}

}  // namespace

std::string DefaultDemoTokenizerPath() {
  const char* env = std::getenv("ENGRAM_TESTDATA_DIR");
  const std::string root = env && *env ? env : ENGRAM_DEFAULT_TESTDATA_DIR;
  return root + "/tokenizer-gpt2/package/models/tokenizer.json";
}

absl::Status WriteDemoModel(const std::string& dir, const DemoModelOptions& options) {
  // The name keys the model's tables and is written into config.json, which must be UTF-8.
  if (tokenizer_internal::FindInvalidUtf8(options.model_name) != absl::string_view::npos) {
    return absl::InvalidArgumentError("demo model: the model name is not valid UTF-8");
  }
  const int head_dim = options.head_dim > 0 ? options.head_dim
                       : options.num_attention_heads > 0
                           ? options.hidden_size / options.num_attention_heads
                           : 0;
  if (options.hidden_size < 2 || options.num_attention_heads < 1 || head_dim % 2 != 0 ||
      (options.head_dim == 0 && options.hidden_size % options.num_attention_heads != 0)) {
    return absl::InvalidArgumentError(
        "demo model: hidden_size must split into an even head_dim per attention head");
  }
  absl::Status st = Write(dir, options);
  if (!st.ok()) return Annotate(st, absl::StrCat("writing the demo model to ", dir));
  return st;
}

absl::StatusOr<DemoModelOptions> RandomModelPreset(const std::string& name) {
  DemoModelOptions o;
  o.engram_layer_ids.clear();
  o.generator = "engram model init-random";
  o.model_name = "random-" + name;
  if (name == "dense-4b" || name == "dense-8b") {
    const bool big = name == "dense-8b";
    o.vocab_size = 151936;
    o.hidden_size = big ? 4096 : 2560;
    o.intermediate_size = big ? 12288 : 9728;
    o.num_hidden_layers = 36;
    o.num_attention_heads = 32;
    o.num_key_value_heads = 8;
    o.head_dim = 128;
    o.max_position_embeddings = 4096;
    return o;
  }
  if (name == "tiny") {
    o.hidden_size = 256;
    o.intermediate_size = 512;
    o.num_hidden_layers = 4;
    o.num_attention_heads = 4;
    o.num_key_value_heads = 2;
    o.head_dim = 64;
    return o;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown preset \"", name, "\" (dense-4b, dense-8b or tiny)"));
}

absl::Status SetRandomEngram(const RandomEngramShape& shape, DemoModelOptions* o) {
  if (shape.layer_ids.empty()) {
    return absl::InvalidArgumentError("--engram-layers: at least one Engram layer is needed");
  }
  for (int l : shape.layer_ids) {
    if (l < 0 || l >= o->num_hidden_layers) {
      return absl::InvalidArgumentError(absl::StrCat("--engram-layers: layer ", l,
                                                     " is outside the backbone's 0..",
                                                     o->num_hidden_layers - 1));
    }
  }
  if (shape.max_ngram_size < 2 || shape.max_ngram_size > 8) {
    return absl::InvalidArgumentError(absl::StrCat("--engram-max-ngram: ", shape.max_ngram_size,
                                                   " must be in [2, 8] (orders 2..N)"));
  }
  if (shape.n_heads < 1 || shape.n_heads > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("--engram-heads: ", shape.n_heads, " must be in [1, 64]"));
  }
  if (shape.head_dim < 1 || shape.head_dim > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("--engram-head-dim: ", shape.head_dim, " must be in [1, 1024]"));
  }
  const double columns = double(shape.max_ngram_size - 1) * shape.n_heads;
  const double rows = shape.params_per_layer / shape.head_dim;
  if (!(rows >= 2 * columns) || rows > double(int64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--engram-params: ", shape.params_per_layer, " parameters of width ", shape.head_dim,
        " give ", rows, " rows; a table needs between ", 2 * columns, " and 2^40 rows"));
  }
  o->engram_layer_ids = shape.layer_ids;
  o->engram_max_ngram_size = shape.max_ngram_size;
  o->engram_n_heads = shape.n_heads;
  o->engram_head_dim = shape.head_dim;
  o->engram_vocab_size = static_cast<int64_t>(rows / columns);
  o->engram_kernel_size = shape.kernel_size;
  o->write_tables = false;
  return absl::OkStatus();
}

}  // namespace engram
