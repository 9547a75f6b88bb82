#include "core/arena.h"

#include <algorithm>

#include "core/error.h"

namespace dsv4 {

namespace {
constexpr size_t kAlign = 64;
}

void Arena::AlignedDelete::operator()(std::byte* p) const { ::operator delete[](p, std::align_val_t(kAlign)); }

Arena& Arena::local() {
  thread_local Arena arena;
  return arena;
}

size_t Arena::reserved() const {
  size_t n = 0;
  for (const Block& b : blocks_) n += b.size;
  return n;
}

void* Arena::allocate(size_t bytes) {
  DSV4_CHECK(depth > 0, "scratch memory requested outside an ArenaScope");
  bytes = std::max<size_t>(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  for (; cur_ < blocks_.size(); ++cur_, used_ = 0) {
    if (used_ + bytes <= blocks_[cur_].size) {
      std::byte* p = blocks_[cur_].mem.get() + used_;
      used_ += bytes;
      return p;
    }
  }
  // No block with room: a new one at least as large as all the others (the arena doubles).
  Block b;
  b.size = std::max({bytes, reserved(), size_t(1) << 20});
  b.mem.reset(static_cast<std::byte*>(::operator new[](b.size, std::align_val_t(kAlign))));
  blocks_.push_back(std::move(b));
  cur_ = blocks_.size() - 1;
  used_ = bytes;
  return blocks_.back().mem.get();
}

}  // namespace dsv4
