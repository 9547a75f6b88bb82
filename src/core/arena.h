// Per-thread bump memory for the temporaries of a forward pass.
//
// Model code builds its activations in `Scratch<T>` vectors: their memory comes from the calling
// thread's Arena and is handed back wholesale when the enclosing ArenaScope ends (a block, the
// head, one chunk of a parallel region). The arena keeps its blocks, so once the first forward
// of a given shape has grown it, the next ones — every decode step — take nothing from the heap.
// A Scratch allocation outside any scope is a bug (its memory would never come back): checked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace dsv4 {

class Arena {
 public:
  struct Mark {
    size_t block = 0, used = 0;
  };
  static Arena& local();  // this thread's arena

  void* allocate(size_t bytes);  // 64-byte aligned; only inside an ArenaScope
  Mark mark() const { return {cur_, used_}; }
  void release(Mark m) { cur_ = m.block, used_ = m.used; }
  size_t reserved() const;  // bytes held from the heap
  int depth = 0;            // open scopes on this thread

 private:
  struct AlignedDelete {
    void operator()(std::byte* p) const;
  };
  struct Block {
    std::unique_ptr<std::byte[], AlignedDelete> mem;
    size_t size = 0;
  };
  std::vector<Block> blocks_;
  size_t cur_ = 0, used_ = 0;  // position: block index, bytes used in it
};

// Everything allocated from this thread's arena after construction is released on destruction.
class ArenaScope {
 public:
  ArenaScope() : arena_(Arena::local()), mark_(arena_.mark()) { ++arena_.depth; }
  ~ArenaScope() {
    --arena_.depth;
    arena_.release(mark_);
  }
  ArenaScope(const ArenaScope&) = delete;
  ArenaScope& operator=(const ArenaScope&) = delete;

 private:
  Arena& arena_;
  Arena::Mark mark_;
};

template <class T>
struct ArenaAllocator {
  using value_type = T;
  ArenaAllocator() = default;
  template <class U>
  ArenaAllocator(const ArenaAllocator<U>&) {}  // NOLINT: rebinding
  T* allocate(size_t n) { return static_cast<T*>(Arena::local().allocate(n * sizeof(T))); }
  void deallocate(T*, size_t) noexcept {}  // the scope gives it back
  template <class U>
  bool operator==(const ArenaAllocator<U>&) const { return true; }
};

template <class T>
using Scratch = std::vector<T, ArenaAllocator<T>>;

}  // namespace dsv4
