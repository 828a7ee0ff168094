// Page checksums of the row file (format 2, memory_tier/row_file.h): written by the real writer,
// checked by verification naming the page, on every NVMe read (both backends) while the tier is
// open, by the scrub, on load into DRAM (resident load and cache warm-up); format-1 files
// refused with the fix; the importer rewrites format-1 tables and tables marked for re-import.
#include <fcntl.h>

#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/crc32c.h"
#include "gtest/gtest.h"
#include "memory_tier/catalog.h"
#include "memory_tier/dram_tier.h"
#include "memory_tier/importer.h"
#include "memory_tier/nvme_tier.h"
#include "memory_tier/row_file.h"
#include "memory_tier/tiered_store.h"
#include "nlohmann/json.hpp"
#include "tests/memory_tier/test_model.h"

namespace engram {
namespace {

using testing::TempDir;

constexpr uint32_t kRowBytes = 128;  // bf16, head_dim 64: 32 rows per page

// 20000 random rows, 625 pages, 64 KiB chunks (16 pages).
struct Table : testing::RandomRowFile {
  explicit Table(uint32_t format = kRowFileFormatVersion)
      : RandomRowFile(20000, "bf16", 64, /*seed=*/5, format) {}
};

void FlipByte(const std::string& path, uint64_t offset) {
  auto fd = OpenFile(path, O_RDWR);
  ASSERT_TRUE(fd.ok()) << fd.status();
  uint8_t b = 0;
  ASSERT_TRUE(PreadAll(fd->get(), &b, 1, offset, path).ok());
  b ^= 0x10;
  ASSERT_TRUE(PwriteAll(fd->get(), &b, 1, offset, path).ok());
}

std::vector<uint8_t> ReadAll(const std::string& path) {
  auto f = ReadWholeFile(path);
  EXPECT_TRUE(f.ok()) << f.status();
  return f.ok() ? std::vector<uint8_t>(f->begin(), f->end()) : std::vector<uint8_t>();
}

class Recorder : public CorruptionObserver {
 public:
  void OnCorruptPage(uint64_t page, CorruptionSource source, const absl::Status& error) override {
    absl::MutexLock lock(&mu_);
    seen_.emplace_back(page, source);
    EXPECT_EQ(error.code(), absl::StatusCode::kDataLoss);
  }
  std::vector<std::pair<uint64_t, CorruptionSource>> seen() {
    absl::MutexLock lock(&mu_);
    return seen_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::pair<uint64_t, CorruptionSource>> seen_;
};

absl::Status LookupRows(NvmeTier& tier, const Table& t, const std::vector<uint64_t>& ids) {
  std::vector<uint8_t> out(ids.size() * kRowBytes);
  std::vector<uint32_t> missing;
  absl::Status s = tier.Lookup(ids, out.data(), &missing);
  if (!s.ok()) return s;
  EXPECT_TRUE(missing.empty());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (std::memcmp(&out[i * kRowBytes], t.Row(ids[i]), kRowBytes) != 0) {
      return absl::InternalError(absl::StrCat("row ", ids[i], " differs"));
    }
  }
  return absl::OkStatus();
}

// The page checks run on every read, through the three-stream hardware path for buffers of 4080
// bytes and more: it must equal a plain bitwise CRC-32C at every length and alignment around
// its thresholds, and when extended from any starting value.
TEST(PageChecksumTest, Crc32cEqualsABitwiseReferenceAtEveryLengthAndAlignment) {
  auto reference = [](uint32_t crc, const uint8_t* p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; ++i) {
      crc ^= p[i];
      for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ ((crc & 1) ? 0x82f63b78u : 0);
    }
    return ~crc;
  };
  std::mt19937_64 rng(11);
  std::vector<uint8_t> data(3 * 4096 + 64);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  std::vector<size_t> lengths = {0, 1, 7, 8, 9, 4079, 4080, 4081, 4087, 4088, 4095, 4096, 4104,
                                 8159, 8160, 8161, 12240, 3 * 4096};
  for (int i = 0; i < 40; ++i) lengths.push_back(rng() % (3 * 4096));
  for (size_t n : lengths) {
    for (size_t offset : {0, 1, 3, 8, 13}) {
      if (offset + n > data.size()) continue;
      const uint32_t start = static_cast<uint32_t>(rng());
      ASSERT_EQ(Crc32c(start, data.data() + offset, n), reference(start, data.data() + offset, n))
          << "length " << n << " offset " << offset;
    }
  }
}

TEST(PageChecksumTest, TheWriterStoresOneChecksumPerPageAfterTheRows) {
  Table t;
  const RowLayout& l = t.manifest.layout;
  ASSERT_EQ(l.format, 2u);
  ASSERT_EQ(l.pages(), 625u);
  EXPECT_EQ(l.data_end(), 4096u + 625 * 4096);
  EXPECT_EQ(l.page_checksum_bytes(), 4096u);  // 625 x 4 bytes, rounded up to a page
  EXPECT_EQ(t.manifest.file_bytes, l.file_bytes());
  const std::vector<uint8_t> file = ReadAll(t.path);
  ASSERT_EQ(file.size(), l.file_bytes());
  for (uint64_t p = 0; p < l.pages(); ++p) {
    uint32_t stored;
    std::memcpy(&stored, &file[l.data_end() + p * 4], 4);
    ASSERT_EQ(stored, PageChecksum(&file[l.PageOffset(p)], p)) << "page " << p;
  }
  EXPECT_EQ(t.manifest.page_checksums_crc32c,
            Crc32c(0, &file[l.data_end()], l.page_checksum_bytes()));
  // The page index is part of the checksum: a page read from the wrong place fails.
  EXPECT_NE(PageChecksum(&file[l.PageOffset(0)], 0), PageChecksum(&file[l.PageOffset(0)], 1));
  // Rows are where they always were (the layout arithmetic is unchanged).
  for (uint64_t r : {0ull, 31ull, 32ull, 19999ull}) {
    ASSERT_EQ(0, std::memcmp(&file[l.RowOffset(r)], t.Row(r), kRowBytes)) << r;
  }
  // The manifest says so and parses back.
  const nlohmann::json j = t.manifest.ToJson();
  EXPECT_EQ(j["format"], "engram-rowfile-v2");
  EXPECT_EQ(j["page_checksums"]["offset"], l.data_end());
  auto back = Manifest::FromJson(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->layout.format, 2u);
  EXPECT_EQ(back->page_checksums_crc32c, t.manifest.page_checksums_crc32c);
  EXPECT_TRUE(VerifyRowFile(t.manifest, t.path).ok());
}

TEST(PageChecksumTest, VerificationNamesTheBadPage) {
  Table t;
  const RowLayout& l = t.manifest.layout;
  FlipByte(t.path, l.PageOffset(20) + 7);
  absl::Status s = VerifyRowFile(t.manifest, t.path);
  ASSERT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("chunk 1 of"), absl::string_view::npos) << s;  // chunk first
  // A chunk checksum computed over the bad bytes (a writer fault) still leaves the page's.
  Manifest m = t.manifest;
  const std::vector<uint8_t> file = ReadAll(t.path);
  m.chunk_crc32c[1] = Crc32c(0, &file[m.ChunkBegin(1)], m.ChunkEnd(1) - m.ChunkBegin(1));
  s = VerifyRowFile(m, t.path);
  ASSERT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("page 20 (rows 640..671) [86016, 90112): checksum mismatch"),
            absl::string_view::npos)
      << s;
  // A damaged checksum region is named as such.
  Table u;
  FlipByte(u.path, u.manifest.layout.data_end() + 2);
  auto crcs = ReadPageChecksums(u.manifest, u.path);
  ASSERT_EQ(crcs.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(crcs.status().message().find("page checksums"), absl::string_view::npos)
      << crcs.status();
  EXPECT_EQ(NvmeTier::Open(u.manifest, u.path, NvmeTier::Options()).status().code(),
            absl::StatusCode::kDataLoss);
}

