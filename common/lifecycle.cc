#include "common/lifecycle.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

namespace engram {

std::string_view LifecycleStateName(LifecycleState state) {
  switch (state) {
    case LifecycleState::kLoading: return "loading";
    case LifecycleState::kReady: return "ready";
    case LifecycleState::kDraining: return "draining";
    case LifecycleState::kStopped: return "stopped";
  }
  return "unknown";
}

bool Lifecycle::Set(LifecycleState state) {
  absl::MutexLock notify(&notify_mu_);
  std::vector<std::function<void(LifecycleState)>> listeners;
  {
    absl::MutexLock lock(&mu_);
    if (static_cast<int>(state) <= static_cast<int>(state_.load())) return false;
    state_.store(state);
    listeners = listeners_;
  }
  for (auto& l : listeners) l(state);
  return true;
}

void Lifecycle::OnChange(std::function<void(LifecycleState)> listener) {
  absl::MutexLock lock(&mu_);
  listeners_.push_back(std::move(listener));
}

void Lifecycle::WaitFor(LifecycleState state) {
  absl::MutexLock lock(&mu_);
  auto reached = [this, state]() { return static_cast<int>(state_.load()) >= static_cast<int>(state); };
  mu_.Await(absl::Condition(&reached));
}

void BlockTerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

SignalWatcher::SignalWatcher(std::function<void(int)> on_signal) {
  BlockTerminationSignals();
  thread_ = std::thread([this, on_signal = std::move(on_signal)] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    while (!stop_.load()) {
      timespec timeout{0, 200 * 1000 * 1000};
      int sig = sigtimedwait(&set, nullptr, &timeout);
      if (sig > 0) on_signal(sig);
    }
  });
}

SignalWatcher::~SignalWatcher() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

}  // namespace engram
