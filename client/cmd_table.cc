// engram table import|inspect|verify|profile|set-live: the memory tier's table store from the
// command line (memory_tier/importer.h, catalog.h, row_file.h; docs/memory-tier.md).
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli.h"
#include "common/status.h"
#include "memory_tier/catalog.h"
#include "memory_tier/importer.h"
#include "memory_tier/row_file.h"
#include "memory_tier/table_profile.h"

namespace engram::cli {
namespace {

constexpr char kUsage[] =
    "usage:\n"
    "  engram table import MODEL_DIR --store DIR [--chunk-bytes N] [--force]\n"
    "  engram table inspect --store DIR [--model M] [--layer L] [--top N]\n"
    "  engram table verify (--store DIR [--model M] [--layer L] [--all-versions] |\n"
    "                       --manifest FILE)\n"
    "  engram table profile MODEL_DIR --store DIR --corpus FILE [--max-bytes N] [--top N]\n"
    "  engram table set-live --store DIR --model M [--layer L] --version V\n";

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
          "used), %s in %llu chunk(s) of %s\n      file %s\n      source %s [%s], "
          "crc32c 0x%08x, imported %s\n",
          static_cast<unsigned long long>(v), v == t.live_version ? " (live)" : "",
          static_cast<unsigned long long>(l.rows), l.row_bytes, m->dtype.c_str(), m->head_dim,
          l.rows_per_page, l.page_bytes, 100 * used,
          HumanBytes(static_cast<double>(m->file_bytes)).c_str(),
          static_cast<unsigned long long>(m->num_chunks()),
          HumanBytes(static_cast<double>(m->chunk_bytes)).c_str(), m->row_file.c_str(),
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

int RunTable(int argc, char** argv) {
  auto args = Args::Parse(argc, argv,
                          {"store", "chunk-bytes", "model", "layer", "top", "manifest", "corpus",
                           "max-bytes", "version"},
                          {"force", "all-versions"});
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
  if (action == "set-live") return SetLive(*args);
  std::fprintf(stderr, "engram table: unknown action \"%s\"\n%s", action.c_str(), kUsage);
  return 2;
}

}  // namespace

ENGRAM_CLI_COMMAND(table, "table",
                   "import, inspect, verify, profile and roll back memory-tier tables", RunTable);

}  // namespace engram::cli
