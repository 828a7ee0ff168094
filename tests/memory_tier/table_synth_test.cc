// `engram table synth` (memory_tier/table_synth.h): a model's tables written from a seed straight
// into the store. Checks that the tables have the rows the model's hash addresses, pass verify,
// are served by a real engram-memory over gRPC loopback byte for byte as SynthRow computes them
// (resident and cache layouts), that synthesis is idempotent per seed, that a failed write (the
// file size limit standing in for a full disk) leaves the previous version live and no file
// behind, that bad arguments are refused with a message (library and CLI), and that
// `init-random --engram-params` sizes the table from the parameter count.
#include "memory_tier/table_synth.h"

#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/engram_config.h"
#include "common/ngram_hash.h"
#include "common/row_format.h"
#include "gtest/gtest.h"
#include "memory_tier/catalog.h"
#include "memory_tier/posix_file.h"
#include "memory_tier/row_file.h"
#include "memory_tier/tier_client.h"
#include "memory_tier/tier_server.h"
#include "model/demo_model.h"
#include "nlohmann/json.hpp"
#include "tests/common/temp_dir.h"
#include "tests/common/test_paths.h"
#include "tests/memory_tier/test_model.h"

namespace engram {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

constexpr int kHeadDim = 64;  // fp8 rows of 64 + 2 bytes

// config.json of a model with Engram layers 1 and 3 (orders 2..3, 2 heads each): no weights, which
// is all synth needs.
void WriteConfig(const std::string& dir, int head_dim = kHeadDim,
                 std::vector<int> layers = {1, 3}) {
  fs::create_directories(dir);
  nlohmann::json c;
  c["model_name"] = "synthmodel";
  c["hidden_size"] = 32;
  c["engram_layer_ids"] = layers;
  c["engram_max_ngram_size"] = 3;
  c["engram_n_heads"] = 2;
  c["engram_head_dim"] = head_dim;
  c["engram_vocab_size"] = {401, 503};
  ASSERT_TRUE(WriteFileAtomically(dir + "/config.json", c.dump()).ok());
}

std::vector<int64_t> RowCounts(const std::string& dir) {
  auto j = ReadJsonFile(dir + "/config.json");
  auto config = ParseEngramConfig(*j);
  return EngramLayerRowCounts(*config);
}

class TableSynthTest : public ::testing::Test {
 protected:
  std::string model_dir() const { return tmp_.path() + "/model"; }
  std::string store_dir() const { return tmp_.path() + "/store"; }

  absl::StatusOr<ImportResult> Synth(uint64_t seed, bool force = false) {
    auto catalog = Catalog::Open(store_dir(), Catalog::Mode::kReadWrite);
    if (!catalog.ok()) return catalog.status();
    SynthOptions o;
    o.model_dir = model_dir();
    o.seed = seed;
    o.chunk_bytes = 8192;
    o.threads = 3;
    o.block_pages = 1;  // many blocks and batches: the generate/append pipeline turns over
    o.force = force;
    o.on_progress = [this](const ImportProgress& p) { progress_.push_back(p); };
    return SynthTables(**catalog, o);
  }

  std::vector<uint8_t> Expected(uint64_t seed, uint32_t layer, uint64_t row) {
    std::vector<uint8_t> out(kHeadDim + kHeadDim / 32);
    SynthRow(seed, layer, row, RowDType::kFp8E4M3E8M0, kHeadDim, out.data());
    return out;
  }

