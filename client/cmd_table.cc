// engram table import|inspect|verify|profile|mrc|set-live|synth: the memory tier's table store from
// the command line (memory_tier/importer.h, catalog.h, row_file.h, table_profile.h, table_mrc.h,
// table_synth.h; docs/memory-tier.md).
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli.h"
#include "common/status.h"
#include "memory_tier/catalog.h"
#include "memory_tier/importer.h"
#include "memory_tier/row_file.h"
#include "memory_tier/table_mrc.h"
#include "memory_tier/table_profile.h"
#include "memory_tier/table_synth.h"

namespace engram::cli {
namespace {

constexpr char kUsage[] =
    "usage:\n"
    "  engram table import MODEL_DIR --store DIR [--chunk-bytes N] [--force]\n"
    "  engram table inspect --store DIR [--model M] [--layer L] [--top N]\n"
    "  engram table verify (--store DIR [--model M] [--layer L] [--all-versions] |\n"
    "                       --manifest FILE)\n"
    "  engram table profile MODEL_DIR --store DIR --corpus FILE [--max-bytes N] [--top N]\n"
    "  engram table mrc MODEL_DIR --corpus FILE [--sizes 0.1%,1%,64M,...] [--svg FILE]\n"
    "                   [--max-bytes N] [--row-bytes N] [--step-positions N] [--update-rows N]\n"
    "                   [--hbm-window F] [--dram-ways N] [--tracked-rows N] [--no-belady]\n"
    "  engram table set-live --store DIR --model M [--layer L] --version V\n"
    "  engram table synth MODEL_DIR --store DIR [--seed S] [--dtype fp8_e4m3_e8m0|bf16|f16|f32]\n"
    "                     [--threads N] [--chunk-bytes N] [--force]\n";

constexpr char kDefaultMrcSizes[] = "0.1%,0.2%,0.5%,1%,2%,5%,10%,20%,50%,100%";

std::string HumanBytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  // Two calls: absl checks a format string at compile time, so it cannot be a conditional.
  return u == 0 ? absl::StrFormat("%.0f %s", b, units[u]) : absl::StrFormat("%.1f %s", b, units[u]);
}

// One progress line, rewritten in place on a terminal: rows, MB/s, ETA.
void PrintProgress(const ImportProgress& p) {
  const double mbps = p.seconds > 0 ? p.bytes_done / 1e6 / p.seconds : 0;
  const double rate = p.seconds > 0 ? p.rows_done / p.seconds : 0;
  const double eta = rate > 0 ? (p.rows_total - p.rows_done) / rate : 0;
  std::fprintf(
      stderr, "\r\033[K%s layer %u (%zu/%zu): %llu/%llu rows %5.1f%%  %.1f MB/s  ETA %.0fs",
      p.model.c_str(), p.layer, p.layer_index + 1, p.num_layers,
      static_cast<unsigned long long>(p.rows_done), static_cast<unsigned long long>(p.rows_total),
      p.rows_total ? 100.0 * p.rows_done / p.rows_total : 100.0, mbps, eta);
  if (p.layer_done) std::fprintf(stderr, "\n");
}

int Import(const Args& args) {
  if (args.positional().size() != 2)
    return Fail("table import", absl::InvalidArgumentError("needs exactly one MODEL_DIR"), 2);
  auto store = args.Require("store");
  if (!store.ok()) return Fail("table import", store.status(), 2);
  auto chunk = args.GetInt("chunk-bytes", kDefaultChunkBytes, 4096, kMaxChunkBytes);
  if (!chunk.ok()) return Fail("table import", chunk.status(), 2);
  ImportOptions options;
  options.model_dir = args.positional()[1];
  options.chunk_bytes = static_cast<uint64_t>(*chunk);
  options.force = args.Has("force");
  if (isatty(STDERR_FILENO)) options.on_progress = PrintProgress;
  auto catalog = Catalog::Open(*store, Catalog::Mode::kReadWrite);
  if (!catalog.ok()) return Fail("table import", catalog.status());
  auto result = ImportModel(**catalog, options);
  if (!result.ok()) return Fail("table import", result.status());
  if (result->leftovers_removed > 0) {
    std::printf("removed %d leftover file(s) of an unfinished import\n", result->leftovers_removed);
  }
  for (const LayerImport& l : result->layers) {
    if (l.unchanged) {
      std::printf("%s layer %u: unchanged, v%llu stays live\n", result->model.c_str(), l.layer,
                  static_cast<unsigned long long>(l.version));
    } else {
      std::printf("%s layer %u: v%llu live (%llu rows x %u B %s) -> %s\n", result->model.c_str(),
                  l.layer, static_cast<unsigned long long>(l.version),
                  static_cast<unsigned long long>(l.rows), l.row_bytes, l.dtype.c_str(),
                  l.row_file.c_str());
    }
  }
  std::printf("wrote %s\n", HumanBytes(static_cast<double>(result->bytes_written)).c_str());
  return 0;
}

// Tables selected by --model / --layer.
absl::StatusOr<std::vector<TableRecord>> SelectTables(const Catalog& catalog, const Args& args) {
  ENGRAM_ASSIGN_OR_RETURN(std::vector<TableRecord> all, catalog.ListTables());
  ENGRAM_ASSIGN_OR_RETURN(int64_t layer, args.GetInt("layer", -1, -1, INT32_MAX));
  std::vector<TableRecord> out;
  for (auto& t : all) {
    if (args.Has("model") && t.model != *args.Get("model")) continue;
    if (layer >= 0 && t.layer != static_cast<uint32_t>(layer)) continue;
    out.push_back(std::move(t));
  }
  if (out.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no table in ", catalog.store_dir(), " matches the selection"));
  }
  return out;
}

int Inspect(const Args& args) {
  auto store = args.Require("store");
  if (!store.ok()) return Fail("table inspect", store.status(), 2);
  auto top = args.GetInt("top", 10, 0, 1000000);
  if (!top.ok()) return Fail("table inspect", top.status(), 2);
  auto catalog = Catalog::Open(*store, Catalog::Mode::kReadOnly);
  if (!catalog.ok()) return Fail("table inspect", catalog.status());
  auto tables = SelectTables(**catalog, args);
  if (!tables.ok()) return Fail("table inspect", tables.status());
  for (const TableRecord& t : *tables) {
    std::printf("table %s layer %u: live v%llu, %zu version(s)\n", t.model.c_str(), t.layer,
                static_cast<unsigned long long>(t.live_version), t.versions.size());
    if (t.live_needs_reimport()) {
      std::printf("  NEEDS RE-IMPORT (engram table import): %s\n", t.reimport_reason.c_str());
    }
    for (uint64_t v : t.versions) {
      auto m = (*catalog)->GetManifest(t.model, t.layer, v);
      if (!m.ok()) {
        std::printf("  v%llu: %s\n", static_cast<unsigned long long>(v),
                    std::string(m.status().message()).c_str());
        continue;
      }
      const RowLayout& l = m->layout;
      const double used = static_cast<double>(l.rows_per_page) * l.row_bytes / l.page_bytes;
      std::printf(
          "  v%llu%s: %llu rows x %u B (%s, head_dim %d), %u rows per %u B page (%.1f%% "
          "used), %s in %llu chunk(s) of %s\n      file %s (format %u%s)\n      source %s [%s], "
          "crc32c 0x%08x, imported %s\n",
          static_cast<unsigned long long>(v), v == t.live_version ? " (live)" : "",
          static_cast<unsigned long long>(l.rows), l.row_bytes, m->dtype.c_str(), m->head_dim,
          l.rows_per_page, l.page_bytes, 100 * used,
          HumanBytes(static_cast<double>(m->file_bytes)).c_str(),
          static_cast<unsigned long long>(m->num_chunks()),
          HumanBytes(static_cast<double>(m->chunk_bytes)).c_str(), m->row_file.c_str(),
          l.format, l.page_checksums() ? ", page checksums" : ", no page checksums: not served",
          m->source.tensors.empty() ? "?" : m->source.tensors[0].c_str(), m->source.dtype.c_str(),
          m->source.crc32c, m->created.c_str());
    }
    if (*top > 0) {
      auto hot = (*catalog)->LoadStats(t.model, t.layer, static_cast<size_t>(*top));
      if (!hot.ok()) return Fail("table inspect", hot.status());
      if (hot->empty()) {
        std::printf("  hottest rows: no statistics yet\n");
      } else {
        std::printf("  hottest rows (decayed counts):");
        for (const RowCount& rc : *hot) {
          std::printf(" %llu:%.1f", static_cast<unsigned long long>(rc.row), rc.count);
        }
        std::printf("\n");
      }
    }
  }
  return 0;
}

int VerifyOne(const Manifest& m, const std::string& path) {
  absl::Status s = VerifyRowFile(m, path);
  if (s.ok()) {
    std::printf("%s layer %u v%llu: OK (%llu chunks, %s)\n", m.model.c_str(), m.layer,
                static_cast<unsigned long long>(m.version),
                static_cast<unsigned long long>(m.num_chunks()),
                HumanBytes(static_cast<double>(m.file_bytes)).c_str());
    return 0;
  }
  std::printf("%s layer %u v%llu: FAILED: %s\n", m.model.c_str(), m.layer,
              static_cast<unsigned long long>(m.version), std::string(s.message()).c_str());
  return 1;
}

int Verify(const Args& args) {
  if (args.Has("manifest")) {
    const std::string manifest_path = *args.Get("manifest");
    auto m = ReadManifest(manifest_path);
    if (!m.ok()) return Fail("table verify", m.status());
    const std::filesystem::path row_file = std::filesystem::path(manifest_path).parent_path() /
                                           std::filesystem::path(m->row_file).filename();
    return VerifyOne(*m, row_file.string());
  }
  auto store = args.Require("store");
  if (!store.ok()) return Fail("table verify", store.status(), 2);
  auto catalog = Catalog::Open(*store, Catalog::Mode::kReadOnly);
  if (!catalog.ok()) return Fail("table verify", catalog.status());
  auto tables = SelectTables(**catalog, args);
  if (!tables.ok()) return Fail("table verify", tables.status());
  int failures = 0;
  for (const TableRecord& t : *tables) {
    std::vector<uint64_t> versions =
        args.Has("all-versions") ? t.versions : std::vector<uint64_t>{t.live_version};
    for (uint64_t v : versions) {
      auto m = (*catalog)->GetManifest(t.model, t.layer, v);
      if (!m.ok()) {
        std::printf("%s layer %u v%llu: FAILED: %s\n", t.model.c_str(), t.layer,
                    static_cast<unsigned long long>(v), std::string(m.status().message()).c_str());
        ++failures;
        continue;
      }
      failures += VerifyOne(*m, *store + "/" + m->row_file);
    }
  }
  return failures == 0 ? 0 : 1;
}

// Rollback: makes an imported version live again, for every selected layer in one catalog
// batch. Each version's row file must still be there with the right header and size (the server
// verifies the chunks when it loads it); run with engram-memory stopped (the catalog lock).
int SetLive(const Args& args) {
  auto store = args.Require("store");
  if (!store.ok()) return Fail("table set-live", store.status(), 2);
  if (auto model = args.Require("model"); !model.ok()) {
    return Fail("table set-live", model.status(), 2);
  }
  if (auto v = args.Require("version"); !v.ok()) return Fail("table set-live", v.status(), 2);
  auto version = args.GetInt("version", 0, 1, INT64_MAX);
  if (!version.ok()) return Fail("table set-live", version.status(), 2);
  auto catalog = Catalog::Open(*store, Catalog::Mode::kReadWrite);
  if (!catalog.ok()) return Fail("table set-live", catalog.status());
  auto tables = SelectTables(**catalog, args);
  if (!tables.ok()) return Fail("table set-live", tables.status());
  std::vector<LiveVersion> live;
  for (const TableRecord& t : *tables) {
    const uint64_t v = static_cast<uint64_t>(*version);
    auto m = (*catalog)->GetManifest(t.model, t.layer, v);
    if (!m.ok()) return Fail("table set-live", m.status());
    absl::Status file = QuickCheckRowFile(*m, *store + "/" + m->row_file);
    if (!file.ok()) {
      return Fail("table set-live",
                  Annotate(file, absl::StrCat("refusing to make ", t.model, " layer ", t.layer,
                                              " v", v, " live")));
    }
    live.push_back(LiveVersion{t.model, t.layer, v});
  }
  absl::Status s = (*catalog)->SetLive(live);
  if (!s.ok()) return Fail("table set-live", s);
  for (const TableRecord& t : *tables) {
    std::printf("%s layer %u: v%lld live (was v%llu)\n", t.model.c_str(), t.layer,
                static_cast<long long>(*version), static_cast<unsigned long long>(t.live_version));
  }
  return 0;
}

int Profile(const Args& args) {
  if (args.positional().size() != 2) {
    return Fail("table profile", absl::InvalidArgumentError("needs exactly one MODEL_DIR"), 2);
  }
  auto store = args.Require("store");
  if (!store.ok()) return Fail("table profile", store.status(), 2);
  auto corpus = args.Require("corpus");
  if (!corpus.ok()) return Fail("table profile", corpus.status(), 2);
  auto max_bytes = args.GetInt("max-bytes", 0, 0, INT64_MAX);
  auto top = args.GetInt("top", 1 << 20, 1, int64_t{1} << 30);
  if (!max_bytes.ok()) return Fail("table profile", max_bytes.status(), 2);
  if (!top.ok()) return Fail("table profile", top.status(), 2);
  ProfileOptions options;
  options.model_dir = args.positional()[1];
  options.corpus_path = *corpus;
  options.max_bytes = static_cast<uint64_t>(*max_bytes);
  options.keep_rows = static_cast<size_t>(*top);
  auto catalog = Catalog::Open(*store, Catalog::Mode::kReadWrite);
  if (!catalog.ok()) return Fail("table profile", catalog.status());
  auto result = ProfileTables(**catalog, options);
  if (!result.ok()) return Fail("table profile", result.status());
  std::printf("%s: %llu tokens profiled from %s\n", result->model.c_str(),
              static_cast<unsigned long long>(result->tokens), corpus->c_str());
  for (const auto& l : result->layers) {
    std::printf(
        "  layer %u: %llu distinct rows seen, %zu stored; the top %zu rows take %.1f%% of "
        "lookups\n",
        l.layer, static_cast<unsigned long long>(l.distinct_rows), l.stored_rows, l.top1pct_rows,
        100 * l.top1pct_share);
  }
  return 0;
}

// The hit-rate curves of the HBM cache and the DRAM tier: CSV on stdout, a summary on stderr,
// optionally an SVG plot.
int Mrc(const Args& args) {
  if (args.positional().size() != 2) {
    return Fail("table mrc", absl::InvalidArgumentError("needs exactly one MODEL_DIR"), 2);
  }
  auto corpus = args.Require("corpus");
  if (!corpus.ok()) return Fail("table mrc", corpus.status(), 2);
  MrcOptions o;
  o.model_dir = args.positional()[1];
  o.corpus_path = *corpus;
  for (absl::string_view piece :
       absl::StrSplit(args.GetOr("sizes", kDefaultMrcSizes), ',', absl::SkipWhitespace())) {
    auto size = ParseMrcSize(piece);
    if (!size.ok()) return Fail("table mrc", size.status(), 2);
    o.sizes.push_back(*size);
  }
  auto max_bytes = args.GetInt("max-bytes", 0, 0, INT64_MAX);
  auto row_bytes = args.GetInt("row-bytes", 0, 0, 1 << 20);
  auto step = args.GetInt("step-positions", o.step_positions, 1, 1 << 20);
  auto update = args.GetInt("update-rows", o.update_rows, 0, int64_t{1} << 30);
  auto ways = args.GetInt("dram-ways", o.dram_ways, 1, 64);
  auto tracked = args.GetInt("tracked-rows", static_cast<int64_t>(o.tracked_rows), 1,
                             int64_t{1} << 30);
  for (const auto* v : {&max_bytes, &row_bytes, &step, &update, &ways, &tracked}) {
    if (!v->ok()) return Fail("table mrc", v->status(), 2);
  }
  o.max_bytes = static_cast<uint64_t>(*max_bytes);
  o.row_bytes = static_cast<uint32_t>(*row_bytes);
  o.step_positions = static_cast<uint32_t>(*step);
  o.update_rows = static_cast<uint32_t>(*update);
  o.dram_ways = static_cast<uint32_t>(*ways);
  o.tracked_rows = static_cast<uint64_t>(*tracked);
  o.belady = !args.Has("no-belady");
  if (args.Has("hbm-window")) {
    auto window = args.GetDouble("hbm-window", 0);
    if (!window.ok() || *window < 0 || *window >= 1) {
      return Fail("table mrc", absl::InvalidArgumentError("--hbm-window must be in [0, 1)"), 2);
    }
    o.hbm_window = *window;
  }
  auto result = ComputeMrc(o);
  if (!result.ok()) return Fail("table mrc", result.status());
  std::fprintf(stderr,
               "%s: %llu tokens of %s, %llu row lookups, %llu distinct rows of %llu (%u bytes "
               "each)\n",
               result->model.c_str(), static_cast<unsigned long long>(result->tokens),
               corpus->c_str(), static_cast<unsigned long long>(result->lookups),
               static_cast<unsigned long long>(result->distinct_rows),
               static_cast<unsigned long long>(result->table_rows), result->row_bytes);
  std::fputs(MrcCsv(*result).c_str(), stdout);
  if (auto svg = args.Get("svg")) {
    std::ofstream f(*svg, std::ios::binary | std::ios::trunc);
    f << MrcSvg(*result);
    f.close();
    if (!f) {
      return Fail("table mrc", absl::PermissionDeniedError(absl::StrCat("cannot write ", *svg)));
    }
  }
  return 0;
}

// Writes the model's tables from a seed (memory_tier/table_synth.h): benchmark tables of any size
// without a safetensors file. Like import, needs the catalog lock (engram-memory stopped).
int Synth(const Args& args) {
  if (args.positional().size() != 2) {
    return Fail("table synth", absl::InvalidArgumentError("needs exactly one MODEL_DIR"), 2);
  }
  auto store = args.Require("store");
  if (!store.ok()) return Fail("table synth", store.status(), 2);
  SynthOptions options;
  options.model_dir = args.positional()[1];
  auto seed = args.GetInt("seed", 0, 0, INT64_MAX);
  auto threads = args.GetInt("threads", 0, 0, 1024);
  auto chunk = args.GetInt("chunk-bytes", static_cast<int64_t>(options.chunk_bytes), 4096,
                           kMaxChunkBytes);
  auto dtype = ParseRowDType(args.GetOr("dtype", "fp8_e4m3_e8m0"));
  for (const absl::Status& s : {seed.status(), threads.status(), chunk.status(), dtype.status()}) {
    if (!s.ok()) return Fail("table synth", s, 2);
  }
  if (absl::Status s = CheckChunkBytes(static_cast<uint64_t>(*chunk)); !s.ok()) {
    return Fail("table synth", s, 2);
  }
  options.seed = static_cast<uint64_t>(*seed);
  options.threads = static_cast<int>(*threads);
  options.chunk_bytes = static_cast<uint64_t>(*chunk);
  options.dtype = *dtype;
  options.force = args.Has("force");
  if (isatty(STDERR_FILENO)) {
    options.on_progress = PrintProgress;
  } else {
    // A log (a benchmark script, a pod): one plain line every 10 s and at the end of each layer.
    options.on_progress = [last = -10.0](const ImportProgress& p) mutable {
      if (p.seconds - last < 10 && !p.layer_done) return;
      last = p.seconds;
      std::fprintf(stderr, "%s layer %u (%zu/%zu): %llu/%llu rows %.1f%% %.1f MB/s\n",
                   p.model.c_str(), p.layer, p.layer_index + 1, p.num_layers,
                   static_cast<unsigned long long>(p.rows_done),
                   static_cast<unsigned long long>(p.rows_total),
                   p.rows_total ? 100.0 * p.rows_done / p.rows_total : 100.0,
                   p.seconds > 0 ? p.bytes_done / 1e6 / p.seconds : 0.0);
    };
  }
  auto catalog = Catalog::Open(*store, Catalog::Mode::kReadWrite);
  if (!catalog.ok()) return Fail("table synth", catalog.status());
  const auto start = absl::Now();
  auto result = SynthTables(**catalog, options);
  if (!result.ok()) return Fail("table synth", result.status());
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (const LayerImport& l : result->layers) {
    if (l.unchanged) {
      std::printf("%s layer %u: unchanged (same seed and shape), v%llu stays live\n",
                  result->model.c_str(), l.layer, static_cast<unsigned long long>(l.version));
    } else {
      std::printf("%s layer %u: v%llu live (%llu rows x %u B %s, seed %llu) -> %s\n",
                  result->model.c_str(), l.layer, static_cast<unsigned long long>(l.version),
                  static_cast<unsigned long long>(l.rows), l.row_bytes, l.dtype.c_str(),
                  static_cast<unsigned long long>(options.seed), l.row_file.c_str());
    }
  }
  std::printf("wrote %s in %.1f s (%.0f MB/s)\n",
              HumanBytes(static_cast<double>(result->bytes_written)).c_str(), seconds,
              seconds > 0 ? result->bytes_written / 1e6 / seconds : 0.0);
  return 0;
}

int RunTable(int argc, char** argv) {
  auto args = Args::Parse(argc, argv,
                          {"store", "chunk-bytes", "model", "layer", "top", "manifest", "corpus",
                           "max-bytes", "version", "sizes", "svg", "row-bytes", "step-positions",
                           "update-rows", "hbm-window", "dram-ways", "tracked-rows", "seed",
                           "dtype", "threads"},
                          {"force", "all-versions", "no-belady"});
  if (!args.ok()) return Fail("table", args.status(), 2);
  if (args->positional().empty()) {
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  const std::string& action = args->positional()[0];
  if (action == "import") return Import(*args);
  if (action == "inspect") return Inspect(*args);
  if (action == "verify") return Verify(*args);
  if (action == "profile") return Profile(*args);
  if (action == "mrc") return Mrc(*args);
  if (action == "set-live") return SetLive(*args);
  if (action == "synth") return Synth(*args);
  std::fprintf(stderr, "engram table: unknown action \"%s\"\n%s", action.c_str(), kUsage);
  return 2;
}

}  // namespace

ENGRAM_CLI_COMMAND(table, "table",
                   "import, inspect, verify, profile, size (mrc), roll back and synthesise "
                   "memory-tier tables",
                   RunTable);

}  // namespace engram::cli
