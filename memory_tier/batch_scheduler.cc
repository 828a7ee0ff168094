#include "memory_tier/batch_scheduler.h"

namespace engram {

BatchScheduler::BatchScheduler(int threads) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

BatchScheduler::~BatchScheduler() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (auto& t : threads_) t.join();
}

void BatchScheduler::Submit(uint32_t layer, std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  queue_.push(Item{layer, next_seq_++, std::move(task)});
}

size_t BatchScheduler::queued() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

void BatchScheduler::Loop() {
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(const_cast<Item&>(queue_.top()).task);
      queue_.pop();
    }
    task();
  }
}

}  // namespace engram