  TempDir tmp_;
  std::vector<ImportProgress> progress_;
};

TEST(SynthRowTest, DeterministicFiniteAndDistinct) {
  std::vector<uint8_t> a(66), b(66), c(66);
  SynthRow(7, 1, 12345, RowDType::kFp8E4M3E8M0, 64, a.data());
  SynthRow(7, 1, 12345, RowDType::kFp8E4M3E8M0, 64, b.data());
  EXPECT_EQ(a, b);
  SynthRow(7, 1, 12346, RowDType::kFp8E4M3E8M0, 64, c.data());
  EXPECT_NE(a, c);
  SynthRow(7, 3, 12345, RowDType::kFp8E4M3E8M0, 64, c.data());
  EXPECT_NE(a, c) << "another layer, same row";
  SynthRow(8, 1, 12345, RowDType::kFp8E4M3E8M0, 64, c.data());
  EXPECT_NE(a, c) << "another seed, same row";
  // Every dtype decodes to finite values of a trained table's magnitude.
  for (RowDType dtype :
       {RowDType::kFp8E4M3E8M0, RowDType::kBF16, RowDType::kF16, RowDType::kF32}) {
    const size_t bytes = *RowBytes(dtype, 64);
    double sum_sq = 0;
    for (uint64_t row = 0; row < 200; ++row) {
      std::vector<uint8_t> raw(bytes);
      std::vector<float> f(64);
      SynthRow(1, 1, row, dtype, 64, raw.data());
      ASSERT_TRUE(DecodeRows(dtype, raw.data(), 1, 64, f.data()).ok());
      for (float v : f) {
        ASSERT_TRUE(std::isfinite(v)) << RowDTypeName(dtype) << " row " << row;
        sum_sq += double(v) * v;
      }
    }
    const double rms = std::sqrt(sum_sq / (200 * 64));
    EXPECT_GT(rms, 0.05) << RowDTypeName(dtype);
    EXPECT_LT(rms, 4.0) << RowDTypeName(dtype);
  }
}

TEST_F(TableSynthTest, ServedByTheTierExactlyAsGenerated) {
  WriteConfig(model_dir());
  auto result = Synth(7);
  ASSERT_TRUE(result.ok()) << result.status();
  const std::vector<int64_t> rows = RowCounts(model_dir());
  ASSERT_EQ(result->model, "synthmodel");
  ASSERT_EQ(result->layers.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(result->layers[i].version, 1u);
    EXPECT_EQ(result->layers[i].rows, static_cast<uint64_t>(rows[i]));
    EXPECT_EQ(result->layers[i].row_bytes, 66u);
    EXPECT_EQ(result->layers[i].dtype, "fp8_e4m3_e8m0");
  }
  ASSERT_FALSE(progress_.empty());
  EXPECT_TRUE(progress_.back().layer_done);
  EXPECT_EQ(progress_.back().rows_done, static_cast<uint64_t>(rows[1]));
  EXPECT_GT(progress_.size(), 4u) << "progress about every batch";

  {  // The files pass verify (every chunk checksum) and the manifests say where rows came from.
    auto catalog = Catalog::Open(store_dir(), Catalog::Mode::kReadOnly);
    ASSERT_TRUE(catalog.ok());
    for (uint32_t layer : {1u, 3u}) {
      auto m = (*catalog)->GetManifest("synthmodel", layer, 1);
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_TRUE(VerifyRowFile(*m, store_dir() + "/" + m->row_file).ok());
      EXPECT_TRUE(absl::StrContains(m->source.fingerprint, "seed=7"));
      EXPECT_GT(m->num_chunks(), 1u);
    }
  }

  // A real engram-memory: layer 1 resident in DRAM, layer 3 a small cache over NVMe.
  TierConfig c;
  c.store.dir = store_dir();
  c.server.listen = "127.0.0.1:0";
  c.server.metrics_host = "127.0.0.1";
  c.server.metrics_port = 0;
  c.server.lookup_threads = 2;
  c.server.drain_timeout_s = 5;
  c.dram.bytes = 4096 + rows[0] * 66 + 64 * 1024;
  c.dram.ways = 4;
  c.dram.lock = false;
  c.dram.shm_prefix = absl::StrCat("engram-synth-", getpid());
  c.nvme.io_depth = 16;
  auto server = TierServer::Start(c);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = TierClient::Connect({.address = absl::StrCat("127.0.0.1:", (*server)->port())});
  ASSERT_TRUE(client.ok()) << client.status();
  std::mt19937_64 rng(3);
  for (size_t li = 0; li < 2; ++li) {
    const uint32_t layer = li == 0 ? 1 : 3;
    auto table = (*client)->FindTable("synthmodel", layer);
    ASSERT_TRUE(table.ok()) << table.status();
    EXPECT_TRUE(table->serving);
    EXPECT_EQ(table->rows, static_cast<uint64_t>(rows[li]));
    EXPECT_EQ(table->arena.layout, li == 0 ? "resident" : "cache");
    std::vector<uint64_t> ids = {0, 1, static_cast<uint64_t>(rows[li] - 1)};
    for (int i = 0; i < 500; ++i) ids.push_back(rng() % rows[li]);
    auto got = (*client)->Lookup(table->key, ids);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->rows.size(), ids.size() * 66);
    for (size_t i = 0; i < ids.size(); ++i) {
      const std::vector<uint8_t> want = Expected(7, layer, ids[i]);
      ASSERT_EQ(0, std::memcmp(got->rows.data() + i * 66, want.data(), 66))
          << "layer " << layer << " row " << ids[i];
    }
  }
  (*server)->Shutdown();
}