class NvmePageCheckTest : public ::testing::TestWithParam<IoBackend> {
 protected:
  void SetUp() override {
    if (GetParam() == IoBackend::kUring && !testing::UringAvailable()) {
      GTEST_SKIP() << "io_uring is not available to this process";
    }
  }
  NvmeTier::Options Options() {
    NvmeTier::Options o;
    o.io.backend = GetParam();
    o.io.depth = 8;
    o.corruption = &recorder_;
    return o;
  }
  Recorder recorder_;
};

TEST_P(NvmePageCheckTest, AByteFlippedWhileOpenFailsItsPagesRowsWithDataLossOnly) {
  Table t;
  auto tier = NvmeTier::Open(t.manifest, t.path, Options());
  ASSERT_TRUE(tier.ok()) << tier.status();
  ASSERT_TRUE(LookupRows(**tier, t, {5, 3210, 19999}).ok());

  // Page 100 holds rows 3200..3231; flip one byte of row 3210 behind the open tier's back.
  const RowLayout& l = t.manifest.layout;
  FlipByte(t.path, l.RowOffset(3210) + 3);
  absl::Status s = LookupRows(**tier, t, {5, 3210, 6000});
  ASSERT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find(t.path + ": page 100 (rows 3200..3231)"), absl::string_view::npos)
      << s;
  EXPECT_NE(s.message().find("checksum mismatch"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("marked for re-import"), absl::string_view::npos) << s;
  // Another row of the same page, read in a merged run with its neighbours: still caught.
  EXPECT_EQ(LookupRows(**tier, t, {3199, 3231, 3232}).code(), absl::StatusCode::kDataLoss);
  // Everything else is served, exactly; the tier is not broken by it.
  std::mt19937_64 rng(7);
  std::vector<uint64_t> ids;
  while (ids.size() < 2000) {
    const uint64_t id = rng() % l.rows;
    if (l.PageOf(id) != 100) ids.push_back(id);
  }
  EXPECT_TRUE(LookupRows(**tier, t, ids).ok());
  auto seen = recorder_.seen();
  ASSERT_EQ(seen.size(), 2u);  // every detection is reported; the observer counts pages once
  EXPECT_EQ(seen[0], std::make_pair(uint64_t{100}, CorruptionSource::kRead));
  // Two bad pages in one batch: both reported, the message counts the second.
  FlipByte(t.path, l.RowOffset(10) + 1);
  s = LookupRows(**tier, t, {10, 3210, 11000});
  ASSERT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("page 0 (rows 0..31)"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("and 1 more bad pages"), absl::string_view::npos) << s;
  // Repaired on disk: served again (every read is checked, nothing is remembered as bad here).
  FlipByte(t.path, l.RowOffset(3210) + 3);
  FlipByte(t.path, l.RowOffset(10) + 1);
  EXPECT_TRUE(LookupRows(**tier, t, {5, 10, 3210, 6000}).ok());
}

