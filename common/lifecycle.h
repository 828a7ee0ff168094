// Process lifecycle: loading -> ready -> draining (STYLE.md rule 9).
//
// Health reports the state; SIGTERM/SIGINT move a process to draining, after which it stops taking
// new work, finishes what it has within a timeout and exits. The signal is received by a dedicated
// thread with sigwait(), so no work happens inside a signal handler.
#ifndef ENGRAM_COMMON_LIFECYCLE_H_
#define ENGRAM_COMMON_LIFECYCLE_H_

#include <atomic>
#include <functional>
#include <string_view>
#include <thread>

#include "absl/synchronization/mutex.h"

namespace engram {

enum class LifecycleState { kLoading, kReady, kDraining, kStopped };
std::string_view LifecycleStateName(LifecycleState state);

class Lifecycle {
 public:
  LifecycleState state() const { return state_.load(); }
  // Sets the state and wakes waiters; listeners run on the caller's thread.
  void Set(LifecycleState state);
  // Called on every state change (e.g. to update the gRPC health service).
  void OnChange(std::function<void(LifecycleState)> listener);
  // Blocks until the state is at least `state` (kDraining also returns for kStopped).
  void WaitFor(LifecycleState state);

 private:
  std::atomic<LifecycleState> state_{LifecycleState::kLoading};
  absl::Mutex mu_;
  std::vector<std::function<void(LifecycleState)>> listeners_ ABSL_GUARDED_BY(mu_);
};

// Blocks SIGTERM and SIGINT in the calling thread (call first in main, before other threads
// start, so they inherit the mask) and starts a thread that calls `on_signal` once per signal.
class SignalWatcher {
 public:
  explicit SignalWatcher(std::function<void(int signal)> on_signal);
  ~SignalWatcher();

 private:
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

// Blocks SIGTERM/SIGINT/SIGPIPE for this thread and the threads it creates afterwards.
void BlockTerminationSignals();

}  // namespace engram

#endif  // ENGRAM_COMMON_LIFECYCLE_H_
