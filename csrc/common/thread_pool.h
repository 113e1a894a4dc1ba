// A fixed pool of worker threads for data-parallel loops. The calling thread
// takes part in every loop, so ThreadPool(1) runs everything inline.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace edgemoe {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // Calls fn(begin, end) on disjoint chunks covering [0, n), at most one
  // chunk per thread and at least `grain` items per chunk, and returns when
  // all are done. Waking a thread costs microseconds, so work too small to
  // pay for it (n <= grain) runs inline on the calling thread. The first
  // exception thrown by a chunk is rethrown here after every chunk finished.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);
  // Which chunk of a parallel_for over n (same grain) starts at `begin`, in
  // [0, size()): lets a loop body index per-thread scratch without locking.
  int chunk_index(int64_t n, int64_t begin, int64_t grain = 1) const {
    const int64_t chunk = chunk_size(n, grain);
    return chunk > 0 ? (int)(begin / chunk) : 0;
  }

 private:
  void worker(int index);
  void run_chunk(int index);
  int64_t chunk_size(int64_t n, int64_t grain) const {
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(n_threads_, n / std::max<int64_t>(1, grain)));
    return (n + chunks - 1) / chunks;
  }

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_chunk_ = 0;
  std::atomic<uint64_t> generation_{0};  // bumped once per job; workers run a job when it changes
  std::atomic<int> pending_{0};           // workers still running the current job
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
};

}  // namespace edgemoe
