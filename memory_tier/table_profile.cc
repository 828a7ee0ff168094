#include "memory_tier/table_profile.h"

#include <algorithm>
#include <fstream>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/engram_config.h"
#include "common/ngram_hash.h"
#include "common/status.h"
#include "model/engram_constants.h"
#include "model/tokenizer.h"
#include "nlohmann/json.hpp"

namespace engram {
namespace {

constexpr size_t kMaxDocumentBytes = 64 * 1024;

// Yields documents: runs of lines ended by a blank line, cut at kMaxDocumentBytes on a line end.
class DocumentReader {
 public:
  DocumentReader(std::istream& in, uint64_t max_bytes) : in_(in), max_bytes_(max_bytes) {}
  bool Next(std::string* doc) {
    doc->clear();
    std::string line;
    while ((max_bytes_ == 0 || read_ < max_bytes_) && std::getline(in_, line)) {
      if (doc->empty()) doc_start_ = read_;
      read_ += line.size() + 1;
      if (line.empty()) {
        if (!doc->empty()) return true;
        continue;
      }
      doc->append(line).push_back('\n');
      if (doc->size() >= kMaxDocumentBytes) return true;
    }
    return !doc->empty();
  }
  uint64_t bytes_read() const { return read_; }
  // Corpus offset of the document Next() returned last.
  uint64_t doc_start() const { return doc_start_; }

 private:
  std::istream& in_;
  uint64_t max_bytes_;
  uint64_t read_ = 0;
  uint64_t doc_start_ = 0;
};

}  // namespace

absl::StatusOr<CorpusModel> LoadCorpusModel(const std::string& dir) {
  ENGRAM_ASSIGN_OR_RETURN(nlohmann::json config_json, ReadJsonFile(dir + "/config.json"));
  auto config = ParseEngramConfig(config_json);
  if (!config.ok()) return Annotate(config.status(), dir + "/config.json");
  auto tokenizer = Tokenizer::FromFile(dir + "/tokenizer.json");
  if (!tokenizer.ok()) return Annotate(tokenizer.status(), dir + "/tokenizer.json");
  ENGRAM_ASSIGN_OR_RETURN(EngramConstants constants,
                          LoadEngramConstants(dir, *config, **tokenizer));
  CorpusModel model;
  model.name = ModelName(config_json, dir);
  model.config = std::move(*config);
  model.tokenizer = std::move(*tokenizer);
  model.constants = std::move(constants);
  return model;
}

absl::Status ForEachCorpusDocument(const CorpusModel& model, const std::string& corpus_path,
                                   uint64_t max_bytes,
                                   const std::function<absl::Status(absl::Span<const int64_t>)>& fn,
                                   uint64_t* bytes_read) {
  std::ifstream corpus(corpus_path);
  if (!corpus) return absl::NotFoundError(absl::StrCat("cannot read corpus ", corpus_path));
  DocumentReader reader(corpus, max_bytes);
  std::string doc;
  while (reader.Next(&doc)) {
    auto tokens = model.tokenizer->Encode(doc);
    if (!tokens.ok()) {
      return Annotate(tokens.status(), absl::StrCat("corpus ", corpus_path, ", document at byte ",
                                                    reader.doc_start()));
    }
    if (tokens->empty()) continue;
    ENGRAM_ASSIGN_OR_RETURN(std::vector<int64_t> ids, model.constants.Compress(*tokens));
    ENGRAM_RETURN_IF_ERROR(fn(ids));
  }
  if (corpus.bad()) return absl::DataLossError(absl::StrCat("error reading ", corpus_path));
  if (bytes_read != nullptr) *bytes_read = reader.bytes_read();
  return absl::OkStatus();
}

absl::StatusOr<ProfileResult> ProfileTables(Catalog& catalog, const ProfileOptions& options) {
  ENGRAM_ASSIGN_OR_RETURN(CorpusModel model, LoadCorpusModel(options.model_dir));
  ProfileResult result;
  result.model = model.name;
  const EngramHashConstants& hash = model.constants.hash;
  const size_t columns = static_cast<size_t>(hash.columns());
  std::vector<absl::flat_hash_map<uint64_t, uint64_t>> counts(hash.num_layers());
  std::vector<int64_t> row_ids;
  ENGRAM_RETURN_IF_ERROR(ForEachCorpusDocument(
      model, options.corpus_path, options.max_bytes,
      [&](absl::Span<const int64_t> ids) -> absl::Status {
        result.tokens += ids.size();
        row_ids.resize(ids.size() * columns);
        for (int li = 0; li < hash.num_layers(); ++li) {
          ENGRAM_RETURN_IF_ERROR(ComputeNgramRowIds(hash, li, {}, ids, absl::MakeSpan(row_ids)));
          for (int64_t r : row_ids) ++counts[li][static_cast<uint64_t>(r)];
        }
        return absl::OkStatus();
      },
      &result.bytes));
  if (result.tokens == 0) {
    return absl::InvalidArgumentError(absl::StrCat("corpus ", options.corpus_path, " has no text"));
  }
  for (int li = 0; li < hash.num_layers(); ++li) {
    std::vector<RowCount> rows;
    rows.reserve(counts[li].size());
    uint64_t lookups = 0;
    for (const auto& [row, n] : counts[li]) {
      rows.push_back({row, static_cast<double>(n)});
      lookups += n;
    }
    std::sort(rows.begin(), rows.end(), Hotter);
    LayerProfile lp;
    lp.layer = static_cast<uint32_t>(hash.layer_ids[li]);
    lp.lookups = lookups;
    lp.distinct_rows = rows.size();
    lp.top1pct_rows = std::max<size_t>(1, static_cast<size_t>(hash.rows_per_layer[li] / 100));
    double top = 0;
    for (size_t i = 0; i < std::min(lp.top1pct_rows, rows.size()); ++i) top += rows[i].count;
    lp.top1pct_share = lookups ? top / static_cast<double>(lookups) : 0;
    if (rows.size() > options.keep_rows) rows.resize(options.keep_rows);
    lp.stored_rows = rows.size();
    ENGRAM_RETURN_IF_ERROR(catalog.SaveStats(result.model, lp.layer, rows));
    result.layers.push_back(lp);
  }
  return result;
}

}  // namespace engram