TEST_P(NvmePageCheckTest, TheScrubFindsABadPageNobodyReads) {
  Table t;
  auto tier = NvmeTier::Open(t.manifest, t.path, Options());
  ASSERT_TRUE(tier.ok()) << tier.status();
  const uint64_t pages = t.manifest.layout.pages();
  auto scrub_all = [&] {
    uint64_t bad = 0;
    for (uint64_t p = 0; p < pages; p += NvmeTier::kMaxScrubPages) {
      const uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(NvmeTier::kMaxScrubPages, pages - p));
      EXPECT_TRUE((*tier)->ScrubPages(p, n, &bad).ok());
    }
    return bad;
  };
  const uint64_t reads = (*tier)->counters().reads.load();
  EXPECT_EQ(scrub_all(), 0u);
  EXPECT_EQ((*tier)->counters().reads.load(), reads);  // off the lookup path's counters
  FlipByte(t.path, t.manifest.layout.PageOffset(300) + 4095);  // the page's last byte
  EXPECT_EQ(scrub_all(), 1u);
  auto seen = recorder_.seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], std::make_pair(uint64_t{300}, CorruptionSource::kScrub));
  uint64_t bad = 0;
  EXPECT_EQ((*tier)->ScrubPages(pages - 1, 2, &bad).code(), absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Backends, NvmePageCheckTest,
                         ::testing::Values(IoBackend::kUring, IoBackend::kPread),
                         [](const auto& info) { return std::string(IoBackendName(info.param)); });

