#include "model/local_generate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/ngram_hash.h"
#include "common/row_format.h"
#include "common/status.h"
#include "model/engram_constants.h"
#include "model/output_text.h"
#include "model/tokenizer.h"

namespace engram {

struct TableRowSource::Impl {
  const Model& model;
  std::vector<ModelTable> tables;                     // [engram layer index]
  std::vector<std::vector<std::vector<float>>> rows;  // [item][engram layer index] (n, d_mem)

  explicit Impl(const Model& m) : model(m) {}
};

TableRowSource::TableRowSource(const Model& model) : impl_(std::make_unique<Impl>(model)) {}
TableRowSource::~TableRowSource() = default;

absl::StatusOr<std::unique_ptr<TableRowSource>> TableRowSource::Create(const Model& model) {
  std::unique_ptr<TableRowSource> source(new TableRowSource(model));
  Impl& impl = *source->impl_;
  const EngramConfig& ec = model.config().engram;
  for (size_t li = 0; li < ec.layer_ids.size(); ++li) {
    absl::StatusOr<ModelTable> t =
        FindModelTable(model.tensors(), model.dir(), ec.layer_ids[li], ec.head_dim);
    if (absl::IsNotFound(t.status())) {
      return absl::FailedPreconditionError(
          absl::StrCat(t.status().message(),
                       " (in-process generation reads the tables from the model's "
                       "safetensors)"));
    }
    if (!t.ok()) return t.status();
    if (static_cast<int64_t>(t->rows) != model.hash_constants().rows_per_layer[li]) {
      return absl::FailedPreconditionError(absl::StrCat(
          t->values->name, " has ", t->rows, " rows; the model's Engram constants address ",
          model.hash_constants().rows_per_layer[li]));
    }
    impl.tables.push_back(*t);
  }
  return source;
}

std::unique_ptr<TableRowSource::History> TableRowSource::NewHistory() const {
  return std::make_unique<History>(History{NgramState(impl_->model.hash_constants())});
}

absl::Status TableRowSource::Prepare(absl::Span<const BatchItem> items,
                                     absl::Span<History* const> histories) {
  if (items.size() != histories.size()) {
    return absl::InvalidArgumentError("Prepare: one history per item is needed");
  }
  Impl& impl = *impl_;
  const EngramConstants& constants = impl.model.engram_constants();
  const EngramHashConstants& hash = constants.hash;
  const int head_dim = impl.model.config().engram.head_dim;
  const int columns = hash.columns();
  impl.rows.assign(items.size(), {});
  for (size_t i = 0; i < items.size(); ++i) {
    ENGRAM_ASSIGN_OR_RETURN(std::vector<int64_t> ids, constants.Compress(items[i].tokens));
    const size_t n = ids.size();
    std::vector<int64_t> row_ids(n * columns);
    for (int li = 0; li < hash.num_layers(); ++li) {
      ENGRAM_RETURN_IF_ERROR(ComputeNgramRowIds(hash, li, histories[i]->state.Context(), ids,
                                                absl::MakeSpan(row_ids)));
      // (n, columns) rows of head_dim = (n, d_mem), in (order, head) column order.
      std::vector<float> rows(n * columns * head_dim);
      for (size_t r = 0; r < row_ids.size(); ++r) {
        ENGRAM_RETURN_IF_ERROR(DecodeModelTableRow(
            impl.tables[li], static_cast<uint64_t>(row_ids[r]), &rows[r * head_dim]));
      }
      impl.rows[i].push_back(std::move(rows));
    }
    for (int64_t id : ids) ENGRAM_RETURN_IF_ERROR(histories[i]->state.Push(id));
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<const float>> TableRowSource::Rows(size_t item, int engram_layer_index) {
  if (item >= impl_->rows.size() || engram_layer_index < 0 ||
      engram_layer_index >= static_cast<int>(impl_->rows[item].size())) {
    return absl::FailedPreconditionError(
        "TableRowSource: no rows prepared for this item and layer");
  }
  return absl::MakeConstSpan(impl_->rows[item][engram_layer_index]);
}

namespace {

absl::Status Check(const Model& model, absl::Span<const uint32_t> prompt,
                   const LocalGenerateOptions& options, int context) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] >= static_cast<uint32_t>(model.config().vocab_size)) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token ", i, " (id ", prompt[i], ") is outside the vocabulary"));
    }
  }
  if (static_cast<int>(prompt.size()) >= context) {
    return absl::InvalidArgumentError(
        absl::StrCat("the prompt has ", prompt.size(), " tokens; the context holds ", context));
  }
  if (options.stop.max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be >= 1");
  return ValidateSamplingParams(options.sampling);
}

}  // namespace

