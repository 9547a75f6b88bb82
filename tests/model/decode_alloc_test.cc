// The decode loop takes no memory from the heap: once a sequence is warm, Model::forward of one
// token reuses the threads' arenas (core/arena.h), the kernels' per-thread buffers and the
// caller's ForwardOutput. The only allocations left are the cached KV rows growing past their
// capacity (amortized doubling, a few times in a long run). Counted by replacing global
// operator new in this test binary.
#include <atomic>
#include <cstdlib>
#include <new>

#include "core/thread_pool.h"
#include "tests/model/golden_util.h"

namespace {
std::atomic<long> g_allocations{0};

void* counted(std::size_t n, std::size_t align) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  void* p = align > alignof(std::max_align_t) ? std::aligned_alloc(align, (n + align - 1) / align * align)
                                                : std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return counted(n, 0); }
void* operator new[](std::size_t n) { return counted(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) { return counted(n, std::size_t(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted(n, std::size_t(a)); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace dsv4 {
namespace {

class DecodeLoop : public ::testing::TestWithParam<std::string> {};

TEST_P(DecodeLoop, AllocatesNothingPerToken) {
  DSV4_REQUIRE_SHARED();
  const std::string dir = test::shared_dir() + "/golden/" + GetParam();
  ThreadPool pool(2);
  auto model = Model::load(dir, Numerics::kReference, &pool, test::test_residency());
  auto expected = TensorDirectory::open(dir + "/expected.safetensors");
  const auto prompt = test::i32s(expected->get("input.prompt_ids"));
  const auto decode = test::i32s(expected->get("input.decode_ids"));
  ASSERT_GE(decode.size(), 56u);

  SequenceState st = model->new_sequence();
  ForwardOutput out;
  model->forward(&st, prompt, LogitsMode::kLast, &out);
  const size_t warm = 16;
  for (size_t k = 0; k < warm; ++k) model->forward(&st, std::span<const int32_t>(&decode[k], 1), LogitsMode::kLast, &out);

  // A step may grow each layer's compressed KV and indexer keys once (at a power-of-two count).
  const long growth_bound = 2L * model->config().n_layers;
  int steps = 0, allocating_steps = 0;
  long total = 0;
  for (size_t k = warm; k < decode.size(); ++k, ++steps) {
    const long before = g_allocations.load();
    model->forward(&st, std::span<const int32_t>(&decode[k], 1), LogitsMode::kLast, &out);
    const long n = g_allocations.load() - before;
    total += n;
    allocating_steps += n > 0;
    EXPECT_LE(n, growth_bound) << "decode step at position " << st.pos - 1;
  }
  // Besides KV growth, a worker thread that claimed no chunk of some kernel during warm-up (a
  // descheduled thread on a loaded machine) sizes its buffers once when it first does: + 3.
  EXPECT_LE(allocating_steps, steps / 10 + 3) << total << " allocations in " << steps << " decode steps";
}

INSTANTIATE_TEST_SUITE_P(Cases, DecodeLoop, ::testing::ValuesIn(test::golden_cases()));

}  // namespace
}  // namespace dsv4
