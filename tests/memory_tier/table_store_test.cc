// The table store: row-file layout, import of every dtype (byte-exact against the source
// safetensors), idempotence, verification of corrupted and truncated files, and an import killed
// with SIGKILL midway (the real `engram table import` process).
#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/row_format.h"
#include "common/safetensors.h"
#include "gtest/gtest.h"
#include "memory_tier/catalog.h"
#include "memory_tier/importer.h"
#include "memory_tier/posix_file.h"
#include "memory_tier/row_file.h"
#include "nlohmann/json.hpp"
#include "tests/common/rewrite_safetensors.h"
#include "tests/memory_tier/test_model.h"

extern char** environ;

namespace engram {
namespace {

using testing::SourceRows;
using testing::TempDir;
using testing::TestModelSpec;
using testing::WriteTestModel;

absl::StatusOr<ImportResult> Import(const std::string& store, const std::string& model,
                                    uint64_t chunk_bytes = kDefaultChunkBytes) {
  auto catalog = Catalog::Open(store, Catalog::Mode::kReadWrite);
  if (!catalog.ok()) return catalog.status();
  ImportOptions options;
  options.model_dir = model;
  options.chunk_bytes = chunk_bytes;
  return ImportModel(**catalog, options);
}

// Reads every row of a row file by the layout arithmetic and compares with the source.
void ExpectRowFileMatchesSource(const std::string& store, const Manifest& m,
                                const std::string& model_dir) {
  size_t row_bytes = 0;
  auto expected = SourceRows(model_dir, m.layer, &row_bytes);
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ(row_bytes, m.layout.row_bytes);
  auto file = ReadWholeFile(store + "/" + m.row_file);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->size(), m.layout.file_bytes());
  for (uint64_t r = 0; r < m.layout.rows; ++r) {
    const uint64_t off = m.layout.RowOffset(r);
    ASSERT_EQ(off / 4096, (off + row_bytes - 1) / 4096) << "row " << r << " straddles a page";
    ASSERT_EQ(0, std::memcmp(file->data() + off, expected->data() + r * row_bytes, row_bytes))
        << "row " << r;
  }
}

TEST(RowLayoutTest, RowsNeverStraddlePages) {
  for (uint32_t row_bytes : {1u, 64u, 128u, 264u, 1000u, 2049u, 4096u}) {
    auto l = RowLayout::For(100000, row_bytes);
    ASSERT_TRUE(l.ok());
    EXPECT_EQ(l->rows_per_page, 4096 / row_bytes);
    for (uint64_t r : {0ull, 1ull, 15ull, 16ull, 99999ull}) {
      const uint64_t off = l->RowOffset(r);
      EXPECT_EQ((off - 4096) / 4096, l->PageOf(r));
      EXPECT_LE(off % 4096 + row_bytes, 4096u);
    }
    EXPECT_EQ(l->file_bytes() % 4096, 0u);
  }
  EXPECT_FALSE(RowLayout::For(10, 0).ok());
  EXPECT_FALSE(RowLayout::For(10, 4097).ok());
}

class ImportDtypeTest : public ::testing::TestWithParam<std::pair<std::string, int>> {};

TEST_P(ImportDtypeTest, RowFilesMatchSourceByteForByte) {
  TempDir tmp;
  TestModelSpec spec;
  spec.dtype = GetParam().first;
  spec.head_dim = GetParam().second;
  const std::string model = tmp.path() + "/model", store = tmp.path() + "/store";
  ASSERT_TRUE(WriteTestModel(model, spec).ok());
  auto result = Import(store, model, /*chunk_bytes=*/16384);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->layers.size(), 2u);
  auto expected_bytes = RowBytes(spec.dtype, spec.head_dim);
  ASSERT_TRUE(expected_bytes.ok());
  auto catalog = Catalog::Open(store, Catalog::Mode::kReadOnly);
  ASSERT_TRUE(catalog.ok()) << catalog.status();
  const std::vector<int64_t> rows = testing::TestModelRows(spec);
  for (size_t li = 0; li < 2; ++li) {
    const uint32_t layer = static_cast<uint32_t>(spec.layer_ids[li]);
    auto table = (*catalog)->GetTable("testmodel", layer);
    ASSERT_TRUE(table.ok() && table->has_value());
    EXPECT_EQ((*table)->live_version, 1u);
    auto m = (*catalog)->GetManifest("testmodel", layer, 1);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->layout.rows, static_cast<uint64_t>(rows[li]));
    EXPECT_EQ(m->layout.row_bytes, *expected_bytes);
    EXPECT_EQ(m->dtype, spec.dtype);
    ExpectRowFileMatchesSource(store, *m, model);
    EXPECT_TRUE(VerifyRowFile(*m, store + "/" + m->row_file).ok());
    // The manifest beside the row file is the catalog's.
    auto on_disk = ReadManifest(TableDir(store, "testmodel", layer) + "/" + ManifestFileName(1));
    ASSERT_TRUE(on_disk.ok()) << on_disk.status();
    EXPECT_EQ(on_disk->ToJson(), m->ToJson());
  }
}