absl::StatusOr<LocalGenerateResult> LocalGenerate(const Model& model,
                                                  absl::Span<const uint32_t> prompt,
                                                  const LocalGenerateOptions& options) {
  CpuBackbone backbone(model, CpuBackboneOptions{.threads = options.threads});
  return LocalGenerate(model, backbone, prompt, options);
}

absl::StatusOr<LocalGenerateResult> LocalGenerate(const Model& model, Backbone& backbone,
                                                  absl::Span<const uint32_t> prompt,
                                                  const LocalGenerateOptions& options) {
  const int max_context = model.config().max_position_embeddings;
  const int context =
      options.max_context > 0 ? std::min(options.max_context, max_context) : max_context;
  ENGRAM_RETURN_IF_ERROR(Check(model, prompt, options, context));

  std::unique_ptr<SequenceState> seq = backbone.NewSequence(context);
  ENGRAM_RETURN_IF_ERROR(backbone.Reserve(*seq, static_cast<int>(prompt.size())));
  std::unique_ptr<TableRowSource> rows;
  std::unique_ptr<TableRowSource::History> history;
  if (model.config().has_engram()) {
    ENGRAM_ASSIGN_OR_RETURN(rows, TableRowSource::Create(model));
    history = rows->NewHistory();
  }
  Sampler sampler(options.sampling);
  // One step of the sequence alone: the same path a scheduler step takes with a batch of one.
  // Returns the sampled token when `sample` is set.
  auto step = [&](absl::Span<const uint32_t> tokens, bool sample) -> absl::StatusOr<uint32_t> {
    ENGRAM_RETURN_IF_ERROR(backbone.Reserve(*seq, static_cast<int>(tokens.size())));
    BatchItem item{seq.get(), tokens, sample ? &sampler : nullptr};
    TableRowSource::History* h = history.get();
    if (rows) ENGRAM_RETURN_IF_ERROR(rows->Prepare({item}, {&h, 1}));
    struct NoRows : EngramRowSource {
      absl::StatusOr<absl::Span<const float>> Rows(size_t, int) override {
        return absl::InternalError("the model has no Engram layers");
      }
    } no_rows;
    StepOutput out;
    ENGRAM_RETURN_IF_ERROR(
        backbone.Step({item}, rows ? static_cast<EngramRowSource&>(*rows) : no_rows, &out));
    ENGRAM_RETURN_IF_ERROR(out.status[0]);
    return out.tokens[0];
  };

  const size_t chunk = options.prefill_chunk > 0 ? options.prefill_chunk : prompt.size();
  uint32_t token = 0;
  for (size_t begin = 0; begin < prompt.size(); begin += chunk) {
    const size_t n = std::min(chunk, prompt.size() - begin);
    ENGRAM_ASSIGN_OR_RETURN(token, step(prompt.subspan(begin, n), begin + n == prompt.size()));
  }

  LocalGenerateResult result;
  OutputText output(model.tokenizer(), options.skip_special_tokens, options.stop.stop_strings);
  const int prompt_tokens = static_cast<int>(prompt.size());
  for (int generated = 1;; ++generated) {
    FinishReason reason = CheckStopToken(options.stop, token, generated);
    if (reason == FinishReason::kEos || reason == FinishReason::kStop) {
      result.finish_reason = reason;
      break;
    }
    result.tokens.push_back(token);
    bool stopped = false;
    result.text += output.Step(token, &stopped);
    if (stopped) {
      result.finish_reason = FinishReason::kStop;
      break;
    }
    if (reason == FinishReason::kNone && prompt_tokens + generated >= context) {
      reason = FinishReason::kContext;
    }
    if (reason != FinishReason::kNone) {
      result.finish_reason = reason;
      break;
    }
    ENGRAM_ASSIGN_OR_RETURN(token, step({&token, 1}, true));
  }
  bool stopped = false;
  result.text += output.Finish(&stopped);
  if (stopped) result.finish_reason = FinishReason::kStop;
  return result;
}

}  // namespace engram
