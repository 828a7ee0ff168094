// File: memory_tier/batch_scheduler.h
//
// The lookup threads of engram-memory: a priority queue of batches (Lookup calls and Prefetch
// batches) served by a fixed pool of threads, earliest Engram layer first and, within a layer, in
// arrival order. Layer 1's rows have the least time to arrive before the GPU needs them
// (docs/architecture.md contract 4), so they overtake later layers' batches that are still waiting.
#ifndef ENGRAM_MEMORY_TIER_BATCH_SCHEDULER_H_
#define ENGRAM_MEMORY_TIER_BATCH_SCHEDULER_H_

#include <cstdint>
#include <functional>
#include <queue>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace engram {

class BatchScheduler {
 public:
  explicit BatchScheduler(int threads);
  // Runs every queued task, then joins the threads.
  ~BatchScheduler();

  // Queues `task` with priority `layer` (smaller first).
  void Submit(uint32_t layer, std::function<void()> task);
  size_t queued() const;

 private:
  struct Item {
    uint32_t layer;
    uint64_t seq;
    std::function<void()> task;
    bool operator<(const Item& o) const {  // priority_queue pops the largest
      return layer != o.layer ? layer > o.layer : seq > o.seq;
    }
  };
  void Loop();

  mutable absl::Mutex mu_;
  std::priority_queue<Item> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace engram

#endif  // ENGRAM_MEMORY_TIER_BATCH_SCHEDULER_H_
