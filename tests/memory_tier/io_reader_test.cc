// The cold tier's I/O paths on real files: short reads and EAGAIN injected through the reader's
// fault hook (io_uring and pread), hard errors, early EOF, and the pread fallback when io_uring
// is blocked by seccomp (as in a locked-down container).
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "memory_tier/nvme_tier.h"
#include "memory_tier/row_file.h"
#include "tests/memory_tier/test_model.h"

namespace engram {
namespace {

// 20000 random 128-byte rows (bf16, head_dim 64), 32 per page.
struct Table : testing::RandomRowFile {
  Table() : RandomRowFile(20000, "bf16", 64, /*seed=*/3) {}
};

// Looks up a random batch spread over many pages and checks it byte for byte.
absl::Status LookupAndCheck(NvmeTier& tier, const Table& t, uint64_t seed, size_t n = 3000) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> ids(n);
  for (auto& id : ids) id = rng() % t.manifest.layout.rows;
  std::vector<uint8_t> out(n * 128);
  std::vector<uint32_t> missing;
  absl::Status s = tier.Lookup(ids, out.data(), &missing);
  if (!s.ok()) return s;
  EXPECT_TRUE(missing.empty());
  for (size_t i = 0; i < n; ++i) {
    if (std::memcmp(&out[i * 128], &t.rows[ids[i] * 128], 128) != 0) {
      return absl::InternalError(absl::StrCat("row ", ids[i], " differs"));
    }
  }
  return absl::OkStatus();
}

class IoFaultTest : public ::testing::TestWithParam<IoBackend> {};

TEST_P(IoFaultTest, ShortReadsAndEagainAreResubmitted) {
  if (GetParam() == IoBackend::kUring && !testing::UringAvailable()) {
    GTEST_SKIP() << "io_uring is not available to this process";
  }
  Table t;
  std::atomic<int> calls{0};
  NvmeTier::Options o;
  o.io.backend = GetParam();
  o.io.depth = 16;
  o.io.max_read_bytes = 16384;  // 4-page runs: short reads can keep whole pages
  o.io.fault_hook = [&calls](int res) {
    const int c = calls.fetch_add(1);
    if (res <= 0) return res;
    if (c % 5 == 1) return -EAGAIN;                   // the kernel asked us to retry
    if (c % 7 == 2) return res > 4096 ? 4096 : 1000;  // one page, or less than one
    if (c % 11 == 3) return -EINTR;
    return res;
  };
  auto tier = NvmeTier::Open(t.manifest, t.path, o);
  ASSERT_TRUE(tier.ok()) << tier.status();
  ASSERT_EQ((*tier)->backend(), GetParam());
  for (uint64_t seed = 0; seed < 5; ++seed) {
    absl::Status s = LookupAndCheck(**tier, t, seed);
    ASSERT_TRUE(s.ok()) << s;
  }
  const IoCounters& c = (*tier)->counters();
  EXPECT_GT(c.short_reads.load(), 0u);
  EXPECT_GT(c.retries.load(), 0u);
  EXPECT_EQ(c.in_flight.load(), 0);
}

TEST_P(IoFaultTest, HardErrorsFailTheBatchAndTheTierRecovers) {
  if (GetParam() == IoBackend::kUring && !testing::UringAvailable()) {
    GTEST_SKIP() << "io_uring is not available to this process";
  }
  Table t;
  std::atomic<int> mode{0};  // 0 pass, 1 EIO once, 2 EOF, 3 EAGAIN forever
  std::atomic<bool> fired{false};
  NvmeTier::Options o;
  o.io.backend = GetParam();
  o.io.depth = 8;
  o.io.fault_hook = [&](int res) {
    switch (mode.load()) {
      case 1:
        return fired.exchange(true) ? res : -EIO;
      case 2:
        return 0;
      case 3:
        return -EAGAIN;
      default:
        return res;
    }
  };
  auto tier = NvmeTier::Open(t.manifest, t.path, o);
  ASSERT_TRUE(tier.ok()) << tier.status();
  mode = 1;
  absl::Status s = LookupAndCheck(**tier, t, 1);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(t.path), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("Input/output error"), absl::string_view::npos) << s;
  EXPECT_EQ((*tier)->counters().in_flight.load(), 0);
  mode = 2;
  s = LookupAndCheck(**tier, t, 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_NE(s.message().find("truncated"), absl::string_view::npos) << s;
  mode = 3;
  s = LookupAndCheck(**tier, t, 3, 10);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("resubmissions"), absl::string_view::npos) << s;
  mode = 0;  // the tier serves correctly afterwards (failed readers are replaced)
  EXPECT_TRUE(LookupAndCheck(**tier, t, 4).ok());
  EXPECT_EQ((*tier)->counters().in_flight.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, IoFaultTest,
                         ::testing::Values(IoBackend::kUring, IoBackend::kPread),
                         [](const auto& info) { return std::string(IoBackendName(info.param)); });

// Blocks io_uring_setup for the calling thread only, like a container's seccomp profile.
bool BlockIoUringSetup() {
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])),
                            filter};
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

