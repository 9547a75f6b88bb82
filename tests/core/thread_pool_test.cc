// ThreadPool: every index of a region runs exactly once, and chunk_bounds' cuts — boundaries
// on grain multiples, few equal chunks for little work, and for much work chunks that shrink
// so that the region's last chunk (what the caller may wait for) is a small share of it.
#include "core/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace dsv4 {
namespace {

TEST(ChunkBounds, CoverTheRangeOnGrainMultiples) {
  int64_t b[ThreadPool::kMaxChunks + 1];
  for (int threads : {1, 2, 3, 16})
    for (int64_t grain : {1, 16})
      for (int64_t n : {1, 2, 17, 100, 1000, 32768, 1 << 20}) {
        SCOPED_TRACE(std::to_string(threads) + " threads, grain " + std::to_string(grain) + ", n " + std::to_string(n));
        const int k = chunk_bounds(n, grain, threads, b);
        ASSERT_GE(k, 1);
        ASSERT_LE(k, ThreadPool::kMaxChunks);
        EXPECT_EQ(b[0], 0);
        EXPECT_EQ(b[k], n);
        for (int c = 0; c < k; ++c) {
          EXPECT_LT(b[c], b[c + 1]);
          if (c > 0) {
            EXPECT_EQ(b[c] % grain, 0);
          }
        }
      }
}

TEST(ChunkBounds, FewGrainsAreEqualChunksManyEndSmall) {
  int64_t b[ThreadPool::kMaxChunks + 1];
  // 2 threads, 30 grains of 16 (a 480-row projection): at most 8 chunks, all equal but the last.
  int k = chunk_bounds(30 * 16, 16, 2, b);
  EXPECT_LE(k, 8);
  for (int c = 0; c + 1 < k; ++c) EXPECT_EQ(b[c + 1] - b[c], b[1] - b[0]);
  // 2 threads, 2048 grains (a decode projection of 32768 rows): the first chunk a quarter, the
  // last at most 1/32 of the whole, and still few chunks.
  const int64_t n = 2048 * 16;
  k = chunk_bounds(n, 16, 2, b);
  EXPECT_EQ(b[1], n / 4);
  EXPECT_LE(b[k] - b[k - 1], n / 32);
  EXPECT_LE(k, 16);
}

TEST(ThreadPool, EveryIndexRunsOnce) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t grain : {1, 16})
      for (int64_t n : {1, 15, 16, 17, 1000, 100000}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.parallel_for(n, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1);
        }, grain);
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << threads << " threads, n " << n << ", index " << i;
      }
  }
}

}  // namespace
}  // namespace dsv4
