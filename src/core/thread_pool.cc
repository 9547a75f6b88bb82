#include "core/thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "core/error.h"
#include "core/profile.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace dsv4 {

namespace {
inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}
// ~50 µs of spinning: longer than a futex wake, far shorter than a scheduler tick.
constexpr int kSpinIters = 20000;
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
  for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this] { worker(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (std::thread& t : threads_) t.join();
}

ThreadPool* ThreadPool::shared() {
  static ThreadPool pool([] {
    if (const char* e = std::getenv("DSV4_THREADS"); e && std::atoi(e) > 0) return std::atoi(e);
    unsigned hc = std::thread::hardware_concurrency();
    return hc == 0 ? 1 : int(hc);
  }());
  return &pool;
}

void ThreadPool::worker() {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int spin = 0; g == seen && spin < kSpinIters; ++spin) {
      cpu_relax();
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      generation_.wait(seen, std::memory_order_acquire);
      continue;
    }
    seen = g;
    if (stop_.load()) return;
    run_chunks(g, false);
  }
}

namespace {
constexpr uint64_t kIndexBits = 20, kIndexMask = (uint64_t(1) << kIndexBits) - 1;
}  // namespace

void ThreadPool::run_chunks(uint64_t generation, bool caller) {
  const uint64_t tag = generation & 0xffffff;
  uint64_t c = claim_.load(std::memory_order_acquire);
  for (;;) {
    // The region's chunk count travels in the claim word itself, so a late worker never reads
    // fields that the next region may be rewriting.
    if ((c >> 2 * kIndexBits) != tag || (c & kIndexMask) >= ((c >> kIndexBits) & kIndexMask)) return;
    if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    // A claimed, unfinished chunk keeps the caller waiting, so fn_ and bounds_ are stable.
    const int64_t b = bounds_[c & kIndexMask], e = bounds_[(c & kIndexMask) + 1];
    (*fn_)(b, e);
    if (!caller) PhaseProfile::count(PhaseProfile::worker_chunks, 1);
    done_.fetch_add(1, std::memory_order_acq_rel);
    c = claim_.load(std::memory_order_acquire);
  }
}

int chunk_bounds(int64_t n, int64_t grain, int threads, int64_t* bounds) {
  const int64_t units = (n + grain - 1) / grain, t = std::max(threads, 1);
  int k = 0;
  bounds[0] = 0;
  if (units <= 16 * t) {  // up to 4 equal chunks per thread
    const int64_t n_chunks = std::min<int64_t>(units, 4 * t), per = (units + n_chunks - 1) / n_chunks;
    for (int64_t u = per; u < units; u += per) bounds[++k] = u * grain;
  } else {
    // Memory-bound regions end with the slowest participant: with equal eighths (2 threads) the
    // caller waited up to a whole chunk at each region's end. Shrinking chunks keep that to the
    // last, smallest one.
    // Not below 4 grains: a kernel's chunk start costs it (its read-ahead begins there).
    const int64_t smallest = std::max<int64_t>(4, (units + 16 * t - 1) / (16 * t));
    int64_t u = 0;
    while (u < units && k < ThreadPool::kMaxChunks - 1) {
      const int64_t left = units - u;
      u += std::min(left, std::max(smallest, (left + 2 * t - 1) / (2 * t)));
      if (u < units) bounds[++k] = u * grain;
    }
  }
  bounds[++k] = n;
  return k;
}

void ThreadPool::parallel_for(int64_t n, RangeFn fn, int64_t grain) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  bool expected = false;
  if (n_threads_ == 1 || n <= grain || !busy_.compare_exchange_strong(expected, true)) {
    fn(0, n);  // one thread, too little work, or nested: serial on the caller
    return;
  }
  // Whoever runs claims the next chunk (rows are independent, so which thread computes a row
  // never changes its value).
  const int64_t chunks = chunk_bounds(n, grain, n_threads_, bounds_);
  fn_ = &fn;
  done_.store(0, std::memory_order_relaxed);
  const uint64_t g = generation_.load(std::memory_order_relaxed) + 1;
  claim_.store(((g & 0xffffff) << 2 * kIndexBits) | (uint64_t(chunks) << kIndexBits), std::memory_order_release);
  generation_.store(g, std::memory_order_release);
  generation_.notify_all();
  run_chunks(g, true);
  // Profiled: how long the caller, out of chunks, waits for the others' (late wake-ups, imbalance).
  const bool profiled = PhaseProfile::enabled.load(std::memory_order_relaxed);
  const int64_t wait_from = profiled ? PhaseProfile::now_ns() : 0;
  for (int spin = 0; done_.load(std::memory_order_acquire) != chunks; ++spin) {
    if (spin < kSpinIters) cpu_relax();
    else std::this_thread::yield();
  }
  if (profiled) {
    PhaseProfile::count(PhaseProfile::regions, 1);
    PhaseProfile::count(PhaseProfile::chunks, chunks);
    PhaseProfile::count(PhaseProfile::wait_ns, PhaseProfile::now_ns() - wait_from);
  }
  fn_ = nullptr;
  busy_.store(false, std::memory_order_release);
}

}  // namespace dsv4
