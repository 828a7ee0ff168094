// Small pieces of the memory tier: row formats (DecodeRows for every dtype), the config (JSON
// merge, validation, byte sizes), the layer-priority scheduler, arena geometry and the checks a
// co-located client makes before trusting an arena, access statistics, the catalog's live pointer.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/row_format.h"
#include "common/safetensors.h"
#include "gtest/gtest.h"
#include "memory_tier/access_stats.h"
#include "memory_tier/arena.h"
#include "memory_tier/batch_scheduler.h"
#include "memory_tier/catalog.h"
#include "memory_tier/dram_tier.h"
#include "memory_tier/row_file.h"
#include "memory_tier/tier_client.h"
#include "memory_tier/tier_config.h"
#include "nlohmann/json.hpp"
#include "tests/memory_tier/test_model.h"

namespace engram {
namespace {

TEST(RowFormatTest, RowBytesAndNames) {
  EXPECT_EQ(*RowBytes(RowDType::kF32, 64), 256u);
  EXPECT_EQ(*RowBytes(RowDType::kBF16, 64), 128u);
  EXPECT_EQ(*RowBytes(RowDType::kF16, 19), 38u);
  EXPECT_EQ(*RowBytes("fp8_e4m3_e8m0", 256), 264u);
  EXPECT_FALSE(RowBytes(RowDType::kFp8E4M3E8M0, 48).ok());
  EXPECT_FALSE(RowBytes(RowDType::kBF16, 0).ok());
  auto bad = ParseRowDType("int8");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("int8"), absl::string_view::npos);
  for (RowDType d : {RowDType::kF32, RowDType::kBF16, RowDType::kF16, RowDType::kFp8E4M3E8M0}) {
    EXPECT_EQ(*ParseRowDType(RowDTypeName(d)), d);
  }
}

TEST(RowFormatTest, DecodesEveryDtypeAgainstAPlainReference) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-3, 3);
  const int d = 64;
  const size_t n = 3;
  std::vector<float> ref(n * d);
  for (auto& v : ref) v = u(rng);
  // f32: exact.
  std::vector<float> out(n * d);
  ASSERT_TRUE(
      DecodeRows(RowDType::kF32, reinterpret_cast<const uint8_t*>(ref.data()), n, d, out.data())
          .ok());
  EXPECT_EQ(out, ref);
  // bf16 / f16: rounding of the conversion only.
  for (RowDType dt : {RowDType::kBF16, RowDType::kF16}) {
    std::vector<uint16_t> half(n * d);
    for (size_t i = 0; i < half.size(); ++i) {
      half[i] = dt == RowDType::kBF16 ? F32ToBf16(ref[i]) : F32ToF16(ref[i]);
    }
    ASSERT_TRUE(
        DecodeRows(dt, reinterpret_cast<const uint8_t*>(half.data()), n, d, out.data()).ok());
    for (size_t i = 0; i < ref.size(); ++i) {
      EXPECT_NEAR(out[i], ref[i], (dt == RowDType::kBF16 ? 8e-3 : 1e-3) * std::fabs(ref[i]) + 1e-6);
    }
  }
  // fp8: payload x 2^(scale - 127), one scale per 32 values, scales after the payload.
  const size_t rb = *RowBytes(RowDType::kFp8E4M3E8M0, d);
  std::vector<uint8_t> rows(n * rb);
  for (size_t r = 0; r < n; ++r) {
    for (int j = 0; j < d; ++j) rows[r * rb + j] = F32ToF8E4M3(ref[r * d + j]);
    rows[r * rb + d] = 127 + static_cast<uint8_t>(r);  // 2^r
    rows[r * rb + d + 1] = 125;                        // 2^-2
  }
  ASSERT_TRUE(DecodeRows("fp8_e4m3_e8m0", rows.data(), n, d, out.data()).ok());
  for (size_t r = 0; r < n; ++r) {
    for (int j = 0; j < d; ++j) {
      const float scale = j < 32 ? std::ldexp(1.0f, static_cast<int>(r)) : 0.25f;
      EXPECT_EQ(out[r * d + j], F8E4M3ToF32(rows[r * rb + j]) * scale) << r << "," << j;
    }
  }
  EXPECT_FALSE(DecodeRows("fp8_e4m3_e8m0", rows.data(), n, 48, out.data()).ok());
}

