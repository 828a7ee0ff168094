// `engram model`: the model directory on this machine.
//
//   engram model init-demo DIR [--tokenizer FILE] [--name NAME] [--engram-vocab-size N]
//       writes the built-in demo model (model/demo_model.h); idempotent.
//   engram model init-random DIR --preset dense-4b|dense-8b|tiny [--tokenizer FILE] [--name NAME]
//       [--vocab-size N] [--engram-layers 1[,L...] --engram-params 100e9 [--engram-max-ngram 3]
//        [--engram-heads 8] [--engram-head-dim 256] [--engram-kernel 4]]
//       writes random bf16 weights of a real model's shape (model/demo_model.h); --vocab-size
//       replaces the preset's vocabulary. With --engram-layers, Engram modules whose tables
//       (~params per layer) `engram table synth` writes into the memory tier's store; the tokenizer
//       must then cover every id the model can sample (the Engram hash compresses each token
//       through it): a preset whose vocabulary is larger is refused with the --vocab-size to use.
//   engram model info DIR
//       loads the model as the worker does and prints a JSON summary.
//   engram model run DIR (--prompt TEXT | --tokens 1,2,3) [--max-tokens N] [--temperature T]
//       [--top-k K] [--top-p P] [--seed S] [--stop STR] [--prefill-chunk N] [--threads N]
//       [--device cuda|cpu|auto]
//       generates in-process (model/local_generate.h: no server, rows from the model's own tables)
//       and prints the text, then a JSON line with the token ids and the finish reason.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli.h"
#include "common/ngram_hash.h"
#include "common/status.h"
#include "model/backbone_factory.h"
#include "model/demo_model.h"
#include "model/local_generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace engram::cli {
namespace {

constexpr char kUsage[] =
    "usage: engram model init-demo DIR [--tokenizer FILE] [--name NAME] [--engram-vocab-size N]\n"
    "       engram model info DIR\n"
    "       engram model run DIR (--prompt TEXT | --tokens 1,2,3) [--max-tokens N]\n"
    "           [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop STR]\n"
    "           [--prefill-chunk N] [--threads N] [--device cuda|cpu|auto]\n"
    "       engram model init-random DIR --preset dense-4b|dense-8b|tiny [--tokenizer FILE]\n"
    "           [--name NAME] [--vocab-size N] [--engram-layers 1[,L...] --engram-params 100e9\n"
    "           [--engram-max-ngram 3] [--engram-heads 8] [--engram-head-dim 256]\n"
    "           [--engram-kernel 4]]\n";

absl::StatusOr<std::string> OneDir(const Args& args) {
  if (args.positional().size() != 1) {
    return absl::InvalidArgumentError("expected exactly one model directory");
  }
  return args.positional()[0];
}

absl::Status InitDemo(int argc, char** argv) {
  ENGRAM_ASSIGN_OR_RETURN(Args args,
                          Args::Parse(argc, argv, {"tokenizer", "name", "engram-vocab-size"}));
  ENGRAM_ASSIGN_OR_RETURN(std::string dir, OneDir(args));
  DemoModelOptions options;
  options.tokenizer_path = args.GetOr("tokenizer", "");
  options.model_name = args.GetOr("name", options.model_name);
  ENGRAM_ASSIGN_OR_RETURN(
      options.engram_vocab_size,
      args.GetInt("engram-vocab-size", options.engram_vocab_size, 2, int64_t{1} << 32));
  ENGRAM_RETURN_IF_ERROR(WriteDemoModel(dir, options));
  std::printf("demo model ready in %s\n", dir.c_str());
  return absl::OkStatus();
}

absl::Status InitRandom(int argc, char** argv) {
  ENGRAM_ASSIGN_OR_RETURN(
      Args args,
      Args::Parse(argc, argv,
                  {"preset", "tokenizer", "name", "vocab-size", "engram-layers", "engram-params",
                   "engram-max-ngram", "engram-heads", "engram-head-dim", "engram-kernel"}));
  ENGRAM_ASSIGN_OR_RETURN(std::string dir, OneDir(args));
  if (!args.Has("preset")) return absl::InvalidArgumentError("--preset is required");
  ENGRAM_ASSIGN_OR_RETURN(DemoModelOptions options, RandomModelPreset(*args.Get("preset")));
  options.tokenizer_path = args.GetOr("tokenizer", "");
  options.model_name = args.GetOr("name", options.model_name);
  ENGRAM_ASSIGN_OR_RETURN(const int64_t vocab,
                          args.GetInt("vocab-size", options.vocab_size, 2, int64_t{1} << 24));
  options.vocab_size = static_cast<int>(vocab);
  if (args.Has("engram-layers") != args.Has("engram-params")) {
    return absl::InvalidArgumentError("--engram-layers and --engram-params go together");
  }
  if (args.Has("engram-layers")) {
    RandomEngramShape shape;
    ENGRAM_ASSIGN_OR_RETURN(std::vector<uint32_t> layers,
                            ParseTokenIds(*args.Get("engram-layers"), "engram-layers"));
    for (uint32_t l : layers) shape.layer_ids.push_back(static_cast<int>(l));
    ENGRAM_ASSIGN_OR_RETURN(shape.params_per_layer, args.GetDouble("engram-params", 0));
    ENGRAM_ASSIGN_OR_RETURN(int64_t n, args.GetInt("engram-max-ngram", 3, 2, 8));
    ENGRAM_ASSIGN_OR_RETURN(int64_t heads, args.GetInt("engram-heads", 8, 1, 64));
    ENGRAM_ASSIGN_OR_RETURN(int64_t head_dim, args.GetInt("engram-head-dim", 256, 1, 1024));
    ENGRAM_ASSIGN_OR_RETURN(int64_t kernel, args.GetInt("engram-kernel", 4, 0, 16));
    shape.max_ngram_size = static_cast<int>(n);
    shape.n_heads = static_cast<int>(heads);
    shape.head_dim = static_cast<int>(head_dim);
    shape.kernel_size = static_cast<int>(kernel);
    ENGRAM_RETURN_IF_ERROR(SetRandomEngram(shape, &options));
  }
  ENGRAM_RETURN_IF_ERROR(WriteDemoModel(dir, options));
  std::printf("random %s model ready in %s\n", args.Get("preset")->c_str(), dir.c_str());
  if (!options.write_tables) {
    std::printf("its Engram tables are not in the files: engram table synth %s --store DIR\n",
                dir.c_str());
  }
  return absl::OkStatus();
}

absl::Status Info(int argc, char** argv) {
  ENGRAM_ASSIGN_OR_RETURN(Args args, Args::Parse(argc, argv, {}));
  ENGRAM_ASSIGN_OR_RETURN(std::string dir, OneDir(args));
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<const Model> model, Model::Load(dir));
  const ModelConfig& c = model->config();
  int64_t params = 0;
  for (const TensorView* t : model->tensors().tensors()) params += t->num_elements();
  nlohmann::ordered_json j;
  j["name"] = model->name();
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["eos_token_ids"] = c.eos_token_ids;
  j["parameters_in_files"] = params;
  if (c.has_engram()) {
    j["engram_layer_ids"] = c.engram.layer_ids;
    j["engram_d_mem"] = c.engram.d_mem();
    j["engram_compressed_vocab_size"] = model->hash_constants().compressed_vocab_size;
    j["engram_rows_per_layer"] = model->hash_constants().rows_per_layer;
  }
  // The name may come from a directory name that is not UTF-8; show it, do not throw.
  std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  return absl::OkStatus();
}