// What in-process readers (engram eval, engram model run) decode from the model directory equals
// the tier's records of the same rows decoded: FindModelTable + DecodeModelTableRow against
// SourceRows (FP8: payload then scales per row, as the import interleaves them) + DecodeRows.
TEST_P(ImportDtypeTest, InProcessRowsEqualTheTiersRecordsDecoded) {
  TempDir tmp;
  TestModelSpec spec;
  spec.dtype = GetParam().first;
  spec.head_dim = GetParam().second;
  const std::string model = tmp.path() + "/model";
  ASSERT_TRUE(WriteTestModel(model, spec).ok());
  auto dir = SafetensorsDir::Open(model);
  ASSERT_TRUE(dir.ok()) << dir.status();
  const std::vector<int64_t> rows = testing::TestModelRows(spec);
  for (size_t li = 0; li < 2; ++li) {
    const int layer = spec.layer_ids[li];
    auto table = FindModelTable(**dir, model, layer, spec.head_dim);
    ASSERT_TRUE(table.ok()) << table.status();
    EXPECT_EQ(RowDTypeName(table->dtype), spec.dtype);
    EXPECT_EQ(table->rows, static_cast<uint64_t>(rows[li]));
    EXPECT_EQ(table->scales != nullptr, spec.dtype == "fp8_e4m3_e8m0");
    size_t row_bytes = 0;
    auto records = testing::SourceRows(model, static_cast<uint32_t>(layer), &row_bytes);
    ASSERT_TRUE(records.ok()) << records.status();
    std::vector<float> got(spec.head_dim), want(spec.head_dim);
    int bad = 0;
    for (uint64_t r = 0; r < table->rows; ++r) {
      ASSERT_TRUE(DecodeModelTableRow(*table, r, got.data()).ok());
      ASSERT_TRUE(
          DecodeRows(table->dtype, records->data() + r * row_bytes, 1, spec.head_dim, want.data())
              .ok());
      for (int j = 0; j < spec.head_dim; ++j) {
        if (std::memcmp(&got[j], &want[j], sizeof(float)) != 0 && ++bad <= 5) {
          ADD_FAILURE() << spec.dtype << " layer " << layer << " row " << r << " [" << j
                        << "]: " << got[j] << " vs the tier's " << want[j];
        }
      }
    }
    EXPECT_EQ(bad, 0);
    EXPECT_EQ(DecodeModelTableRow(*table, table->rows, got.data()).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(FindModelTable(**dir, model, layer, spec.head_dim + 1).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(FindModelTable(**dir, model, /*layer_id=*/2, spec.head_dim).status().code(),
            absl::StatusCode::kNotFound);
}

// FP8 rows without their scales are a broken table, not a missing one: refused by name.
TEST(ModelTableTest, Fp8RowsWithoutScalesAreRefused) {
  TempDir tmp;
  TestModelSpec spec;
  spec.dtype = "fp8_e4m3_e8m0";
  const std::string model = tmp.path() + "/model";
  ASSERT_TRUE(WriteTestModel(model, spec).ok());
  const std::string file = model + "/model.safetensors";
  ASSERT_TRUE(testing::RewriteSafetensors(file, file,
                                          [](auto*, std::vector<TensorView>* tensors) {
                                            std::erase_if(*tensors, [](const TensorView& t) {
                                              return absl::EndsWith(t.name, "embed.scale");
                                            });
                                          })
                  .ok());
  auto dir = SafetensorsDir::Open(model);
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto table = FindModelTable(**dir, model, spec.layer_ids[0], spec.head_dim);
  EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(table.status().message(), "embed.scale")) << table.status();
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, ImportDtypeTest,
                         ::testing::Values(std::make_pair("f32", 32), std::make_pair("bf16", 64),
                                           std::make_pair("f16", 19),
                                           std::make_pair("fp8_e4m3_e8m0", 256)));

TEST(ImportTest, Fp8RowsAre264BytesForHeadDim256) {
  auto b = RowBytes("fp8_e4m3_e8m0", 256);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, 264u);
}

TEST(ImportTest, IsIdempotentAndVersionsChangedSources) {
  TempDir tmp;
  const std::string model = tmp.path() + "/model", store = tmp.path() + "/store";
  TestModelSpec spec;
  ASSERT_TRUE(WriteTestModel(model, spec).ok());
  ASSERT_TRUE(Import(store, model).ok());
  auto again = Import(store, model);
  ASSERT_TRUE(again.ok()) << again.status();
  for (const auto& l : again->layers) {
    EXPECT_TRUE(l.unchanged);
    EXPECT_EQ(l.version, 1u);
  }
  // Same bytes, new file (new mtime): the checksum decides, still no new version.
  ASSERT_TRUE(WriteTestModel(model, spec).ok());
  again = Import(store, model);
  ASSERT_TRUE(again.ok());
  for (const auto& l : again->layers) EXPECT_TRUE(l.unchanged);
  // Different rows: version 2 becomes live, version 1 stays in the catalog.
  spec.seed = 2;
  ASSERT_TRUE(WriteTestModel(model, spec).ok());
  again = Import(store, model);
  ASSERT_TRUE(again.ok());
  auto catalog = Catalog::Open(store, Catalog::Mode::kReadOnly);
  ASSERT_TRUE(catalog.ok());
  for (const auto& l : again->layers) {
    EXPECT_FALSE(l.unchanged);
    EXPECT_EQ(l.version, 2u);
    auto t = (*catalog)->GetTable("testmodel", l.layer);
    ASSERT_TRUE(t.ok() && t->has_value());
    EXPECT_EQ((*t)->live_version, 2u);
    EXPECT_EQ((*t)->versions, (std::vector<uint64_t>{1, 2}));
    auto m = (*catalog)->GetManifest("testmodel", l.layer, 2);
    ASSERT_TRUE(m.ok());
    ExpectRowFileMatchesSource(store, *m, model);
  }
}

TEST(ImportTest, RejectsBadModelsWithClearMessages) {
  TempDir tmp;
  const std::string model = tmp.path() + "/model", store = tmp.path() + "/store";
  TestModelSpec spec;
  ASSERT_TRUE(WriteTestModel(model, spec).ok());
  // The config promises other primes than the table has rows.
  {
    TestModelSpec other = spec;
    other.vocab_size_per_order = {601, 503};
    TempDir tmp2;
    ASSERT_TRUE(WriteTestModel(tmp2.path(), other).ok());
    std::filesystem::copy_file(tmp2.path() + "/config.json", model + "/config.json",
                               std::filesystem::copy_options::overwrite_existing);
    auto r = Import(store, model);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("sum of its primes"), absl::string_view::npos)
        << r.status();
  }
  // head_dim disagrees with config.json.
  {
    TestModelSpec other = spec;
    other.head_dim = 16;
    TempDir tmp2;
    ASSERT_TRUE(WriteTestModel(tmp2.path(), other).ok());
    std::filesystem::copy_file(tmp2.path() + "/config.json", model + "/config.json",
                               std::filesystem::copy_options::overwrite_existing);
    auto r = Import(store, model);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("engram_head_dim"), absl::string_view::npos) << r.status();
  }
  // A layer without a table.
  {
    TestModelSpec other = spec;
    other.layer_ids = {1, 5};
    TempDir tmp2;
    ASSERT_TRUE(WriteTestModel(tmp2.path(), other).ok());
    std::filesystem::copy_file(tmp2.path() + "/config.json", model + "/config.json",
                               std::filesystem::copy_options::overwrite_existing);
    WriteTestModel(model + "/../m2", spec).IgnoreError();
    std::filesystem::copy_file(model + "/../m2/model.safetensors", model + "/model.safetensors",
                               std::filesystem::copy_options::overwrite_existing);
    auto r = Import(store, model);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("no Engram table for layer 5"), absl::string_view::npos)
        << r.status();
  }
  // Nothing was made live by the failed imports.
  auto catalog = Catalog::Open(store, Catalog::Mode::kReadWrite);
  ASSERT_TRUE(catalog.ok());
  auto tables = (*catalog)->ListTables();
  ASSERT_TRUE(tables.ok());
  EXPECT_TRUE(tables->empty());
  auto missing = Import(tmp.path() + "/store2", tmp.path() + "/nonexistent");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("config.json"), absl::string_view::npos);
}