TEST(TierConfigTest, MergesJsonValidatesAndParsesSizes) {
  TierConfig c;
  EXPECT_FALSE(c.Validate().ok());  // store.dir is required
  auto j = nlohmann::json::parse(R"({"store": {"dir": "/s"}, "dram": {"bytes": 1024},
                                      "nvme": {"io_backend": "pread", "io_depth": 8}})");
  ASSERT_TRUE(c.MergeJson(j).ok());
  EXPECT_EQ(c.store.dir, "/s");
  EXPECT_EQ(c.dram.bytes, 1024u);
  EXPECT_EQ(c.nvme.io_depth, 8);
  EXPECT_EQ(c.dram.ways, 8u);  // untouched default
  EXPECT_TRUE(c.Validate().ok());
  EXPECT_EQ(c.ToJson()["nvme"]["io_backend"], "pread");
  auto unknown = c.MergeJson(nlohmann::json::parse(R"({"dram": {"byts": 1}})"));
  EXPECT_NE(unknown.message().find("dram.byts"), absl::string_view::npos) << unknown;
  auto type = c.MergeJson(nlohmann::json::parse(R"({"nvme": {"io_depth": "deep"}})"));
  EXPECT_NE(type.message().find("nvme.io_depth"), absl::string_view::npos) << type;
  // Integers that do not fit the field are refused, not wrapped (4294967300 ways would be 4).
  auto wide = c.MergeJson(nlohmann::json::parse(R"({"dram": {"ways": 4294967300}})"));
  EXPECT_NE(wide.message().find("dram.ways"), absl::string_view::npos) << wide;
  EXPECT_EQ(c.dram.ways, 8u);
  auto negative = c.MergeJson(nlohmann::json::parse(R"({"nvme": {"max_read_bytes": -4096}})"));
  EXPECT_NE(negative.message().find("nvme.max_read_bytes"), absl::string_view::npos) << negative;
  auto big_int = c.MergeJson(nlohmann::json::parse(R"({"nvme": {"io_depth": 4294967304}})"));
  EXPECT_NE(big_int.message().find("nvme.io_depth"), absl::string_view::npos) << big_int;
  c.nvme.io_depth = 0;
  EXPECT_NE(c.Validate().message().find("nvme.io_depth"), absl::string_view::npos);
  c.nvme.io_depth = 8;
  c.nvme.io_backend = "aio";
  EXPECT_NE(c.Validate().message().find("nvme.io_backend"), absl::string_view::npos);
  EXPECT_EQ(*ParseByteSize("64M"), 64u << 20);
  EXPECT_EQ(*ParseByteSize("1GiB"), 1u << 30);
  EXPECT_EQ(*ParseByteSize("2GB"), 2000000000u);
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_FALSE(ParseByteSize("12Q").ok());
  EXPECT_FALSE(ParseByteSize("G").ok());
}

// The security keys: reflection and TLS from JSON (the flags set the same fields), defaults, and
// the pairs that must be given together.
TEST(TierConfigTest, ReflectionAndTlsKeys) {
  TierConfig c;
  c.store.dir = "/tmp";
  EXPECT_TRUE(c.server.reflection);
  EXPECT_TRUE(c.server.tls_cert.empty());
  EXPECT_EQ(c.dram.shm_mode, "0640");
  ASSERT_TRUE(c.MergeJson(nlohmann::json::parse(R"({"server": {"reflection": false,
      "tls_cert": "/tls/s.crt", "tls_key": "/tls/s.key", "tls_client_ca": "/tls/ca.crt"},
      "dram": {"shm_mode": "0600"}})")).ok());
  EXPECT_FALSE(c.server.reflection);
  EXPECT_EQ(c.server.tls_client_ca, "/tls/ca.crt");
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  EXPECT_EQ(c.ToJson()["server"]["tls_key"], "/tls/s.key");
  c.server.tls_cert.clear();
  EXPECT_NE(c.Validate().message().find("--tls-cert and --tls-key"), absl::string_view::npos);
  c.server.tls_key.clear();
  EXPECT_NE(c.Validate().message().find("--tls-client-ca needs"), absl::string_view::npos);
}

TEST(BatchSchedulerTest, EarlierLayersRunFirstThenArrivalOrder) {
  std::vector<std::pair<uint32_t, int>> ran;
  absl::Mutex mu;
  absl::Notification gate, started;
  {
    BatchScheduler s(1);
    // Occupy the only thread so the rest queue up, then release it.
    s.Submit(0, [&] {
      started.Notify();
      gate.WaitForNotification();
    });
    started.WaitForNotification();
    int i = 0;
    for (uint32_t layer : {14u, 1u, 14u, 1u, 3u}) {
      s.Submit(layer, [&, layer, i] {
        absl::MutexLock lock(&mu);
        ran.emplace_back(layer, i);
      });
      ++i;
    }
    EXPECT_EQ(s.queued(), 5u);
    gate.Notify();
  }  // the destructor runs everything queued
  const std::vector<std::pair<uint32_t, int>> expected = {{1, 1}, {1, 3}, {3, 4}, {14, 0}, {14, 2}};
  EXPECT_EQ(ran, expected);
}