TEST_F(TableSynthTest, IdempotentPerSeedAndANewSeedIsANewVersion) {
  WriteConfig(model_dir());
  ASSERT_TRUE(Synth(7).ok());
  auto again = Synth(7);
  ASSERT_TRUE(again.ok()) << again.status();
  for (const LayerImport& l : again->layers) {
    EXPECT_TRUE(l.unchanged);
    EXPECT_EQ(l.version, 1u);
  }
  EXPECT_EQ(again->bytes_written, 0u);
  auto forced = Synth(7, /*force=*/true);
  ASSERT_TRUE(forced.ok());
  EXPECT_EQ(forced->layers[0].version, 2u);
  auto reseeded = Synth(9);
  ASSERT_TRUE(reseeded.ok());
  EXPECT_EQ(reseeded->layers[0].version, 3u);
  EXPECT_FALSE(reseeded->layers[0].unchanged);
  auto catalog = Catalog::Open(store_dir(), Catalog::Mode::kReadOnly);
  auto t = (*catalog)->GetTable("synthmodel", 1);
  ASSERT_TRUE(t.ok() && t->has_value());
  EXPECT_EQ((*t)->live_version, 3u);
}

// A write that fails part-way (here the process's file size limit: EFBIG, as ENOSPC would be)
// leaves the live version live and removes what it wrote.
TEST_F(TableSynthTest, FailedWriteKeepsTheLiveVersionAndLeavesNoFile) {
  WriteConfig(model_dir());
  ASSERT_TRUE(Synth(7).ok());
  const auto files_before = [&] {
    std::vector<std::string> f;
    for (auto& e : fs::recursive_directory_iterator(store_dir() + "/tables")) {
      if (e.is_regular_file()) f.push_back(e.path().string());
    }
    std::sort(f.begin(), f.end());
    return f;
  };
  const std::vector<std::string> before = files_before();

  // Layer 1's file fits under the limit, layer 3's does not: the first layer's new file must go
  // too, since nothing of the run becomes live.
  const std::vector<int64_t> rows = RowCounts(model_dir());
  const uint64_t bytes1 = RowLayout::For(rows[0], 66)->file_bytes();
  const uint64_t bytes3 = RowLayout::For(rows[1], 66)->file_bytes();
  ASSERT_LT(bytes1, bytes3) << "layer 3's primes are larger";
  const rlim_t limit = bytes1;
  struct rlimit old {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = limit;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  absl::StatusOr<ImportResult> failed = Synth(9);
  setrlimit(RLIMIT_FSIZE, &old);
  ASSERT_FALSE(failed.ok());
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "the live version stays"))
      << failed.status();
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "layer 3")) << failed.status();
  EXPECT_EQ(files_before(), before) << "the failed run's files are gone";
  auto catalog = Catalog::Open(store_dir(), Catalog::Mode::kReadOnly);
  for (uint32_t layer : {1u, 3u}) {
    auto t = (*catalog)->GetTable("synthmodel", layer);
    ASSERT_TRUE(t.ok() && t->has_value());
    EXPECT_EQ((*t)->live_version, 1u);
    EXPECT_EQ((*t)->versions.size(), 1u);
  }
}

