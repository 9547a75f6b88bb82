// Chunked prefill runs in bounded activation memory: the heap's high-water mark above what it
// held before the prefill — the threads' arenas as they grow, every temporary vector, the
// outputs — is measured for a short and a 6× longer prompt, prefilled in chunks of 256 as the
// engine does, on each golden model in reference numerics. The KV state is reserved up front
// for the whole prompt so its growth (KV, not activations) does not count. Each length runs in
// a forked child with a fresh model and fresh arenas. Counted by replacing global operator new.
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <random>

#include "tests/model/golden_util.h"

namespace {
std::atomic<long> g_live{0}, g_peak{0};

void* counted(std::size_t n, std::size_t align) {
  void* p = align > alignof(std::max_align_t) ? std::aligned_alloc(align, (n + align - 1) / align * align)
                                                : std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  const long now = g_live.fetch_add(long(malloc_usable_size(p)), std::memory_order_relaxed) + long(malloc_usable_size(p));
  long peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  return p;
}
void uncounted(void* p) noexcept {
  if (!p) return;
  g_live.fetch_sub(long(malloc_usable_size(p)), std::memory_order_relaxed);
  std::free(p);
}
}  // namespace

void* operator new(std::size_t n) { return counted(n, 0); }
void* operator new[](std::size_t n) { return counted(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) { return counted(n, std::size_t(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted(n, std::size_t(a)); }
void operator delete(void* p) noexcept { uncounted(p); }
void operator delete[](void* p) noexcept { uncounted(p); }
void operator delete(void* p, std::size_t) noexcept { uncounted(p); }
void operator delete[](void* p, std::size_t) noexcept { uncounted(p); }
void operator delete(void* p, std::align_val_t) noexcept { uncounted(p); }
void operator delete[](void* p, std::align_val_t) noexcept { uncounted(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { uncounted(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { uncounted(p); }

namespace dsv4 {
namespace {

constexpr int64_t kChunk = 256;

// In this (child) process: the activation high-water mark of prefilling `tokens` tokens.
long activation_peak(const std::string& dir, int64_t tokens) {
  auto model = Model::load(dir, Numerics::kReference);
  SequenceState st = model->new_sequence();
  for (LayerState& l : st.layers) l.compressed_kv.reserve(tokens), l.index_keys.reserve(tokens);
  ForwardOutput out;
  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(model->config().vocab_size) - 1);
  std::vector<int32_t> prompt(static_cast<size_t>(tokens));
  for (auto& x : prompt) x = tok(rng);
  const long before = g_live.load();
  g_peak.store(before);
  for (int64_t done = 0; done < tokens; done += kChunk) {
    const int64_t n = std::min(kChunk, tokens - done);
    model->forward(&st, std::span<const int32_t>(prompt).subspan(size_t(done), size_t(n)), LogitsMode::kLast, &out);
  }
  return g_peak.load() - before;
}

long in_child(const std::string& dir, int64_t tokens) {
  int fd[2];
  if (::pipe(fd) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    long v = -1;
    try {
      v = activation_peak(dir, tokens);
    } catch (...) {
    }
    (void)!::write(fd[1], &v, sizeof v);
    ::_exit(0);
  }
  ::close(fd[1]);
  long v = -1;
  if (::read(fd[0], &v, sizeof v) != sizeof v) v = -1;
  ::close(fd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return v;
}

class PrefillMemory : public ::testing::TestWithParam<std::string> {};

TEST_P(PrefillMemory, ActivationPeakDoesNotGrowWithThePrompt) {
  DSV4_REQUIRE_SHARED();
  const std::string dir = test::shared_dir() + "/golden/" + GetParam();
  const long short_peak = in_child(dir, 512), long_peak = in_child(dir, 3072);
  ASSERT_GT(short_peak, 0);
  ASSERT_GT(long_peak, 0);
  std::printf("activation peak: %.2f MB at 512 tokens, %.2f MB at 3072\n", short_peak / 1e6, long_peak / 1e6);
  EXPECT_LE(double(long_peak), 1.25 * double(short_peak));
}

INSTANTIATE_TEST_SUITE_P(Cases, PrefillMemory, ::testing::ValuesIn(test::golden_cases()));

}  // namespace
}  // namespace dsv4
