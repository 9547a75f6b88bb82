#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "core/error.h"

namespace dsv4 {

namespace {

constexpr size_t kHugePage = size_t(2) << 20;

// Reads fd[0, size) into dst with a few threads: first touch of fresh pages (the kernel zeroes
// them) is the bottleneck, and it scales with cores. Returns an errno-style message or "".
std::string read_all(int fd, uint8_t* dst, size_t size, size_t begin = 0) {
  constexpr size_t kChunk = size_t(64) << 20;
  std::atomic<size_t> next{begin};
  std::atomic<bool> failed{false};
  std::string error;
  std::atomic_flag error_set = ATOMIC_FLAG_INIT;
  auto work = [&] {
    for (size_t off; !failed && (off = next.fetch_add(kChunk)) < size;) {
      const size_t end = std::min(size, off + kChunk);
      for (size_t at = off; at < end;) {
        const ssize_t got = ::pread(fd, dst + at, end - at, off_t(at));
        if (got > 0) {
          at += size_t(got);
          continue;
        }
        if (got < 0 && errno == EINTR) continue;
        if (!error_set.test_and_set()) error = got == 0 ? "file shrank while being read" : std::strerror(errno);
        failed = true;
        break;
      }
      // The chunk's page cache is a second copy now: handing it back keeps memory pressure from
      // evicting the chunks not read yet (a checkpoint near the size of RAM was otherwise read
      // from disk twice: 1.5 GB/s from a warm cache).
      ::posix_fadvise(fd, off_t(off), off_t(end - off), POSIX_FADV_DONTNEED);
    }
  };
  const unsigned n = std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
  std::vector<std::thread> threads;
  for (unsigned i = 1; i < n; ++i) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
  return failed ? error : std::string();
}

// Opens `path` for reading; throws Error unless it is a regular file. *size: its length.
int open_regular_file(const std::string& path, size_t* size) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(cat("cannot open ", path, ": ", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(cat("cannot map ", path, ": not a regular file"));
  }
  *size = size_t(st.st_size);
  return fd;
}

// Writable anonymous memory for a copy of `size` bytes, in whole huge pages (*reserved bytes);
// NORESERVE, so untouched pages cost nothing. MAP_FAILED on failure.
void* reserve_copy(size_t size, size_t* reserved) {
  *reserved = (size + kHugePage - 1) / kHugePage * kHugePage;
  void* p = ::mmap(nullptr, *reserved, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p != MAP_FAILED) ::madvise(p, *reserved, MADV_HUGEPAGE);
  return p;
}

}  // namespace

MappedFile::MappedFile(const std::string& path, bool copy, bool populate, size_t slack) : path_(path) {
  const int fd = open_regular_file(path, &size_);
  if (size_ == 0) {
    ::close(fd);
    return;
  }
  void* p = MAP_FAILED;
  if (copy) {
    slack_ = slack;
    p = reserve_copy(size_ + slack_, &reserved_);
    if (p != MAP_FAILED) {
      const std::string err = read_all(fd, static_cast<uint8_t*>(p), size_);
      if (!err.empty()) {
        ::munmap(p, reserved_);
        ::close(fd);
        throw Error(cat("cannot read ", path, ": ", err));
      }
      ::mprotect(p, reserved_, PROT_READ);  // weights are never written
      copied_ = true;
    }
  } else {
    reserved_ = size_;
    p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE | (populate ? MAP_POPULATE : 0), fd, 0);
  }
  if (p == MAP_FAILED) {
    const int err = errno;
    ::close(fd);
    throw Error(cat("cannot map ", path, ": ", std::strerror(err)));
  }
  data_ = static_cast<const uint8_t*>(p);
  ::close(fd);
}

MappedFile::MappedFile(const std::string& path, bool copy, Partial) : path_(path) {
  const int fd = open_regular_file(path, &size_);
  if (size_ == 0) {
    ::close(fd);
    return;
  }
  void* p;
  if (copy) {
    // Untouched pages of an anonymous NORESERVE mapping cost no memory: only what load() reads.
    p = reserve_copy(size_, &reserved_);
  } else {
    reserved_ = size_;
    p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  }
  const int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) throw Error(cat("cannot map ", path, ": ", std::strerror(err)));
  data_ = static_cast<const uint8_t*>(p);
  copied_ = copy;
}

void MappedFile::load(size_t offset, size_t length) {
  if (!data_ || length == 0) return;
  if (offset > size_ || length > size_ - offset) throw Error(cat(path_, ": byte range past the end of the file"));
  if (!copied_) {
    // Pre-fault the mapping's pages of the range (one read per page).
    volatile uint8_t sink = 0;
    for (size_t at = offset; at < offset + length; at += 4096) sink = sink + data_[at];
    sink = sink + data_[offset + length - 1];
    return;
  }
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(cat("cannot open ", path_, ": ", std::strerror(errno)));
  const std::string err = read_all(fd, const_cast<uint8_t*>(data_), offset + length, offset);
  ::close(fd);
  if (!err.empty()) throw Error(cat("cannot read ", path_, ": ", err));
}

void MappedFile::set_writable(bool writable) {
  if (!copied_ || !data_) return;
  // Back to read-only is a safeguard only: its failure leaves the bytes as they are.
  if (::mprotect(const_cast<uint8_t*>(data_), reserved_, writable ? PROT_READ | PROT_WRITE : PROT_READ) != 0 && writable)
    throw Error(cat("cannot make the copy of ", path_, " writable: ", std::strerror(errno)));
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), reserved_);
}

size_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? size_t(pages) * size_t(page) : 0;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(cat("cannot open ", path, ": ", std::strerror(errno)));
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

}  // namespace dsv4
