#include "common/memory_trim.h"

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace engram {
namespace {

// Wait after a large request before trimming, so the buffers still in flight (the response being
// written, the request's last references) are freed first; and the least time between trims.
constexpr absl::Duration kSettle = absl::Milliseconds(200);
constexpr absl::Duration kMinInterval = absl::Seconds(1);

class Trimmer {
 public:
  Trimmer() : thread_([this] { Loop(); }) { thread_.detach(); }

  void Request() {
    absl::MutexLock lock(&mu_);
    pending_ = true;
  }
  uint64_t trims() const { return trims_.load(); }

 private:
  void Loop() {
    absl::Time last = absl::InfinitePast();
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(&pending_));
        pending_ = false;
      }
      absl::SleepFor(std::max(kSettle, kMinInterval - (absl::Now() - last)));
      TrimMemoryNow();
      last = absl::Now();
      trims_.fetch_add(1);
    }
  }

  absl::Mutex mu_;
  bool pending_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> trims_{0};
  std::thread thread_;
};

// One per process, started by the first large request and never destroyed (a detached thread
// must not outlive what it uses).
Trimmer& GetTrimmer() {
  static Trimmer* trimmer = new Trimmer();
  return *trimmer;
}

}  // namespace

void TrimMemorySoon(size_t request_bytes) {
  if (request_bytes >= kLargeRequestBytes) GetTrimmer().Request();
}

bool TrimMemoryNow() { return malloc_trim(0) != 0; }

uint64_t BackgroundMemoryTrims() { return GetTrimmer().trims(); }

}  // namespace engram
