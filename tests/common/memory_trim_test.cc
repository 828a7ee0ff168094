// common/memory_trim.h: after a large request's memory is freed, the process's RSS drops back.
//
// The heap is shaped the way a large request leaves it: 256 MiB of blocks below glibc's mmap
// threshold, freed, each next to a small block still in use (what the rest of the process
// allocated meanwhile), so glibc's own trimming of the heap top cannot return them. Without
// malloc_trim the RSS stays; with TrimMemorySoon it drops within the settle time. (Not under
// AddressSanitizer, whose allocator is not glibc's.)
#include <malloc.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/memory_trim.h"
#include "gtest/gtest.h"

namespace engram {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

int64_t RssMiB() {
  long pages = 0, resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  const int n = std::fscanf(f, "%ld %ld", &pages, &resident);
  std::fclose(f);
  return n == 2 ? resident * sysconf(_SC_PAGESIZE) / (1 << 20) : -1;
}

// Allocates and touches `mib` MiB in 64 KiB blocks, each followed by a small block, frees the big
// ones and returns the small ones (still in use).
std::vector<void*> FragmentHeap(int mib) {
  std::vector<void*> blocks, pins;
  for (int i = 0; i < mib * 16; ++i) {
    void* p = std::malloc(64 << 10);
    std::memset(p, 1, 64 << 10);
    blocks.push_back(p);
    pins.push_back(std::malloc(64));
  }
  for (void* p : blocks) std::free(p);
  return pins;
}

TEST(MemoryTrimTest, RssDropsAfterALargeRequest) {
  if (kAsan) GTEST_SKIP() << "AddressSanitizer's allocator does not use glibc's arenas";
  // glibc's default; pinned so a test runner's environment cannot change the shape.
  ASSERT_EQ(mallopt(M_TRIM_THRESHOLD, 128 << 10), 1);
  const int64_t base = RssMiB();
  std::vector<void*> pins = FragmentHeap(256);
  const int64_t kept = RssMiB();
  std::printf("RSS: %lld MiB at start, %lld MiB after freeing 256 MiB of small blocks\n",
              static_cast<long long>(base), static_cast<long long>(kept));
  ASSERT_GE(kept - base, 200) << "the freed blocks should still be resident before the trim";

  const uint64_t trims = BackgroundMemoryTrims();
  TrimMemorySoon(kLargeRequestBytes - 1);  // a small request: nothing happens
  absl::SleepFor(absl::Milliseconds(1500));
  EXPECT_EQ(BackgroundMemoryTrims(), trims);
  EXPECT_GE(RssMiB() - base, 200);

  TrimMemorySoon(4 << 20);  // a 4 MiB request is done
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (BackgroundMemoryTrims() == trims && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  const int64_t after = RssMiB();
  std::printf("RSS: %lld MiB after the background trim\n", static_cast<long long>(after));
  EXPECT_GT(BackgroundMemoryTrims(), trims);
  // What stays: the pages holding the small blocks (one 4 KiB page per 64 KiB freed).
  EXPECT_LT(after - base, 48) << "RSS did not drop back after the trim";
  for (void* p : pins) std::free(p);
}

}  // namespace
}  // namespace engram