TEST(ArenaTest, GeometryFitsTheBudget) {
  ArenaGeometry r = ResidentGeometry(1000, 264);
  EXPECT_EQ(r.slots, 1000u);
  EXPECT_EQ(r.data_offset, 4096u);
  EXPECT_GE(r.size_bytes, 4096u + 264000u);
  EXPECT_EQ(r.size_bytes % 4096, 0u);
  ArenaGeometry c = CacheGeometry(1000000, 264, 8, 1 << 20);
  EXPECT_GT(c.sets, 0u);
  EXPECT_EQ(c.slots, c.sets * 8);
  EXPECT_LE(c.size_bytes, 1u << 20);
  EXPECT_GE(c.data_offset, c.slot_header_offset + c.slots * sizeof(SlotHeader));
  EXPECT_EQ(CacheGeometry(1000, 264, 8, 8192).slots, 0u);
  // Never more sets than rows need.
  EXPECT_EQ(CacheGeometry(100, 264, 4, 1 << 30).sets, 25u);
  for (uint64_t row : {0ull, 1ull, 77ull, 1ull << 40}) EXPECT_LT(ArenaSetOf(row, 13), 13u);
}

TEST(ArenaTest, ClientRefusesForeignHostsMismatchesAndRetiredArenas) {
  DramTier::Options o;
  o.shm_name = absl::StrCat("/engram-test-", getpid(), "-units");
  o.budget_bytes = 1 << 20;
  o.lock = false;
  o.model = "m";
  o.version = 4;
  auto dram = DramTier::Create(o, 100, 64);
  ASSERT_TRUE(dram.ok()) << dram.status();
  ASSERT_TRUE((*dram)->resident());
  TableDescription d = testing::ArenaTableDescription(**dram, TableKey{"m", 0, 4}, 100);
  // Still loading: not readable yet.
  EXPECT_EQ(ArenaReader::Open(d).status().code(), absl::StatusCode::kFailedPrecondition);
  (*dram)->MarkReady();
  EXPECT_TRUE(ArenaReader::Open(d).ok());
  TableDescription other = d;
  other.arena.host_id = "another-host";
  EXPECT_EQ(ArenaReader::Open(other).status().code(), absl::StatusCode::kFailedPrecondition);
  other = d;
  other.arena.arena_id ^= 1;
  EXPECT_NE(ArenaReader::Open(other).status().message().find("arena id"), absl::string_view::npos);
  other = d;
  other.key.version = 5;
  EXPECT_FALSE(ArenaReader::Open(other).ok());
  other = d;
  other.arena.shm_name = "/engram-no-such-arena";
  EXPECT_EQ(ArenaReader::Open(other).status().code(), absl::StatusCode::kNotFound);
  other = d;
  other.arena.shm_name.clear();
  EXPECT_EQ(ArenaReader::Open(other).status().code(), absl::StatusCode::kFailedPrecondition);
  // A retired arena serves nothing: every row goes to the server.
  auto reader = ArenaReader::Open(d);
  ASSERT_TRUE(reader.ok());
  (*dram)->Retire();
  EXPECT_FALSE((*reader)->valid());
  std::vector<uint64_t> ids = {1, 2};
  std::vector<uint8_t> out(128);
  std::vector<uint32_t> missing;
  ASSERT_TRUE((*reader)->Lookup(ids, out.data(), &missing).ok());
  EXPECT_EQ(missing, (std::vector<uint32_t>{0, 1}));
}