// Runs the engram CLI; returns (exit code, output).
std::pair<int, std::string> RunCli(const std::string& args) {
  return testing::RunCommand(absl::StrCat(testing::BinaryPath("client/engram"), " ", args));
}

TEST(VerifyTest, NamesTheFirstBadChunkOfCorruptedAndTruncatedFiles) {
  TempDir tmp;
  const std::string model = tmp.path() + "/model", store = tmp.path() + "/store";
  TestModelSpec spec;
  spec.layer_ids = {2};
  ASSERT_TRUE(WriteTestModel(model, spec).ok());
  ASSERT_TRUE(Import(store, model, /*chunk_bytes=*/8192).ok());
  auto catalog = Catalog::Open(store, Catalog::Mode::kReadOnly);
  ASSERT_TRUE(catalog.ok());
  auto m = (*catalog)->GetManifest("testmodel", 2, 1);
  ASSERT_TRUE(m.ok());
  catalog->reset();
  ASSERT_GE(m->num_chunks(), 4u);
  const std::string path = store + "/" + m->row_file;

  auto [ok_code, ok_out] = RunCli("table verify --store " + store);
  EXPECT_EQ(ok_code, 0) << ok_out;
  EXPECT_NE(ok_out.find("OK"), std::string::npos) << ok_out;

  // Flip one byte inside chunk 2 (and one in chunk 3: the first bad one is named).
  {
    auto fd = OpenFile(path, O_RDWR);
    ASSERT_TRUE(fd.ok());
    for (uint64_t c : {3, 2}) {
      const uint64_t off = m->ChunkBegin(c) + 100;
      uint8_t b;
      ASSERT_TRUE(PreadAll(fd->get(), &b, 1, off, path).ok());
      b ^= 0x5a;
      ASSERT_TRUE(PwriteAll(fd->get(), &b, 1, off, path).ok());
    }
  }
  absl::Status s = VerifyRowFile(*m, path);
  ASSERT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("chunk 2 of"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("checksum mismatch"), absl::string_view::npos) << s;
  auto [bad_code, bad_out] = RunCli("table verify --store " + store);
  EXPECT_NE(bad_code, 0) << bad_out;
  EXPECT_NE(bad_out.find("chunk 2 of"), std::string::npos) << bad_out;

  // Truncate inside chunk 1: chunk 0 still verifies, chunk 1 is named as truncated. The
  // manifest-only form of the command finds the row file beside the manifest.
  std::filesystem::resize_file(path, m->ChunkBegin(1) + 5000);
  s = VerifyRowFile(*m, path);
  ASSERT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("chunk 1 of"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("truncated"), absl::string_view::npos) << s;
  auto [trunc_code, trunc_out] = RunCli(
      "table verify --manifest " + TableDir(store, "testmodel", 2) + "/" + ManifestFileName(1));
  EXPECT_NE(trunc_code, 0) << trunc_out;
  EXPECT_NE(trunc_out.find("chunk 1 of"), std::string::npos) << trunc_out;
  EXPECT_FALSE(QuickCheckRowFile(*m, path).ok());
  // A missing file.
  std::filesystem::remove(path);
  EXPECT_EQ(VerifyRowFile(*m, path).code(), absl::StatusCode::kNotFound);
}

