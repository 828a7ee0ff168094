#include "memory_tier/importer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/crc32c.h"
#include "common/engram_config.h"
#include "common/log.h"
#include "common/ngram_hash.h"
#include "common/row_format.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace engram {
namespace {

namespace fs = std::filesystem;

// The tensors holding one layer's table, as found in the model.
struct LayerSource {
  uint32_t layer = 0;
  RowDType dtype = RowDType::kBF16;
  const TensorView* weight = nullptr;
  const TensorView* scale = nullptr;  // FP8 only
  const SafetensorsFile* weight_file = nullptr;
  const SafetensorsFile* scale_file = nullptr;
  uint64_t rows = 0;
  int head_dim = 0;
  SourceInfo info;
};

std::string Fingerprint(const SafetensorsFile* file, const TensorView* t) {
  struct stat st {};
  ::stat(file->path().c_str(), &st);
  const int64_t mtime_ns =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return absl::StrCat(file->path(), "|", st.st_size, "|", mtime_ns, "|", t->name, "@",
                      t->file_offset, "+", t->size_bytes);
}

absl::StatusOr<LayerSource> FindLayerSource(const SafetensorsDir& dir, const std::string& model_dir,
                                            uint32_t layer, const EngramConfig& config,
                                            int64_t expected_rows) {
  // The plain table, or V4.1's FP8 rows with their scales (common/row_format.h, ModelTable).
  ENGRAM_ASSIGN_OR_RETURN(const ModelTable t,
                          FindModelTable(dir, model_dir, static_cast<int>(layer), config.head_dim));
  LayerSource s;
  s.layer = layer;
  s.weight = t.values;
  s.scale = t.scales;
  s.rows = t.rows;
  s.head_dim = t.head_dim;
  s.dtype = t.dtype;
  s.info.dtype = t.scales != nullptr ? "F8_E4M3+F8_E8M0" : std::string(DTypeName(t.values->dtype));
  if (expected_rows >= 0 && static_cast<int64_t>(s.rows) != expected_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        s.weight->name, " has ", s.rows, " rows but layer ", layer, " needs the sum of its primes, ",
        expected_rows, " (config.json's engram_* keys and the table disagree)"));
  }
  s.weight_file = dir.FileOf(s.weight);
  s.info.tensors.push_back(s.weight->name);
  s.info.files.push_back(fs::absolute(s.weight_file->path()).string());
  s.info.fingerprint = Fingerprint(s.weight_file, s.weight);
  if (s.scale != nullptr) {
    s.scale_file = dir.FileOf(s.scale);
    s.info.tensors.push_back(s.scale->name);
    if (s.scale_file != s.weight_file) {
      s.info.files.push_back(fs::absolute(s.scale_file->path()).string());
    }
    s.info.fingerprint += ";" + Fingerprint(s.scale_file, s.scale);
  }
  return s;
}

std::string NowRfc3339() {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
}

