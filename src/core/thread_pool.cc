#include "core/thread_pool.h"

#include <cstdlib>

#include "core/error.h"

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
  for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
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

void ThreadPool::worker(int index) {
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
    const int64_t b = int64_t(index) * chunk_, e = b + chunk_ < n_ ? b + chunk_ : n_;
    if (b < e) (*fn_)(b, e);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  bool expected = false;
  if (n_threads_ == 1 || n <= grain || !busy_.compare_exchange_strong(expected, true)) {
    fn(0, n);  // one thread, too little work, or nested: serial on the caller
    return;
  }
  const int64_t units = (n + grain - 1) / grain;
  const int64_t per = (units + n_threads_ - 1) / n_threads_;
  fn_ = &fn;
  n_ = n;
  chunk_ = per * grain;
  pending_.store(n_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_acq_rel);
  generation_.notify_all();
  fn(0, chunk_ < n ? chunk_ : n);
  while (pending_.load(std::memory_order_acquire) != 0) cpu_relax();
  fn_ = nullptr;
  busy_.store(false, std::memory_order_release);
}

}  // namespace dsv4
