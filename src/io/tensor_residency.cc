// TensorDirectory::copy_into_memory: the resident part of a streamed checkpoint (issue 16).
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "io/safetensors.h"

namespace dsv4 {

namespace {

constexpr size_t kHugePage = size_t(2) << 20;

// Anonymous memory on transparent huge pages (first touch is 4× faster than on 4 KB pages).
std::shared_ptr<uint8_t> huge_buffer(size_t bytes) {
  const size_t reserved = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = ::mmap(nullptr, reserved, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw Error(cat("cannot allocate ", bytes, " bytes for the resident weights: ", std::strerror(errno)));
  ::madvise(p, reserved, MADV_HUGEPAGE);
  return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p), [reserved](uint8_t* q) { ::munmap(q, reserved); });
}

// Reads file bytes [offset, offset + n) into dst, then hands their page cache back (it would be
// a second copy, charged to the process's cgroup).
void read_exact(int fd, const std::string& path, uint64_t offset, size_t n, uint8_t* dst) {
  for (size_t got = 0; got < n;) {
    const ssize_t r = ::pread(fd, dst + got, n - got, off_t(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) throw Error(cat("cannot read ", path, ": ", r == 0 ? "file shrank while being read" : std::strerror(errno)));
    got += size_t(r);
  }
  ::posix_fadvise(fd, off_t(offset), off_t(n), POSIX_FADV_DONTNEED);
}

}  // namespace

const MappedFile& TensorDirectory::file_of(const TensorView& t) const {
  for (const auto& f : files_)
    if (t.data >= f->data() && t.data < f->data() + f->extent()) return *f;
  throw Error(cat("tensor '", t.name, "' lies in no mapped file (already copied into memory)"));
}

uint64_t TensorDirectory::offset_of(const TensorView& t) const {
  file_of(t);  // throws if it is in no file
  return t.file_offset;
}

size_t TensorDirectory::copy_into_memory(const std::function<bool(const std::string&)>& resident) {
  std::vector<TensorView*> todo;
  size_t bytes = 0;
  for (auto& [name, t] : tensors_)
    if (resident(name) && t.nbytes > 0) {
      todo.push_back(&t);
      bytes += (t.nbytes + 63) / 64 * 64;  // 64-byte aligned starts, as in a file mapping's tensors
    }
  if (todo.empty()) return 0;
  std::shared_ptr<uint8_t> buf = huge_buffer(bytes);
  size_t at = 0;
  for (const auto& f : files_) {
    int fd = ::open(f->path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(cat("cannot open ", f->path(), ": ", std::strerror(errno)));
    try {
      for (TensorView* t : todo)
        if (t->data >= f->data() && t->data < f->data() + f->extent()) {
          read_exact(fd, f->path(), t->file_offset, t->nbytes, buf.get() + at);
          t->data = buf.get() + at;
          at += (t->nbytes + 63) / 64 * 64;
        }
    } catch (...) {
      ::close(fd);
      throw;
    }
    ::close(fd);
  }
  resident_ = std::move(buf);
  resident_bytes_ = bytes;
  return bytes;
}

}  // namespace dsv4
