// A small fixed thread pool for data-parallel loops of the CPU backend.
//
// ParallelFor splits [0, n) into at most threads() contiguous ranges, runs one on the calling
// thread and the rest on the workers, and returns when all are done. Work is only ever split by
// range, so which thread computes an element never changes what is computed.
#ifndef ENGRAM_MODEL_THREAD_POOL_H_
#define ENGRAM_MODEL_THREAD_POOL_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace engram {

class ThreadPool {
 public:
  // `threads` counts the caller: 1 = run everything inline (no worker threads).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint ranges covering [0, n). Ranges are at least `min_chunk` long
  // (fewer ranges when n is small), so tiny loops stay on the calling thread. Not reentrant: call
  // from one thread at a time.
  void ParallelFor(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  uint64_t generation_ = 0;  // bumped per ParallelFor
  int pending_ = 0;          // worker ranges not finished yet
  bool stop_ = false;
  // The current job.
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  std::vector<std::pair<int64_t, int64_t>> ranges_;  // [worker index] -> range (may be empty)
};

// The default thread count: hardware concurrency, at least 1, at most 8.
int DefaultThreadCount();

}  // namespace engram

#endif  // ENGRAM_MODEL_THREAD_POOL_H_
