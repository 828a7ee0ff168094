// `engram eval`: per-token cross-entropy of a text through the real forward pass.
//
//   engram eval MODEL_DIR --text FILE [--device cpu|cuda|auto] [--zero-engram] [--drop-engram]
//       [--window N] [--threads N]
//
// The text is encoded with the model's tokenizer (no BOS or other added token) into ids
// t_0..t_{n-1} and cut into windows of at most N tokens (N = --window, default the model's
// max_position_embeddings) that overlap by one token: window k holds t_{k(N-1)} .. t_{k(N-1)+N-1}.
// Each window is a fresh sequence (empty KV cache, Engram hashing history and conv state), fed one
// token per step through Backbone::Step (the path a decode step takes); the logits after token j
// predict token j+1 of the window. So every token but the first is predicted exactly once, and
// tokens = n - 1. Windows run side by side as one batch (the backbone's outputs do not depend on
// batch-mates).
//
// Engram rows come from the model's own tables (TableRowSource, model/local_generate.h), as in
// `engram model run`:
//   (default)       the table rows of the hashed n-grams;
//   --zero-engram   every row is zero; the Engram modules still run (their gates, value
//                   projections and short conv see zero memory);
//   --drop-engram   the Engram modules are skipped entirely (h passes through unchanged at the
//                   Engram layers: the backbone alone). CPU only.
//
// Prints one JSON line: {"tokens", "nll_per_token" (nats), "perplexity" (exp of it), "nll_sum",
// "text_tokens", "windows", "window", "engram" ("tables"|"zero"|"drop"|"none"), "device"}.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli.h"
#include "common/status.h"
#include "model/backbone_factory.h"
#include "model/cpu_backbone.h"
#include "model/local_generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace engram::cli {
namespace {

constexpr char kUsage[] =
    "usage: engram eval MODEL_DIR --text FILE [--device cpu|cuda|auto] [--zero-engram]\n"
    "           [--drop-engram] [--window N] [--threads N]\n";

// Windows evaluated side by side in one batch.
constexpr size_t kMaxBatch = 64;

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("the text file ", path, " is a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open text file ", path));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.empty())
    return absl::InvalidArgumentError(absl::StrCat("the text file ", path, " is empty"));
  return text;
}

// Zero rows of the right size for every (item, layer).
class ZeroRows : public EngramRowSource {
 public:
  explicit ZeroRows(int d_mem) : d_mem_(d_mem) {}
  void Prepare(absl::Span<const BatchItem> items) {
    size_t most = 0;
    for (const BatchItem& item : items) most = std::max(most, item.tokens.size());
    zeros_.assign(most * d_mem_, 0.0f);
    sizes_.clear();
    for (const BatchItem& item : items) sizes_.push_back(item.tokens.size() * d_mem_);
  }
  absl::StatusOr<absl::Span<const float>> Rows(size_t item, int) override {
    if (item >= sizes_.size()) return absl::InternalError("ZeroRows: no such item");
    return absl::MakeConstSpan(zeros_.data(), sizes_[item]);
  }

 private:
  int d_mem_;
  std::vector<float> zeros_;
  std::vector<size_t> sizes_;
};

class NoRows : public EngramRowSource {
 public:
  absl::StatusOr<absl::Span<const float>> Rows(size_t, int) override {
    return absl::InternalError("the Engram modules were dropped; no rows are read");
  }
};

// -log softmax(logits)[target], in double.
double Nll(const float* logits, int vocab, uint32_t target) {
  float m = logits[0];
  for (int v = 1; v < vocab; ++v) m = std::max(m, logits[v]);
  double sum = 0;
  for (int v = 0; v < vocab; ++v) sum += std::exp(double(logits[v]) - double(m));
  return double(m) + std::log(sum) - double(logits[target]);
}

