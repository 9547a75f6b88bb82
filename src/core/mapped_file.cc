#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace dsv4 {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(cat("cannot open ", path, ": ", std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(cat("cannot map ", path, ": not a regular file"));
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    // Files that fit comfortably in RAM are pre-faulted at map time: otherwise every decoded
    // token that reaches a not-yet-touched expert pays page faults (~2 GB/s instead of DRAM speed,
    // machine notes). Larger-than-RAM checkpoints are left to demand paging.
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    const bool populate = pages > 0 && page > 0 && double(size_) < 0.5 * double(pages) * double(page);
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE | (populate ? MAP_POPULATE : 0), fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      throw Error(cat("cannot map ", path, ": ", std::strerror(err)));
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(cat("cannot open ", path, ": ", std::strerror(errno)));
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

}  // namespace dsv4
