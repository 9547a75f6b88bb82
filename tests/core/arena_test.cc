// core/arena.h: scoped bump memory hands back everything at the end of a scope, reuses it in the
// next one (no new blocks once grown), aligns to 64 bytes, and refuses use outside a scope.
#include "core/arena.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>

namespace dsv4 {
namespace {

TEST(Arena, ScopesReuseTheSameMemory) {
  const float* first = nullptr;
  size_t reserved = 0;
  for (int pass = 0; pass < 3; ++pass) {
    ArenaScope scope;
    Scratch<float> a(1000), b(3 << 20);  // the second outgrows the first 1 MB block
    a[999] = 1.0f, b[b.size() - 1] = 2.0f;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 64, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u);
    if (pass == 0) {
      first = a.data();
      reserved = Arena::local().reserved();
    } else {
      EXPECT_EQ(a.data(), first) << "pass " << pass;
      EXPECT_EQ(Arena::local().reserved(), reserved) << "pass " << pass;  // grown once, then reused
    }
  }
}

TEST(Arena, NestedScopeReleasesOnlyItsOwn) {
  ArenaScope outer;
  Scratch<int> keep(16, 7);
  const int* inner_at = nullptr;
  {
    ArenaScope inner;
    Scratch<int> tmp(64, 1);
    inner_at = tmp.data();
    EXPECT_NE(inner_at, keep.data());
  }
  Scratch<int> next(64, 2);
  EXPECT_EQ(next.data(), inner_at);  // the inner scope's memory came back
  for (int v : keep) EXPECT_EQ(v, 7);
}

TEST(Arena, EachThreadHasItsOwn) {
  const void* mine = &Arena::local();
  const void* theirs = nullptr;
  std::thread([&] { theirs = &Arena::local(); }).join();
  EXPECT_NE(mine, theirs);
}

TEST(ArenaDeathTest, AllocationOutsideAScopeIsABug) {
  EXPECT_DEATH({ Scratch<float> v(10); }, "outside an ArenaScope");
}

}  // namespace
}  // namespace dsv4