// Streams one layer's rows into `tmp_path`; fills the manifest's checksums and source CRC.
absl::Status WriteLayer(const LayerSource& src, const std::string& tmp_path, Manifest* manifest,
                        const ImportOptions& options, ImportProgress progress) {
  ENGRAM_ASSIGN_OR_RETURN(auto writer, RowFileWriter::Create(tmp_path, *manifest));
  const uint32_t row_bytes = manifest->layout.row_bytes;
  const size_t weight_row = static_cast<size_t>(src.weight->size_bytes / src.rows);
  const size_t scale_row = src.scale ? static_cast<size_t>(src.scale->size_bytes / src.rows) : 0;
  // Rows per step: about one chunk, so progress is reported per chunk.
  const uint64_t step = std::max<uint64_t>(1, options.chunk_bytes / row_bytes);
  std::vector<uint8_t> interleaved(src.scale ? step * row_bytes : 0);
  uint32_t crc = 0;
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t r = 0; r < src.rows; r += step) {
    const uint64_t n = std::min(step, src.rows - r);
    const uint8_t* rows = src.weight->data + r * weight_row;
    if (src.scale != nullptr) {  // FP8: payload then scales, one record per row
      for (uint64_t i = 0; i < n; ++i) {
        std::memcpy(&interleaved[i * row_bytes], rows + i * weight_row, weight_row);
        std::memcpy(&interleaved[i * row_bytes + weight_row], src.scale->data + (r + i) * scale_row,
                    scale_row);
      }
      rows = interleaved.data();
    }
    crc = Crc32c(crc, rows, n * row_bytes);
    ENGRAM_RETURN_IF_ERROR(writer->Append(rows, n));
    if (options.on_progress) {
      progress.rows_done = r + n;
      progress.bytes_done = (r + n) * row_bytes;
      progress.seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      progress.layer_done = r + n == src.rows;
      options.on_progress(progress);
    }
  }
  ENGRAM_RETURN_IF_ERROR(writer->Finish(manifest));
  manifest->source.crc32c = crc;
  manifest->source.bytes = src.weight->size_bytes + (src.scale ? src.scale->size_bytes : 0);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int> CleanStoreLeftovers(Catalog& catalog) {
  if (catalog.read_only()) return absl::FailedPreconditionError("catalog opened read-only");
  const std::string store = catalog.store_dir();
  std::set<std::string> keep;
  ENGRAM_ASSIGN_OR_RETURN(std::vector<TableRecord> tables, catalog.ListTables());
  for (const TableRecord& t : tables) {
    for (uint64_t v : t.versions) {
      ENGRAM_ASSIGN_OR_RETURN(Manifest m, catalog.GetManifest(t.model, t.layer, v));
      const fs::path row_file = fs::path(store) / m.row_file;
      keep.insert(row_file.lexically_normal().string());
      keep.insert((row_file.parent_path() / ManifestFileName(v)).lexically_normal().string());
    }
  }
  int removed = 0;
  const fs::path root = fs::path(store) / "tables";
  std::error_code ec;
  if (!fs::exists(root, ec)) return 0;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    const std::string path = it->path().lexically_normal().string();
    if (keep.count(path)) continue;
    if (fs::remove(it->path(), ec)) {
      ENGRAM_LOG(INFO).With("file", path) << "removed leftover of an unfinished import";
      ++removed;
    }
  }
  return removed;
}