TEST(PreadFallbackTest, UringUnderSeccompFallsBackToPread) {
  Table t;
  // The filter is installed in a thread of its own, so the rest of the test binary keeps io_uring.
  std::thread([&t] {
    ASSERT_TRUE(BlockIoUringSetup());
    NvmeTier::Options o;
    o.io.backend = IoBackend::kUring;
    auto tier = NvmeTier::Open(t.manifest, t.path, o);
    ASSERT_TRUE(tier.ok()) << tier.status();
    EXPECT_EQ((*tier)->backend(), IoBackend::kPread);
    // Counted, for engram_nvme_uring_fallback_readers.
    EXPECT_GE((*tier)->counters().uring_fallbacks.load(), 1);
    for (uint64_t seed = 0; seed < 3; ++seed) {
      absl::Status s = LookupAndCheck(**tier, t, seed);
      EXPECT_TRUE(s.ok()) << s;
    }
  }).join();
  // Outside that thread io_uring still works.
  if (!testing::UringAvailable()) return;
  NvmeTier::Options o;
  auto tier = NvmeTier::Open(t.manifest, t.path, o);
  ASSERT_TRUE(tier.ok());
  EXPECT_EQ((*tier)->backend(), IoBackend::kUring);
  EXPECT_EQ((*tier)->counters().uring_fallbacks.load(), 0);
}

TEST(NvmeTierTest, DedupsPagesAndMergesAdjacentPagesIntoRuns) {
  Table t;
  NvmeTier::Options o;
  o.io.backend = IoBackend::kPread;
  o.io.max_read_bytes = 8192;
  auto tier = NvmeTier::Open(t.manifest, t.path, o);
  ASSERT_TRUE(tier.ok());
  // 32 rows per page: rows 0..95 are pages 0-2; with 2-page runs that is 2 reads, however many
  // times each row is asked for.
  std::vector<uint64_t> ids;
  for (int rep = 0; rep < 3; ++rep) {
    for (uint64_t r = 0; r < 96; ++r) ids.push_back(95 - r);
  }
  std::vector<uint8_t> out(ids.size() * 128);
  std::vector<uint32_t> missing;
  const uint64_t before = (*tier)->counters().reads.load();
  ASSERT_TRUE((*tier)->Lookup(ids, out.data(), &missing).ok());
  EXPECT_EQ((*tier)->counters().reads.load() - before, 2u);
  EXPECT_EQ((*tier)->counters().bytes.load(), 3u * 4096);
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_EQ(0, std::memcmp(&out[i * 128], &t.rows[ids[i] * 128], 128)) << i;
  }
}

TEST(NvmeTierTest, RefusesATruncatedOrForeignRowFile) {
  Table t;
  std::filesystem::resize_file(t.path, t.manifest.file_bytes - 4096);
  auto tier = NvmeTier::Open(t.manifest, t.path, NvmeTier::Options());
  ASSERT_FALSE(tier.ok());
  EXPECT_EQ(tier.status().code(), absl::StatusCode::kDataLoss) << tier.status();
  Manifest other = t.manifest;
  other.version = 9;
  EXPECT_FALSE(NvmeTier::Open(other, t.path, NvmeTier::Options()).ok());
  EXPECT_EQ(NvmeTier::Open(t.manifest, t.path + ".missing", NvmeTier::Options()).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace engram
