// Process lifecycle: loading -> ready -> draining (docs/architecture.md pattern 9).
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
#include <vector>

#include "absl/synchronization/mutex.h"

namespace engram {

enum class LifecycleState { kLoading, kReady, kDraining, kStopped };
std::string_view LifecycleStateName(LifecycleState state);

// The states only move forward: a process that started draining never becomes ready again, even
// when "ready" is set by the loading thread after a signal already asked it to drain.
class Lifecycle {
 public:
  LifecycleState state() const { return state_.load(); }
  // Advances to `state`, wakes waiters and runs the listeners on the caller's thread; returns
  // false (and changes nothing) when the process is already at `state` or past it. Listeners see
  // the transitions in order, one at a time, and must not call Set.
  bool Set(LifecycleState state);
  // Called on every state change (e.g. to update the gRPC health service).
  void OnChange(std::function<void(LifecycleState)> listener);
  // Blocks until the state is at least `state` (kDraining also returns for kStopped).
  void WaitFor(LifecycleState state);

 private:
  std::atomic<LifecycleState> state_{LifecycleState::kLoading};
  // Held while listeners run, so two transitions cannot notify out of order.
  absl::Mutex notify_mu_ ABSL_ACQUIRED_BEFORE(mu_);
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

// Blocks SIGTERM and SIGINT for this thread and the threads it creates afterwards, and ignores
// SIGPIPE process-wide (a peer that went away is an error on the write, not a death).
void BlockTerminationSignals();

}  // namespace engram

#endif  // ENGRAM_COMMON_LIFECYCLE_H_
