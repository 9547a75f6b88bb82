// A whole file's bytes, read-only, for as long as the object lives (RAII). Weights are used in
// place from here in their stored format: nothing is widened at load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace dsv4 {

// Where checkpoint bytes live while a model runs (a measured choice, issue 5):
//  * kMap (the default): the file mapping itself, the only choice when the checkpoint is larger
//    than RAM. On hosts that reclaim idle page cache (machine notes: ~1 minute, even with RAM
//    free) weights could fall back to disk speed between requests; but measured on the 12 GB
//    flash bench checkpoint (2 cores, page cache warm), mapping + pre-faulting loads at
//    3.3–6 GB/s against ~1 GB/s for the copy (fresh pages must be zeroed, and the file's page
//    cache competes for RAM), decode speed is the same, and the mapped pages of a live process
//    were not reclaimed after 2 minutes idle (0 major faults).
//  * kCopy: read once into anonymous memory on transparent huge pages: immune to page-cache
//    reclaim, fewer TLB misses, no page faults after load.
enum class Residency { kMap, kCopy };

class MappedFile {
 public:
  // Maps (or, with copy, reads) `path`; throws Error naming the file if it cannot be opened,
  // mapped or fully read. `populate` pre-faults a mapping (files that fit in RAM).
  MappedFile(const std::string& path, bool copy = false, bool populate = true);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  bool copied() const { return copied_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t reserved_ = 0;  // bytes of the mapping (copy: rounded up to whole huge pages)
  bool copied_ = false;
};

// Physical memory of this machine in bytes (0 if unknown).
size_t physical_memory_bytes();

// Reads a whole (small) text file; throws Error naming the file.
std::string read_text_file(const std::string& path);

}  // namespace dsv4
