// One pool of worker threads for the whole process's kernels (design §4.6).
//
// parallel_for(n, fn) splits [0, n) into contiguous chunks (chunk_bounds) and runs fn(begin,
// end) on them, each participant claiming the next unclaimed chunk, the caller the first.
// Contiguous chunks make false sharing a matter of chunk boundaries only. Workers spin
// briefly on an atomic generation counter before sleeping (a futex wake costs ~22 µs and a
// missed wake a 4 ms scheduler tick on the target machine), so the many short regions of one
// decoded token stay cheap. Regions do not nest: a parallel_for issued from inside a task, or
// while another thread's region runs, executes serially on the calling thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <thread>
#include <vector>

namespace dsv4 {

// A borrowed reference to any callable fn(begin, end): unlike std::function it never copies the
// callable, so starting a region allocates nothing (a decoded token starts hundreds of them).
// Valid while the callable lives, which parallel_for guarantees by returning after the region.
class RangeFn {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, RangeFn>>>
  RangeFn(F&& f)  // NOLINT: implicit, so that lambdas pass directly
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* o, int64_t b, int64_t e) { (*static_cast<std::remove_reference_t<F>*>(o))(b, e); }) {}
  void operator()(int64_t b, int64_t e) const { call_(obj_, b, e); }

 private:
  void* obj_;
  void (*call_)(void*, int64_t, int64_t);
};

class ThreadPool {
 public:
  // n_threads counts the caller: 1 means no workers (everything runs on the caller).
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  static constexpr int kMaxChunks = 256;  // chunks of one region at most

  // fn(begin, end) over chunks of [0, n); chunk boundaries are multiples of `grain` (except the
  // last end). Returns when every chunk has finished. Exceptions from fn terminate.
  void parallel_for(int64_t n, RangeFn fn, int64_t grain = 1);

  // The process default: $DSV4_THREADS threads if set, else std::thread::hardware_concurrency().
  static ThreadPool* shared();

 private:
  void worker();
  void run_chunks(uint64_t generation, bool caller);

  int n_threads_;
  std::vector<std::thread> threads_;
  std::atomic<uint64_t> generation_{0};   // bumped once per region; workers wait on it
  // Chunks are claimed, not assigned: (generation << 40) | (n_chunks << 20) | next chunk. A
  // participant that never gets scheduled claims nothing, so the caller never waits on a
  // descheduled thread (the machines are small and often oversubscribed).
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};          // chunks finished in the current region
  std::atomic<bool> busy_{false};         // a region is in flight (nesting → serial)
  std::atomic<bool> stop_{false};
  const RangeFn* fn_ = nullptr;
  // Chunk c of the current region is [bounds_[c], bounds_[c + 1]); see chunk_bounds.
  int64_t bounds_[kMaxChunks + 1] = {};
};

// Where parallel_for cuts [0, n) for `threads` participants: boundaries at multiples of `grain`
// (the last end n), written to bounds[0..k]; returns k, the chunk count (≤ 256). Up to 16
// grains per thread: up to 4 equal chunks per thread. More: each chunk 1/(2·threads) of what is
// left, down to 1/(16·threads) of the whole (and 4 grains), so the first chunks are long and
// the last short enough that the participants finish together.
int chunk_bounds(int64_t n, int64_t grain, int threads, int64_t* bounds);

// parallel_for on `pool`, or a plain call fn(0, n) when pool is null.
inline void parallel_for(ThreadPool* pool, int64_t n, RangeFn fn, int64_t grain = 1) {
  if (pool && n > grain) {
    pool->parallel_for(n, fn, grain);
  } else if (n > 0) {
    fn(0, n);
  }
}

}  // namespace dsv4