absl::Status Run(int argc, char** argv) {
  ENGRAM_ASSIGN_OR_RETURN(
      Args args, Args::Parse(argc, argv,
                             {"prompt", "tokens", "max-tokens", "temperature", "top-k", "top-p",
                              "seed", "stop", "prefill-chunk", "threads", "device"}));
  ENGRAM_ASSIGN_OR_RETURN(std::string dir, OneDir(args));
  if (args.Has("prompt") == args.Has("tokens")) {
    return absl::InvalidArgumentError("give exactly one of --prompt and --tokens");
  }
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<const Model> model, Model::Load(dir));
  std::vector<uint32_t> prompt;
  if (args.Has("prompt")) {
    ENGRAM_ASSIGN_OR_RETURN(prompt, model->tokenizer().Encode(*args.Get("prompt")));
  } else {
    ENGRAM_ASSIGN_OR_RETURN(prompt, ParseTokenIds(*args.Get("tokens"), "tokens"));
  }
  LocalGenerateOptions o;
  ENGRAM_ASSIGN_OR_RETURN(int64_t max_tokens, args.GetInt("max-tokens", 32, 1, 1 << 20));
  o.stop.max_tokens = static_cast<int>(max_tokens);
  o.stop.eos_token_ids = model->config().eos_token_ids;
  if (auto stop = args.Get("stop")) o.stop.stop_strings.push_back(*stop);
  ENGRAM_ASSIGN_OR_RETURN(double temperature, args.GetDouble("temperature", 0.0));
  ENGRAM_ASSIGN_OR_RETURN(double top_p, args.GetDouble("top-p", 1.0));
  ENGRAM_ASSIGN_OR_RETURN(int64_t top_k, args.GetInt("top-k", 0, 0, 1 << 30));
  ENGRAM_ASSIGN_OR_RETURN(int64_t seed, args.GetInt("seed", 0, 0, INT64_MAX));
  ENGRAM_ASSIGN_OR_RETURN(int64_t chunk, args.GetInt("prefill-chunk", 0, 0, 1 << 20));
  ENGRAM_ASSIGN_OR_RETURN(int64_t threads, args.GetInt("threads", 0, 0, 256));
  o.sampling = {.temperature = static_cast<float>(temperature),
                .top_k = static_cast<int>(top_k),
                .top_p = static_cast<float>(top_p),
                .seed = static_cast<uint64_t>(seed)};
  o.prefill_chunk = static_cast<int>(chunk);
  o.threads = static_cast<int>(threads);
  BackboneOptions backbone_options;
  backbone_options.device = args.GetOr("device", "auto");
  backbone_options.threads = o.threads;
  backbone_options.max_batch_sequences = 1;
  backbone_options.max_step_tokens =
      std::max<int>(1, o.prefill_chunk > 0 ? o.prefill_chunk : static_cast<int>(prompt.size()));
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<Backbone> backbone,
                          CreateBackbone(*model, backbone_options));
  ENGRAM_ASSIGN_OR_RETURN(LocalGenerateResult r, LocalGenerate(*model, *backbone, prompt, o));
  nlohmann::json j;
  j["prompt_tokens"] = prompt.size();
  j["tokens"] = r.tokens;
  j["finish_reason"] = std::string(FinishReasonName(r.finish_reason));
  j["device"] = backbone->device_name();
  std::printf("%s\n%s\n", r.text.c_str(), j.dump().c_str());
  return absl::OkStatus();
}

int ModelCommand(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string sub = argv[1];
  absl::Status st;
  if (sub == "init-demo") {
    st = InitDemo(argc - 1, argv + 1);
  } else if (sub == "init-random") {
    st = InitRandom(argc - 1, argv + 1);
  } else if (sub == "info") {
    st = Info(argc - 1, argv + 1);
  } else if (sub == "run") {
    st = Run(argc - 1, argv + 1);
  } else {
    std::fputs(kUsage, stderr);
    return 2;
  }
  return st.ok() ? 0 : Fail(absl::StrCat("model ", sub), st);
}

}  // namespace

ENGRAM_CLI_COMMAND(model, "model",
                   "init-demo / init-random / info / run: the model directory on this machine",
                   ModelCommand);

}  // namespace engram::cli