// The arena is readable by the tier's user and group only (0640, or 0600), whatever the umask:
// not world-readable as before (0644), never writable by anyone but the tier.
TEST(ArenaTest, ObjectModeIsOwnerAndGroupOnlyWhateverTheUmask) {
  for (uint32_t mode : {0640u, 0600u}) {
    DramTier::Options o;
    o.shm_name = absl::StrCat("/engram-test-", getpid(), "-mode");
    o.budget_bytes = 1 << 20;
    o.lock = false;
    o.model = "m";
    o.version = 1;
    o.shm_mode = mode;
    const mode_t old_umask = umask(0);  // a permissive umask must not widen the mode
    auto dram = DramTier::Create(o, 100, 64);
    umask(old_umask);
    ASSERT_TRUE(dram.ok()) << dram.status();
    int fd = shm_open(o.shm_name.c_str(), O_RDONLY, 0);
    ASSERT_GE(fd, 0);
    struct stat st;
    ASSERT_EQ(fstat(fd, &st), 0);
    close(fd);
    EXPECT_EQ(st.st_mode & 07777, mode) << std::oct << (st.st_mode & 07777);
    EXPECT_EQ(st.st_uid, geteuid());
  }
  SharedArena::CreateOptions bad;
  bad.shm_name = absl::StrCat("/engram-test-", getpid(), "-badmode");
  bad.geometry = ResidentGeometry(10, 64);
  bad.mode = 0644;
  absl::StatusOr<std::unique_ptr<SharedArena>> refused = SharedArena::Create(bad);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("0600 or 0640"), absl::string_view::npos);
  TierConfig c;
  c.store.dir = "/tmp";
  c.dram.shm_mode = "0644";
  EXPECT_NE(c.Validate().message().find("dram.shm_mode"), absl::string_view::npos);
}

// A corrupt or hostile arena header (the client maps whatever the name holds) is refused before
// any read: no division by zero for sets = 0, no bound check defeated by an overflowing product.
TEST(ArenaTest, OpenRefusesInconsistentHeaders) {
  const std::string name = absl::StrCat("/engram-test-", getpid(), "-corrupt");
  auto write_header = [&](auto&& edit) {
    shm_unlink(name.c_str());
    int fd = shm_open(name.c_str(), O_CREAT | O_RDWR, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 3 * 4096), 0);
    ArenaHeader h{};
    h.magic = kArenaMagic;
    h.format_version = kArenaFormatVersion;
    h.layout = static_cast<uint32_t>(ArenaLayout::kCache);
    h.size_bytes = 3 * 4096;
    h.table_rows = 1000;
    h.row_bytes = h.slot_bytes = 64;
    h.ways = 4;
    h.sets = 8;
    h.slots = 32;
    h.slot_header_offset = 4096;
    h.data_offset = 8192;
    edit(h);
    ASSERT_EQ(pwrite(fd, &h, sizeof(h), 0), static_cast<ssize_t>(sizeof(h)));
    close(fd);
  };
  write_header([](ArenaHeader&) {});
  ASSERT_TRUE(SharedArena::Open(name).ok()) << "the unedited header is valid";
  write_header([](ArenaHeader& h) { h.sets = 0, h.slots = 0; });
  EXPECT_NE(SharedArena::Open(name).status().message().find("inconsistent geometry"),
            absl::string_view::npos);
  write_header([](ArenaHeader& h) { h.slots = uint64_t{1} << 60, h.sets = uint64_t{1} << 58; });
  EXPECT_EQ(SharedArena::Open(name).status().code(), absl::StatusCode::kFailedPrecondition);
  write_header([](ArenaHeader& h) { h.data_offset = ~uint64_t{0} - 100; });
  EXPECT_EQ(SharedArena::Open(name).status().code(), absl::StatusCode::kFailedPrecondition);
  shm_unlink(name.c_str());
}

// A consistent manifest of a small bf16 table of one chunk (no row file behind it).
Manifest SmallManifest(const std::string& model, uint32_t layer, uint64_t version) {
  Manifest m;
  m.model = model;
  m.layer = layer;
  m.version = version;
  m.dtype = "bf16";
  m.head_dim = 2;
  m.layout = *RowLayout::For(10, 4);
  m.file_bytes = m.layout.file_bytes();
  m.chunk_crc32c = {1};
  return m;
}