absl::StatusOr<ImportResult> ImportModel(Catalog& catalog, const ImportOptions& options) {
  ENGRAM_RETURN_IF_ERROR(CheckChunkBytes(options.chunk_bytes));
  const std::string& dir = options.model_dir;
  ENGRAM_ASSIGN_OR_RETURN(nlohmann::json config_json, ReadJsonFile(dir + "/config.json"));
  auto config = ParseEngramConfig(config_json);
  if (!config.ok()) return Annotate(config.status(), dir + "/config.json");
  if (config->layer_ids.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, "/config.json: engram_layer_ids is empty; nothing to import"));
  }
  ENGRAM_ASSIGN_OR_RETURN(auto tensors, SafetensorsDir::Open(dir));
  ImportResult result;
  result.model = ModelName(config_json, dir);
  ENGRAM_ASSIGN_OR_RETURN(result.leftovers_removed, CleanStoreLeftovers(catalog));

  const std::vector<int64_t> row_counts = EngramLayerRowCounts(*config);
  std::vector<Manifest> commits;
  for (size_t li = 0; li < config->layer_ids.size(); ++li) {
    const uint32_t layer = static_cast<uint32_t>(config->layer_ids[li]);
    if (!config->num_embeddings.empty() && config->num_embeddings[li] != row_counts[li]) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, "/config.json: engram_num_embeddings[", li, "] = ", config->num_embeddings[li],
          " but the primes of layer ", layer, " sum to ", row_counts[li]));
    }
    ENGRAM_ASSIGN_OR_RETURN(LayerSource src,
                            FindLayerSource(*tensors, dir, layer, *config, row_counts[li]));
    ENGRAM_ASSIGN_OR_RETURN(size_t row_bytes, RowBytes(src.dtype, src.head_dim));
    ENGRAM_ASSIGN_OR_RETURN(std::optional<TableRecord> record,
                            catalog.GetTable(result.model, layer));
    LayerImport li_result;
    li_result.layer = layer;
    li_result.rows = src.rows;
    li_result.row_bytes = static_cast<uint32_t>(row_bytes);
    li_result.dtype = std::string(RowDTypeName(src.dtype));

    // Idempotence, cheap check first: the live version came from byte-identical files.
    std::optional<Manifest> live;
    if (record && record->live_version != 0) {
      ENGRAM_ASSIGN_OR_RETURN(live, catalog.GetManifest(result.model, layer, record->live_version));
    }
    // A live version in an older file format (no page checksums) or marked for re-import by
    // engram-memory (a page failed its checksum) is rewritten even when its source is unchanged.
    const bool rewrite = live && (live->layout.format < kRowFileFormatVersion ||
                                  record->live_needs_reimport());
    if (rewrite) {
      ENGRAM_LOG(INFO)
              .With("table", absl::StrCat(result.model, "/", layer))
              .With("version", live->version)
              .With("reason", live->layout.format < kRowFileFormatVersion
                                  ? absl::StrCat("row file format ", live->layout.format)
                                  : record->reimport_reason)
          << "rewriting the live version";
    }
    auto same_format = [&](const Manifest& m) {
      return !rewrite && m.layout.rows == src.rows && m.layout.row_bytes == row_bytes &&
             m.dtype == li_result.dtype && m.head_dim == src.head_dim;
    };
    if (!options.force && live && same_format(*live) &&
        live->source.fingerprint == src.info.fingerprint) {
      li_result.unchanged = true;
      li_result.version = live->version;
      li_result.row_file = live->row_file;
      result.layers.push_back(li_result);
      continue;
    }

    Manifest m;
    m.model = result.model;
    m.layer = layer;
    m.version = record && !record->versions.empty() ? record->versions.back() + 1 : 1;
    m.dtype = li_result.dtype;
    m.head_dim = src.head_dim;
    ENGRAM_ASSIGN_OR_RETURN(m.layout, RowLayout::For(src.rows, static_cast<uint32_t>(row_bytes)));
    m.chunk_bytes = options.chunk_bytes;
    m.source = src.info;
    m.created = NowRfc3339();
    const std::string table_dir = TableDir(catalog.store_dir(), result.model, layer);
    m.row_file =
        fs::relative(table_dir, catalog.store_dir()).string() + "/" + RowFileName(m.version);
    std::error_code ec;
    fs::create_directories(table_dir, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create ", table_dir, ": ", ec.message()));
    }
    const std::string final_path = table_dir + "/" + RowFileName(m.version);
    const std::string tmp_path = table_dir + "/." + RowFileName(m.version) + ".tmp";
    src.weight_file->AdviseSequential();
    if (src.scale_file) src.scale_file->AdviseSequential();
    ImportProgress progress{result.model, layer, li, config->layer_ids.size(), 0, src.rows};
    absl::Status written = WriteLayer(src, tmp_path, &m, options, progress);
    if (!written.ok()) {
      fs::remove(tmp_path, ec);
      return Annotate(written, absl::StrCat("importing ", src.weight->name));
    }
    // Idempotence, exact check: same rows as the live version (e.g. a file only touched).
    if (!options.force && live && same_format(*live) && live->source.crc32c == m.source.crc32c &&
        live->source.bytes == m.source.bytes) {
      fs::remove(tmp_path, ec);
      li_result.unchanged = true;
      li_result.version = live->version;
      li_result.row_file = live->row_file;
      result.layers.push_back(li_result);
      continue;
    }
    if (::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
      return PosixError("cannot rename to", final_path, errno);
    }
    ENGRAM_RETURN_IF_ERROR(WriteManifest(table_dir + "/" + ManifestFileName(m.version), m));
    ENGRAM_RETURN_IF_ERROR(FsyncParentDir(final_path));
    result.bytes_written += m.file_bytes;
    li_result.version = m.version;
    li_result.row_file = m.row_file;
    result.layers.push_back(li_result);
    commits.push_back(std::move(m));
  }
  // The commit point: every new version of this import becomes live at once.
  if (!commits.empty()) ENGRAM_RETURN_IF_ERROR(catalog.CommitVersions(commits));
  return result;
}

}  // namespace engram