absl::Status Eval(int argc, char** argv) {
  ENGRAM_ASSIGN_OR_RETURN(Args args,
                          Args::Parse(argc, argv, {"text", "device", "window", "threads"},
                                      {"zero-engram", "drop-engram"}));
  if (args.positional().size() != 1) {
    return absl::InvalidArgumentError("expected exactly one model directory");
  }
  const std::string dir = args.positional()[0];
  ENGRAM_ASSIGN_OR_RETURN(std::string text_path, args.Require("text"));
  const bool zero = args.Has("zero-engram");
  const bool drop = args.Has("drop-engram");
  if (zero && drop) {
    return absl::InvalidArgumentError("give at most one of --zero-engram and --drop-engram");
  }
  const std::string device = args.GetOr("device", "auto");
  if (drop && device == "cuda") {
    return absl::InvalidArgumentError("--drop-engram runs on the CPU backbone only");
  }
  ENGRAM_ASSIGN_OR_RETURN(int64_t threads, args.GetInt("threads", 0, 0, 256));
  ENGRAM_ASSIGN_OR_RETURN(std::string text, ReadText(text_path));
  ENGRAM_ASSIGN_OR_RETURN(std::unique_ptr<const Model> model, Model::Load(dir));
  const ModelConfig& config = model->config();
  ENGRAM_ASSIGN_OR_RETURN(int64_t window, args.GetInt("window", config.max_position_embeddings, 2,
                                                      config.max_position_embeddings));
  ENGRAM_ASSIGN_OR_RETURN(std::vector<uint32_t> ids, model->tokenizer().Encode(text));
  if (ids.size() < 2) {
    return absl::InvalidArgumentError(absl::StrCat("the text file ", text_path, " has ", ids.size(),
                                                   " token(s); at least 2 are needed"));
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] >= static_cast<uint32_t>(config.vocab_size)) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", i, " (id ", ids[i], ") is outside the model's vocabulary"));
    }
  }

  // Windows [start, start + len) overlapping by one token.
  struct Window {
    size_t start, len;
  };
  std::vector<Window> windows;
  for (size_t start = 0; start + 1 < ids.size(); start += window - 1) {
    windows.push_back({start, std::min<size_t>(window, ids.size() - start)});
  }

  // The backbone: the model's own (device as asked), or a CPU one without Engram modules.
  std::unique_ptr<Backbone> backbone;
  ModelConfig dropped_config = config;
  std::string engram_mode = !config.has_engram() ? "none"
                            : drop               ? "drop"
                            : zero               ? "zero"
                                                 : "tables";
  if (drop && config.has_engram()) {
    dropped_config.engram.layer_ids.clear();
    backbone = std::make_unique<CpuBackbone>(
        dropped_config, model->weights(), std::vector<const EngramModule*>{},
        CpuBackboneOptions{.threads = static_cast<int>(threads)});
  } else {
    BackboneOptions o;
    o.device = drop ? "cpu" : device;
    o.threads = static_cast<int>(threads);
    o.max_batch_sequences = static_cast<int>(std::min(kMaxBatch, windows.size()));
    o.max_step_tokens = o.max_batch_sequences;
    ENGRAM_ASSIGN_OR_RETURN(backbone, CreateBackbone(*model, o));
  }
  const bool tables = engram_mode == "tables";
  std::unique_ptr<TableRowSource> table_rows;
  if (tables) {
    ENGRAM_ASSIGN_OR_RETURN(table_rows, TableRowSource::Create(*model));
  }
  ZeroRows zero_rows(config.has_engram() ? config.engram.d_mem() : 0);
  NoRows no_rows;

  const int vocab = config.vocab_size;
  double nll_sum = 0;
  size_t predicted = 0;
  for (size_t first = 0; first < windows.size(); first += kMaxBatch) {
    const size_t batch = std::min(kMaxBatch, windows.size() - first);
    std::vector<std::unique_ptr<SequenceState>> seqs;
    std::vector<std::unique_ptr<TableRowSource::History>> histories;
    for (size_t b = 0; b < batch; ++b) {
      const Window& w = windows[first + b];
      seqs.push_back(backbone->NewSequence(static_cast<int>(w.len)));
      ENGRAM_RETURN_IF_ERROR(backbone->Reserve(*seqs.back(), static_cast<int>(w.len)));
      if (table_rows) histories.push_back(table_rows->NewHistory());
    }
    std::vector<float> logits;
    // Step j feeds token j of every window that predicts from it (j < len - 1).
    for (size_t j = 0;; ++j) {
      std::vector<BatchItem> items;
      std::vector<size_t> which;
      std::vector<TableRowSource::History*> hs;
      for (size_t b = 0; b < batch; ++b) {
        const Window& w = windows[first + b];
        if (j + 1 >= w.len) continue;
        items.push_back(
            BatchItem{seqs[b].get(), absl::MakeConstSpan(&ids[w.start + j], 1), nullptr});
        which.push_back(b);
        if (table_rows) hs.push_back(histories[b].get());
      }
      if (items.empty()) break;
      EngramRowSource* rows = &no_rows;
      if (table_rows) {
        ENGRAM_RETURN_IF_ERROR(table_rows->Prepare(items, hs));
        rows = table_rows.get();
      } else if (engram_mode == "zero") {
        zero_rows.Prepare(items);
        rows = &zero_rows;
      }
      logits.resize(items.size() * size_t(vocab));
      StepOutput out;
      out.logits = logits.data();
      ENGRAM_RETURN_IF_ERROR(backbone->Step(items, *rows, &out));
      for (size_t i = 0; i < items.size(); ++i) {
        ENGRAM_RETURN_IF_ERROR(out.status[i]);
        const Window& w = windows[first + which[i]];
        nll_sum += Nll(&logits[i * size_t(vocab)], vocab, ids[w.start + j + 1]);
        ++predicted;
      }
    }
  }

  const double nll = nll_sum / double(predicted);
  nlohmann::ordered_json j;
  j["tokens"] = predicted;
  j["nll_per_token"] = nll;
  j["perplexity"] = std::exp(nll);
  j["nll_sum"] = nll_sum;
  j["text_tokens"] = ids.size();
  j["windows"] = windows.size();
  j["window"] = window;
  j["engram"] = engram_mode;
  j["device"] = backbone->device_name();
  std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  return absl::OkStatus();
}

int EvalCommand(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  absl::Status st = Eval(argc, argv);
  return st.ok() ? 0 : Fail("eval", st);
}

}  // namespace

ENGRAM_CLI_COMMAND(eval, "eval",
                   "per-token cross-entropy and perplexity of a text file through the forward pass",
                   EvalCommand);

}  // namespace engram::cli