// Rollback with the CLI: an older version becomes live again for every layer at once; a version
// a layer lacks, or whose row file is gone, changes nothing.
TEST(SetLiveTest, RollsBackEveryLayerOrNone) {
  TempDir tmp;
  const std::string model = tmp.path() + "/model", store = tmp.path() + "/store";
  TestModelSpec spec;
  ASSERT_TRUE(WriteTestModel(model, spec).ok());
  ASSERT_TRUE(Import(store, model).ok());
  spec.seed = 5;
  ASSERT_TRUE(WriteTestModel(model, spec).ok());
  ASSERT_TRUE(Import(store, model).ok());  // v2 live for layers 1 and 3
  // The live versions of layers 1 and 3.
  auto live = [&]() {
    auto catalog = Catalog::Open(store, Catalog::Mode::kReadOnly);
    EXPECT_TRUE(catalog.ok()) << catalog.status();
    std::pair<uint64_t, uint64_t> versions;
    for (auto [layer, v] : {std::pair{1u, &versions.first}, std::pair{3u, &versions.second}}) {
      auto t = (*catalog)->GetTable("testmodel", layer);
      *v = t.ok() && t->has_value() ? (*t)->live_version : 0;
    }
    return versions;
  };
  auto set_live = [&](const std::string& flags) {
    return RunCli("table set-live --store " + store + " " + flags);
  };
  using Live = std::pair<uint64_t, uint64_t>;
  ASSERT_EQ(live(), Live(2, 2));

  auto [code, out] = set_live("--model testmodel --version 1");
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("testmodel layer 3: v1 live (was v2)"), std::string::npos) << out;
  EXPECT_EQ(live(), Live(1, 1));

  // A version that does not exist: named, nothing changes.
  std::tie(code, out) = set_live("--model testmodel --version 7");
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("has no version 7"), std::string::npos) << out;
  EXPECT_EQ(live(), Live(1, 1));

  // v2's row file of layer 3 is gone: refused for both layers, v1 stays live everywhere.
  {
    auto catalog = Catalog::Open(store, Catalog::Mode::kReadOnly);
    ASSERT_TRUE(catalog.ok());
    auto m = (*catalog)->GetManifest("testmodel", 3, 2);
    ASSERT_TRUE(m.ok());
    std::filesystem::remove(store + "/" + m->row_file);
  }
  std::tie(code, out) = set_live("--model testmodel --version 2");
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("refusing to make testmodel layer 3 v2 live"), std::string::npos) << out;
  EXPECT_EQ(live(), Live(1, 1));
  // One layer on its own is fine.
  std::tie(code, out) = set_live("--model testmodel --layer 1 --version 2");
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(live(), Live(2, 1));
  // --model and --version are required.
  std::tie(code, out) = set_live("--version 1");
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find("--model"), std::string::npos) << out;
}