TEST(ManifestTest, FromJsonRefusesInconsistentManifests) {
  const Manifest m = SmallManifest("m", 1, 1);
  ASSERT_TRUE(Manifest::FromJson(m.ToJson()).ok());
  auto error = [&](auto&& edit) {
    nlohmann::json j = m.ToJson();
    edit(j);
    auto parsed = Manifest::FromJson(j);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(parsed.status().message());
  };
  // `engram table verify --manifest FILE` holds one chunk in memory: a huge chunk size would be
  // an allocation of that size, not an error message.
  EXPECT_NE(
      error([](nlohmann::json& j) { j["chunks"]["bytes"] = uint64_t{1} << 50; }).find("chunk size"),
      std::string::npos);
  EXPECT_NE(error([](nlohmann::json& j) { j["head_dim"] = 3; }).find("does not match dtype"),
            std::string::npos);
  EXPECT_NE(error([](nlohmann::json& j) { j["dtype"] = "int4"; }).find("int4"), std::string::npos);
  // Found by tests/fuzz/row_file_fuzz: a float out of range was cast to the integer field
  // (undefined behaviour, UBSan stops this test under scripts/test-sanitizers.sh); negative
  // numbers and fractions became other values.
  EXPECT_NE(error([](nlohmann::json& j) { j["rows"] = 1.11111e117; }).find("\"rows\""),
            std::string::npos);
  EXPECT_NE(error([](nlohmann::json& j) { j["layer"] = -1; }).find("\"layer\""), std::string::npos);
  EXPECT_NE(error([](nlohmann::json& j) { j["row_bytes"] = 64.5; }).find("\"row_bytes\""),
            std::string::npos);
  EXPECT_NE(error([](nlohmann::json& j) { j["layer"] = uint64_t{1} << 40; }).find("\"layer\""),
            std::string::npos);
  EXPECT_NE(error([](nlohmann::json& j) { j["chunks"]["crc32c"][0] = 1e300; }).find("\"crc32c\""),
            std::string::npos);
}

TEST(AccessStatsTest, CountsDecayAndKeepTheHottest) {
  AccessStats s({.sketch_width = 1024, .tracked_rows = 4});
  for (int i = 0; i < 100; ++i) s.Record(1);
  for (int i = 0; i < 50; ++i) s.Record(2);
  for (uint64_t r = 100; r < 400; ++r) s.Record(r);  // one-off rows
  EXPECT_GE(s.Estimate(1), 100u);
  auto top = s.Hottest(2);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].row, 1u);
  EXPECT_EQ(top[1].row, 2u);
  s.Decay(0.5);
  EXPECT_NEAR(s.Hottest(1)[0].count, 50, 1);
  s.Seed({{7, 1000}});
  EXPECT_EQ(s.Hottest(1)[0].row, 7u);
  EXPECT_EQ(s.accesses(), 450u);
}

TEST(CatalogTest, SetLiveAndStatisticsRoundTrip) {
  testing::TempDir tmp;
  auto c = Catalog::Open(tmp.path(), Catalog::Mode::kReadWrite);
  ASSERT_TRUE(c.ok()) << c.status();
  // A second read-write open is refused with a clear message; read-only works beside it.
  auto second = Catalog::Open(tmp.path(), Catalog::Mode::kReadWrite);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("in use"), absl::string_view::npos) << second.status();
  Manifest m = SmallManifest("a/b", 2, 1);  // not a safe file name: the directory is sanitised
  for (uint64_t v : {1, 2}) {
    m.version = v;
    ASSERT_TRUE((*c)->CommitVersions({m}).ok());
  }
  EXPECT_EQ((*c)->CommitVersions({m}).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE((*c)->SetLive("a/b", 2, 1).ok());
  EXPECT_EQ((*c)->SetLive("a/b", 2, 7).code(), absl::StatusCode::kNotFound);
  // Several tables switch in one batch or not at all.
  EXPECT_EQ((*c)->SetLive({{"a/b", 2, 2}, {"a/b", 9, 1}}).code(), absl::StatusCode::kNotFound);
  auto t = (*c)->GetTable("a/b", 2);
  ASSERT_TRUE(t.ok() && t->has_value());
  EXPECT_EQ((*t)->live_version, 1u);
  EXPECT_EQ((*t)->versions, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ((*c)->GetManifest("a/b", 2, 2)->version, 2u);
  ASSERT_TRUE((*c)->SaveStats("a/b", 2, {{5, 1.5}, {9, 7.0}}).ok());
  ASSERT_TRUE((*c)->SaveStats("a/b", 3, {{1, 1.0}}).ok());
  ASSERT_TRUE((*c)->SaveStats("a/b", 2, {{9, 7.0}, {4, 2.0}}).ok());  // replaces
  auto stats = (*c)->LoadStats("a/b", 2);
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(stats->size(), 2u);
  EXPECT_EQ((*stats)[0].row, 9u);
  EXPECT_EQ((*stats)[1].row, 4u);
  EXPECT_EQ((*c)->LoadStats("a/b", 3)->size(), 1u);
  const std::string dir = TableDir(tmp.path(), "a/b", 2);
  EXPECT_EQ(dir.find("a/b"), std::string::npos) << dir;
  EXPECT_EQ(TableDir(tmp.path(), "plain-name.v1", 2), tmp.path() + "/tables/plain-name.v1/layer-2");
}

}  // namespace
}  // namespace engram