TEST(OldFormatTest, AFormatOneFileIsRefusedNamingTheFileAndTheFix) {
  Table t(/*format=*/1);
  const RowLayout& l = t.manifest.layout;
  EXPECT_EQ(l.format, 1u);
  EXPECT_EQ(l.file_bytes(), l.data_end());  // no checksum region
  EXPECT_EQ(std::filesystem::file_size(t.path), l.file_bytes());
  const nlohmann::json j = t.manifest.ToJson();
  EXPECT_EQ(j["format"], "engram-rowfile-v1");
  EXPECT_FALSE(j.contains("page_checksums"));
  auto back = Manifest::FromJson(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->layout.format, 1u);
  // Still verifiable chunk by chunk (engram table verify, inspect) ...
  EXPECT_TRUE(VerifyRowFile(*back, t.path).ok());
  // ... but not served.
  auto tier = NvmeTier::Open(*back, t.path, NvmeTier::Options());
  ASSERT_EQ(tier.status().code(), absl::StatusCode::kFailedPrecondition) << tier.status();
  const std::string msg(tier.status().message());
  EXPECT_NE(msg.find(t.path), std::string::npos) << msg;
  EXPECT_NE(msg.find("format 1 has no page checksums"), std::string::npos) << msg;
  EXPECT_NE(msg.find("engram table import"), std::string::npos) << msg;
  // A format-2 manifest over a format-1 file (or the reverse) is refused by the header check.
  Manifest m2 = *back;
  m2.layout.format = 2;
  EXPECT_EQ(QuickCheckRowFile(m2, t.path).code(), absl::StatusCode::kDataLoss);
}

// ---- Load into DRAM ------------------------------------------------------------------------------

DramTier::Options DramOptions(const std::string& suffix, uint64_t budget) {
  DramTier::Options d;
  d.shm_name = absl::StrCat("/engram-test-", getpid(), "-", suffix);
  d.budget_bytes = budget;
  d.ways = 4;
  d.lock = false;
  d.model = "test";
  d.layer = 1;
  d.version = 1;
  return d;
}

TEST(DramLoadTest, AResidentLoadRefusesABadPage) {
  Table t;
  const RowLayout& l = t.manifest.layout;
  auto dram = DramTier::Create(DramOptions("resident", 64 << 20), l.rows, l.row_bytes);
  ASSERT_TRUE(dram.ok()) << dram.status();
  ASSERT_TRUE((*dram)->resident());
  FlipByte(t.path, l.PageOffset(33) + 100);
  // The chunk checksum catches it first ...
  absl::Status s = (*dram)->LoadResident(t.manifest, t.path);
  ASSERT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("chunk 2 of"), absl::string_view::npos) << s;
  // ... and the page checksum when the chunk's was computed over the bad bytes.
  Manifest m = t.manifest;
  const std::vector<uint8_t> file = ReadAll(t.path);
  m.chunk_crc32c[2] = Crc32c(0, &file[m.ChunkBegin(2)], m.ChunkEnd(2) - m.ChunkBegin(2));
  s = (*dram)->LoadResident(m, t.path);
  ASSERT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("page 33 (rows 1056..1087)"), absl::string_view::npos) << s;
  EXPECT_EQ((*dram)->arena().header().state.load(), static_cast<uint32_t>(ArenaState::kLoading));
}

TEST(DramLoadTest, WarmUpLoadsEveryGoodRowAndNoRowOfABadPage) {
  Table t;
  const RowLayout& l = t.manifest.layout;
  Recorder recorder;
  NvmeTier::Options no;
  no.io.backend = IoBackend::kPread;
  no.corruption = &recorder;
  auto nvme = NvmeTier::Open(t.manifest, t.path, no);
  ASSERT_TRUE(nvme.ok()) << nvme.status();
  auto dram = DramTier::Create(DramOptions("warm", 4096 + 512 * 1024), l.rows, l.row_bytes);
  ASSERT_TRUE(dram.ok()) << dram.status();
  ASSERT_FALSE((*dram)->resident());
  TieredStore store({dram->get(), nvme->get()}, dram->get(), l.rows, TieredStore::Options());
  FlipByte(t.path, l.RowOffset(325) + 9);  // page 10: rows 320..351
  std::vector<RowCount> hot;
  for (uint64_t r : {320, 325, 351, 0, 1, 2, 3000, 352}) hot.push_back({r, 100.0 - hot.size()});
  absl::Status s = store.WarmUp(hot);
  ASSERT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  std::vector<uint64_t> good = {0, 1, 2, 3000, 352}, bad = {320, 325, 351};
  std::vector<uint8_t> out(good.size() * kRowBytes);
  std::vector<uint32_t> missing;
  ASSERT_TRUE((*dram)->Lookup(good, out.data(), &missing).ok());
  EXPECT_TRUE(missing.empty());
  for (size_t i = 0; i < good.size(); ++i) {
    EXPECT_EQ(0, std::memcmp(&out[i * kRowBytes], t.Row(good[i]), kRowBytes)) << good[i];
  }
  missing.clear();
  out.resize(bad.size() * kRowBytes);
  ASSERT_TRUE((*dram)->Lookup(bad, out.data(), &missing).ok());
  EXPECT_EQ(missing.size(), bad.size());
  EXPECT_FALSE(recorder.seen().empty());
  // Through the cascade: the bad rows fail, and a failed batch promotes nothing.
  std::vector<uint64_t> served;
  std::vector<uint64_t> ids = {325, 4000};
  out.resize(ids.size() * kRowBytes);
  EXPECT_EQ(store.Lookup(ids, out.data(), &served).code(), absl::StatusCode::kDataLoss);
  store.Flush();
  missing.clear();
  ASSERT_TRUE((*dram)->Lookup(ids, out.data(), &missing).ok());
  EXPECT_EQ(missing.size(), 2u);
}