// `engram table import` is killed with SIGKILL while it writes the second layer of a changed
// model. Its progress goes to a pseudo-terminal that the test stops reading once the second
// layer started: the importer then blocks on the full terminal and cannot finish before the kill.
TEST(ImportTest, KilledImportNeverBecomesLiveAndIsCleanedUp) {
  TempDir tmp;
  const std::string model = tmp.path() + "/model", store = tmp.path() + "/store";
  TestModelSpec spec;
  spec.vocab_size_per_order = {60013, 70001};  // ~260k rows per layer, one progress line per page
  ASSERT_TRUE(WriteTestModel(model, spec).ok());
  ASSERT_TRUE(Import(store, model).ok());
  spec.seed = 7;
  ASSERT_TRUE(WriteTestModel(model, spec).ok());

  int master = -1, slave = -1;
  ASSERT_EQ(openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, slave, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  const std::string bin = testing::BinaryPath("client/engram");
  std::vector<std::string> argv_s = {bin,       "table", "import",        model,
                                     "--store", store,   "--chunk-bytes", "4096"};
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  ASSERT_EQ(posix_spawn(&pid, bin.c_str(), &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  close(slave);
  std::string seen;
  char buf[512];
  while (seen.find("(2/2)") == std::string::npos) {
    ssize_t n = read(master, buf, sizeof(buf));
    ASSERT_GT(n, 0) << "import ended before the second layer: " << seen;
    seen.append(buf, static_cast<size_t>(n));
  }
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  close(master);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the import finished before it was killed";

  // The catalog is consistent: version 1 is live for both layers, nothing else exists.
  {
    auto catalog = Catalog::Open(store, Catalog::Mode::kReadWrite);
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    for (uint32_t layer : {1u, 3u}) {
      auto t = (*catalog)->GetTable("testmodel", layer);
      ASSERT_TRUE(t.ok() && t->has_value());
      EXPECT_EQ((*t)->live_version, 1u);
      EXPECT_EQ((*t)->versions, std::vector<uint64_t>{1});
      auto m = (*catalog)->GetManifest("testmodel", layer, 1);
      ASSERT_TRUE(m.ok());
      EXPECT_TRUE(VerifyRowFile(*m, store + "/" + m->row_file).ok());
    }
  }
  // Leftovers exist until the next import removes them; that import completes.
  size_t files_before = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(store + "/tables")) {
    files_before += e.is_regular_file();
  }
  EXPECT_GT(files_before, 4u);  // 2 x (row file + manifest) of v1, plus leftovers
  auto result = Import(store, model);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GE(result->leftovers_removed, 1);
  auto catalog = Catalog::Open(store, Catalog::Mode::kReadOnly);
  ASSERT_TRUE(catalog.ok());
  for (uint32_t layer : {1u, 3u}) {
    auto t = (*catalog)->GetTable("testmodel", layer);
    ASSERT_TRUE(t.ok() && t->has_value());
    EXPECT_EQ((*t)->live_version, 2u);
    auto m = (*catalog)->GetManifest("testmodel", layer, 2);
    ASSERT_TRUE(m.ok());
    ExpectRowFileMatchesSource(store, *m, model);
  }
  size_t files_after = 0;
  for (auto& e : std::filesystem::recursive_directory_iterator(store + "/tables")) {
    files_after += e.is_regular_file();
  }
  EXPECT_EQ(files_after, 8u);  // 2 layers x 2 versions x (row file + manifest)
}

}  // namespace
}  // namespace engram
