#include "memory_tier/table_synth.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/engram_config.h"
#include "common/ngram_hash.h"
#include "common/safetensors.h"
#include "common/splitmix64.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace engram {
namespace {

namespace fs = std::filesystem;

// A value of about unit scale from 64 random bits: the sum of four uniforms, centred (Irwin-Hall;
// variance 1/3, shaped like a normal).
float UnitValue(uint64_t bits) {
  float sum = 0;
  for (int i = 0; i < 4; ++i) sum += static_cast<float>((bits >> (16 * i)) & 0xFFFF) / 65536.0f;
  return (sum - 2.0f) * 1.7320508f;
}

// Generates rows [first, first + n) of one layer into `out`, packed.
void GenerateRows(uint64_t seed, uint32_t layer, uint64_t first, uint64_t n, RowDType dtype,
                  int head_dim, size_t row_bytes, uint8_t* out) {
  for (uint64_t i = 0; i < n; ++i) SynthRow(seed, layer, first + i, dtype, head_dim, out + i * row_bytes);
}

absl::StatusOr<uint64_t> FreeBytes(const std::string& dir) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) return PosixError("cannot statvfs", dir, errno);
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

std::string NowRfc3339() {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
}

// Writes one layer's rows into `tmp_path` through the row-file writer, generating batches of
// blocks on `threads` threads while the previous batch is appended.
absl::Status WriteLayer(const SynthOptions& options, int threads, const std::string& tmp_path,
                        Manifest* m, ImportProgress progress) {
  ENGRAM_ASSIGN_OR_RETURN(auto writer, RowFileWriter::Create(tmp_path, *m));
  const uint64_t rows = m->layout.rows;
  const size_t row_bytes = m->layout.row_bytes;
  const uint64_t block_rows =
      uint64_t{m->layout.rows_per_page} * std::max<uint64_t>(1, options.block_pages);
  const uint64_t batch_rows = block_rows * static_cast<uint64_t>(threads);
  std::vector<uint8_t> buffers[2];
  for (auto& b : buffers) b.resize(std::min(batch_rows, rows) * row_bytes);

  // Fills buffers[slot] with rows [first, first + n) on the generator threads.
  auto generate = [&](int slot, uint64_t first, uint64_t n) {
    std::vector<std::thread> workers;
    for (uint64_t b = 0; b * block_rows < n; ++b) {
      const uint64_t begin = b * block_rows, count = std::min(block_rows, n - begin);
      workers.emplace_back([&, slot, begin, count] {
        GenerateRows(options.seed, m->layer, first + begin, count, options.dtype, m->head_dim,
                     row_bytes, buffers[slot].data() + begin * row_bytes);
      });
    }
    for (auto& w : workers) w.join();
  };

  const auto start = std::chrono::steady_clock::now();
  generate(0, 0, std::min(batch_rows, rows));
  for (uint64_t first = 0, k = 0; first < rows; first += batch_rows, ++k) {
    const int slot = static_cast<int>(k % 2);
    const uint64_t n = std::min(batch_rows, rows - first);
    // The next batch is generated while this one is written.
    std::future<void> next;
    if (first + n < rows) {
      next = std::async(std::launch::async, generate, 1 - slot, first + n,
                        std::min(batch_rows, rows - first - n));
    }
    absl::Status appended = writer->Append(buffers[slot].data(), n);
    if (next.valid()) next.wait();
    ENGRAM_RETURN_IF_ERROR(appended);
    if (options.on_progress) {
      progress.rows_done = first + n;
      progress.bytes_done = (first + n) * row_bytes;
      progress.seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      progress.layer_done = first + n == rows;
      options.on_progress(progress);
    }
  }
  return writer->Finish(m);
}

}  // namespace