// ---- Re-import ---------------------------------------------------------------------------------

TEST(ReimportTest, ImportRewritesMarkedAndFormatOneTablesWithoutForce) {
  TempDir tmp;
  const std::string model = tmp.path() + "/model", store = tmp.path() + "/store";
  testing::TestModelSpec spec;
  spec.layer_ids = {1, 3};
  ASSERT_TRUE(testing::WriteTestModel(model, spec).ok());
  auto catalog = Catalog::Open(store, Catalog::Mode::kReadWrite);
  ASSERT_TRUE(catalog.ok());
  ImportOptions io;
  io.model_dir = model;
  io.chunk_bytes = 8192;
  auto import = [&] {
    auto r = ImportModel(**catalog, io);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ImportResult();
  };
  ImportResult first = import();
  ASSERT_EQ(first.layers.size(), 2u);
  EXPECT_TRUE(import().layers[0].unchanged);

  // Marked (as engram-memory does when a page fails): rewritten, the mark gone.
  ASSERT_TRUE((*catalog)->MarkForReimport("testmodel", 3, 1, "page 2 bad").ok());
  auto rec = (*catalog)->GetTable("testmodel", 3);
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_TRUE((*rec)->live_needs_reimport());
  EXPECT_EQ((*rec)->reimport_reason, "page 2 bad");
  ImportResult second = import();
  ASSERT_EQ(second.layers.size(), 2u);
  EXPECT_TRUE(second.layers[0].unchanged);  // layer 1 was not marked
  EXPECT_FALSE(second.layers[1].unchanged);
  EXPECT_EQ(second.layers[1].version, 2u);
  rec = (*catalog)->GetTable("testmodel", 3);
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_FALSE((*rec)->live_needs_reimport());
  EXPECT_EQ((*rec)->reimport_version, 0u);
  EXPECT_TRUE(import().layers[1].unchanged);

  // A live version in format 1 (written by an older build): rewritten in format 2.
  auto live = (*catalog)->GetManifest("testmodel", 1, 1);
  ASSERT_TRUE(live.ok());
  size_t row_bytes = 0;
  auto rows = testing::SourceRows(model, 1, &row_bytes);
  ASSERT_TRUE(rows.ok());
  Manifest old = *live;
  old.version = 7;
  old.layout = *RowLayout::For(live->layout.rows, live->layout.row_bytes, 1);
  old.row_file = std::filesystem::path(live->row_file).parent_path().string() + "/v7.rows";
  auto writer = RowFileWriter::Create(store + "/" + old.row_file, old);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append(rows->data(), old.layout.rows).ok());
  ASSERT_TRUE((*writer)->Finish(&old).ok());
  ASSERT_TRUE((*catalog)->CommitVersions({old}).ok());
  ImportResult third = import();
  ASSERT_EQ(third.layers.size(), 2u);
  EXPECT_FALSE(third.layers[0].unchanged);
  EXPECT_EQ(third.layers[0].version, 8u);
  auto rewritten = (*catalog)->GetManifest("testmodel", 1, 8);
  ASSERT_TRUE(rewritten.ok());
  EXPECT_EQ(rewritten->layout.format, kRowFileFormatVersion);
  EXPECT_TRUE(VerifyRowFile(*rewritten, store + "/" + rewritten->row_file).ok());
  EXPECT_TRUE(import().layers[0].unchanged);
}

}  // namespace
}  // namespace engram