TEST_F(TableSynthTest, BadArgumentsAreRefusedWithAMessage) {
  {  // head_dim 48 cannot take E8M0 blocks of 32
    WriteConfig(model_dir(), 48);
    auto r = Synth(1);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(r.status().message(), "not a multiple of 32")) << r.status();
  }
  {  // no Engram layer
    WriteConfig(model_dir(), kHeadDim, {});
    auto r = Synth(1);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(absl::StrContains(r.status().message(), "engram_layer_ids")) << r.status();
  }
  {  // no model
    auto catalog = Catalog::Open(store_dir(), Catalog::Mode::kReadWrite);
    SynthOptions o;
    o.model_dir = tmp_.path() + "/absent";
    auto r = SynthTables(**catalog, o);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(absl::StrContains(r.status().message(), "config.json")) << r.status();
  }
  // The CLI: one line naming the problem and a non-zero exit.
  WriteConfig(model_dir());
  const std::string engram = testing::BinaryPath("client/engram");
  auto run = [&](const std::string& args) {
    return testing::RunCommand(absl::StrCat(engram, " table synth ", args));
  };
  auto [code, out] = run(model_dir());
  EXPECT_EQ(code, 2);
  EXPECT_TRUE(absl::StrContains(out, "--store")) << out;
  std::tie(code, out) = run(absl::StrCat(model_dir(), " --store ", store_dir(), " --dtype fp4"));
  EXPECT_EQ(code, 2);
  EXPECT_TRUE(absl::StrContains(out, "fp4")) << out;
  std::tie(code, out) = run(absl::StrCat(model_dir(), " --store ", store_dir(), " --seed -1"));
  EXPECT_EQ(code, 2) << out;
  std::tie(code, out) =
      run(absl::StrCat(model_dir(), " --store ", store_dir(), " --chunk-bytes 5000"));
  EXPECT_EQ(code, 2);
  EXPECT_TRUE(absl::StrContains(out, "multiple of 4096")) << out;
  std::tie(code, out) = run(absl::StrCat(model_dir(), " --store ", store_dir(), " --seed 5"));
  EXPECT_EQ(code, 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "synthmodel layer 3: v1 live")) << out;
  EXPECT_TRUE(absl::StrContains(out, "seed 5")) << out;
}

// The shape `init-random --engram-params` writes: the table holds about params / head_dim rows
// in (max_ngram - 1) x heads sub-tables.
TEST(RandomEngramShapeTest, RowCountFollowsTheParameterCount) {
  for (double params : {1e9, 100e9}) {
    auto o = RandomModelPreset("dense-4b");
    ASSERT_TRUE(o.ok());
    RandomEngramShape shape;
    shape.layer_ids = {1};
    shape.params_per_layer = params;
    ASSERT_TRUE(SetRandomEngram(shape, &*o).ok());
    EXPECT_FALSE(o->write_tables);
    EngramConfig c;
    c.layer_ids = o->engram_layer_ids;
    c.max_ngram_size = o->engram_max_ngram_size;
    c.n_heads = o->engram_n_heads;
    c.head_dim = o->engram_head_dim;
    c.vocab_size_per_order.assign(c.max_ngram_size - 1, o->engram_vocab_size);
    const double rows = static_cast<double>(EngramLayerRowCounts(c)[0]);
    EXPECT_NEAR(rows * 256 / params, 1.0, 1e-3) << params;
  }
  auto o = RandomModelPreset("tiny");
  RandomEngramShape shape;
  shape.layer_ids = {9};
  shape.params_per_layer = 1e6;
  EXPECT_TRUE(absl::StrContains(SetRandomEngram(shape, &*o).message(), "outside the backbone"));
  shape.layer_ids = {1};
  shape.params_per_layer = 100;
  EXPECT_TRUE(absl::StrContains(SetRandomEngram(shape, &*o).message(), "--engram-params"));
}

}  // namespace
}  // namespace engram