void SynthRow(uint64_t seed, uint32_t layer, uint64_t row, RowDType dtype, int head_dim,
              uint8_t* out) {
  // Keyed by (seed, layer, row): two finaliser rounds so that neighbouring rows, layers and seeds
  // share no structure.
  uint64_t state = SplitMix64Mix(SplitMix64Mix(seed + kSplitMix64Gamma * (uint64_t{layer} + 1)) ^
                                 (row * kSplitMix64Gamma));
  switch (dtype) {
    case RowDType::kFp8E4M3E8M0: {
      // E4M3 bytes: a random sign and mantissa, exponent field 4..11 (never the NaN pattern
      // S.1111.111); then one E8M0 scale per 32 values, 2^-7..2^-4.
      // Byte j of each 64-bit draw is value i + j: sign and mantissa bits kept, the exponent's
      // low 3 bits + 4 (all eight bytes at once; no carry crosses a byte).
      static_assert(std::endian::native == std::endian::little);
      for (int i = 0; i < head_dim; i += 8) {
        const uint64_t bits = SplitMix64Next(&state);
        const uint64_t v = (bits & 0x8787878787878787ull) |
                           ((((bits >> 3) & 0x0707070707070707ull) + 0x0404040404040404ull) << 3);
        std::memcpy(out + i, &v, static_cast<size_t>(std::min(8, head_dim - i)));
      }
      const uint64_t bits = SplitMix64Next(&state);
      for (int k = 0; k < head_dim / kFp8BlockSize; ++k) {
        out[head_dim + k] = static_cast<uint8_t>(127 - 7 + ((bits >> (2 * (k % 32))) & 0x3));
      }
      return;
    }
    case RowDType::kBF16:
    case RowDType::kF16:
      for (int i = 0; i < head_dim; ++i) {
        const float v = UnitValue(SplitMix64Next(&state));
        const uint16_t h = dtype == RowDType::kBF16 ? F32ToBf16(v) : F32ToF16(v);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case RowDType::kF32:
      for (int i = 0; i < head_dim; ++i) {
        const float v = UnitValue(SplitMix64Next(&state));
        std::memcpy(out + 4 * i, &v, 4);
      }
      return;
  }
}

std::string SynthFingerprint(uint64_t seed, RowDType dtype, uint64_t rows, int head_dim) {
  return absl::StrCat("synth|seed=", seed, "|dtype=", RowDTypeName(dtype), "|rows=", rows,
                      "|head_dim=", head_dim);
}

absl::StatusOr<ImportResult> SynthTables(Catalog& catalog, const SynthOptions& options) {
  ENGRAM_RETURN_IF_ERROR(CheckChunkBytes(options.chunk_bytes));
  const std::string& dir = options.model_dir;
  ENGRAM_ASSIGN_OR_RETURN(nlohmann::json config_json, ReadJsonFile(dir + "/config.json"));
  auto config = ParseEngramConfig(config_json);
  if (!config.ok()) return Annotate(config.status(), dir + "/config.json");
  if (config->layer_ids.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, "/config.json: engram_layer_ids is empty; no table to synthesise"));
  }
  const int head_dim = config->head_dim;
  if (options.dtype == RowDType::kFp8E4M3E8M0 && head_dim % kFp8BlockSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, "/config.json: engram_head_dim ", head_dim, " is not a multiple of ",
                     kFp8BlockSize, ", which fp8_e4m3_e8m0 rows need (use --dtype bf16)"));
  }
  ENGRAM_ASSIGN_OR_RETURN(size_t row_bytes, RowBytes(options.dtype, head_dim));
  const int threads = options.threads > 0
                          ? options.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  ImportResult result;
  result.model = ModelName(config_json, dir);
  ENGRAM_ASSIGN_OR_RETURN(result.leftovers_removed, CleanStoreLeftovers(catalog));
  const std::vector<int64_t> row_counts = EngramLayerRowCounts(*config);

  // Plan every layer first, so that a store without room is refused before anything is written.
  struct Plan {
    Manifest manifest;
    std::string table_dir;
  };
  std::vector<Plan> plans;
  uint64_t needed = 0;
  for (size_t li = 0; li < config->layer_ids.size(); ++li) {
    const uint32_t layer = static_cast<uint32_t>(config->layer_ids[li]);
    const uint64_t rows = static_cast<uint64_t>(row_counts[li]);
    ENGRAM_ASSIGN_OR_RETURN(std::optional<TableRecord> record,
                            catalog.GetTable(result.model, layer));
    LayerImport l;
    l.layer = layer;
    l.rows = rows;
    l.row_bytes = static_cast<uint32_t>(row_bytes);
    l.dtype = std::string(RowDTypeName(options.dtype));
    const std::string fingerprint = SynthFingerprint(options.seed, options.dtype, rows, head_dim);
    if (record && record->live_version != 0 && !options.force) {
      ENGRAM_ASSIGN_OR_RETURN(Manifest live,
                              catalog.GetManifest(result.model, layer, record->live_version));
      if (live.source.fingerprint == fingerprint) {
        l.unchanged = true;
        l.version = live.version;
        l.row_file = live.row_file;
        result.layers.push_back(l);
        continue;
      }
    }
    Plan p;
    Manifest& m = p.manifest;
    m.model = result.model;
    m.layer = layer;
    m.version = record && !record->versions.empty() ? record->versions.back() + 1 : 1;
    m.dtype = l.dtype;
    m.head_dim = head_dim;
    ENGRAM_ASSIGN_OR_RETURN(m.layout, RowLayout::For(rows, static_cast<uint32_t>(row_bytes)));
    m.chunk_bytes = options.chunk_bytes;
    m.source.dtype = absl::StrCat("synth:", l.dtype);
    m.source.bytes = rows * row_bytes;
    m.source.fingerprint = fingerprint;
    m.created = NowRfc3339();
    p.table_dir = TableDir(catalog.store_dir(), result.model, layer);
    m.row_file =
        fs::relative(p.table_dir, catalog.store_dir()).string() + "/" + RowFileName(m.version);
    needed += m.layout.file_bytes();
    l.version = m.version;
    l.row_file = m.row_file;
    result.layers.push_back(l);
    plans.push_back(std::move(p));
  }
  if (plans.empty()) return result;
  ENGRAM_ASSIGN_OR_RETURN(uint64_t free_bytes, FreeBytes(catalog.store_dir()));
  if (free_bytes < needed) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the store ", catalog.store_dir(), " has ", free_bytes, " bytes free; the new row files of ",
        result.model, " need ", needed, " (nothing written; the live versions stay)"));
  }

  std::vector<Manifest> commits;
  // Files of earlier layers of this run: removed when a later layer fails, since nothing of the
  // run becomes live then.
  std::vector<std::string> done_files;
  auto remove_done = [&] {
    std::error_code ec;
    for (const std::string& f : done_files) fs::remove(f, ec);
  };
  for (size_t i = 0; i < plans.size(); ++i) {
    Plan& p = plans[i];
    Manifest& m = p.manifest;
    std::error_code ec;
    fs::create_directories(p.table_dir, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create ", p.table_dir, ": ", ec.message()));
    }
    const std::string final_path = p.table_dir + "/" + RowFileName(m.version);
    const std::string tmp_path = p.table_dir + "/." + RowFileName(m.version) + ".tmp";
    ImportProgress progress{result.model, m.layer, i, plans.size(), 0, m.layout.rows};
    absl::Status written = WriteLayer(options, threads, tmp_path, &m, progress);
    if (!written.ok()) {
      fs::remove(tmp_path, ec);
      remove_done();
      return Annotate(written, absl::StrCat("synthesising ", result.model, " layer ", m.layer,
                                            " (removed ", tmp_path, "; the live version stays)"));
    }
    if (::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
      const int err = errno;
      fs::remove(tmp_path, ec);
      remove_done();
      return PosixError("cannot rename to", final_path, err);
    }
    absl::Status manifest_written =
        WriteManifest(p.table_dir + "/" + ManifestFileName(m.version), m);
    if (manifest_written.ok()) manifest_written = FsyncParentDir(final_path);
    done_files.push_back(final_path);
    done_files.push_back(p.table_dir + "/" + ManifestFileName(m.version));
    if (!manifest_written.ok()) {
      // Not referenced by the catalog: removed now (or by the next import's cleanup).
      remove_done();
      return manifest_written;
    }
    result.bytes_written += m.file_bytes;
    commits.push_back(m);
  }
  // The commit point: every new layer becomes live at once.
  if (absl::Status committed = catalog.CommitVersions(commits); !committed.ok()) {
    remove_done();
    return committed;
  }
  return result;
}

}  // namespace engram
