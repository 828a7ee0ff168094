#include "model/thread_pool.h"

#include <algorithm>

namespace engram {

ThreadPool::ThreadPool(int threads) {
  int workers = std::max(threads, 1) - 1;
  ranges_.resize(workers);
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::ParallelFor(int64_t n, int64_t min_chunk,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int64_t parts =
      std::min<int64_t>(threads(), std::max<int64_t>(1, n / std::max<int64_t>(min_chunk, 1)));
  if (parts <= 1) {
    fn(0, n);
    return;
  }
  // Range p = [n*p/parts, n*(p+1)/parts); the caller takes range 0.
  auto bound = [&](int64_t p) { return n * p / parts; };
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    pending_ = 0;
    for (size_t w = 0; w < ranges_.size(); ++w) {
      int64_t p = static_cast<int64_t>(w) + 1;
      ranges_[w] = p < parts ? std::make_pair(bound(p), bound(p + 1)) : std::make_pair(n, n);
      if (p < parts) ++pending_;
    }
    ++generation_;
  }
  work_cv_.notify_all();
  fn(0, bound(1));
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
  fn_ = nullptr;
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    std::pair<int64_t, int64_t> range;
    const std::function<void(int64_t, int64_t)>* fn;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      range = ranges_[index];
      fn = fn_;
    }
    if (range.first >= range.second) continue;
    (*fn)(range.first, range.second);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --pending_;
    }
    done_cv_.notify_one();
  }
}

int DefaultThreadCount() {
  unsigned hw = std::thread::hardware_concurrency();
  return std::clamp<int>(hw == 0 ? 1 : static_cast<int>(hw), 1, 8);
}

}  // namespace engram
