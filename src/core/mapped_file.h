// A whole file's bytes, read-only, for as long as the object lives (RAII). Weights are used in
// place from here in their stored format: nothing is widened at load.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace dsv4 {

// Where checkpoint bytes live while a model runs (a measured choice, issue 5):
//  * kCopy (the CLI default when the checkpoint fits in RAM): read once into anonymous memory
//    on transparent huge pages. Measured on a 20 GB flash bench checkpoint (2 cores, 24 GB):
//    512-token prefill 85–86 tok/s against 62–74 mapped (alternating runs; the expert weights
//    stream through 2 MB pages instead of 4 KB ones), decode no slower, immune to the page-cache
//    reclaim of idle files that these hosts do after about a minute (machine notes), no page
//    faults after load. A private copy may also be rearranged at load (routed experts in 16-row
//    tiles, model/weights.h: ~100 tok/s). It costs load time: 4.5–7.7 s from a warm page cache
//    (each chunk's cache handed back once copied), disk speed from a cold one.
//  * kMap: the file mapping itself (pre-faulted when it fits in RAM): 0.75 s from a warm page
//    cache, the same disk speed from a cold one; the only choice for a checkpoint larger than
//    RAM.
//  * kStream (issue 16; chosen when the checkpoint does not fit but all but its routed experts
//    do, or asked for with an expert-cache budget): everything but the routed experts copied,
//    the routed experts read on demand into an expert cache (model/expert_cache.h).
enum class Residency { kMap, kCopy, kStream };

class MappedFile {
 public:
  // Maps (or, with copy, reads) `path`; throws Error naming the file if it cannot be opened,
  // mapped or fully read. `populate` pre-faults a mapping (files that fit in RAM). A copy has
  // `slack` writable bytes past the file's end (for rearranging it at load: extent()).
  MappedFile(const std::string& path, bool copy = false, bool populate = true, size_t slack = 0);
  // A file whose bytes come in only where asked (expert parallelism: a process reads the tensors
  // it holds and no others): reserves the address range, reads nothing yet. load() then reads
  // (copy) or pre-faults (mapping) a byte range; seal() ends the loading.
  struct Partial {};
  MappedFile(const std::string& path, bool copy, Partial);
  void load(size_t offset, size_t length);
  void seal() { set_writable(false); }
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  size_t extent() const { return copied_ ? size_ + slack_ : size_; }  // addressable bytes from data()
  const std::string& path() const { return path_; }
  bool copied() const { return copied_; }
  // A copy's bytes are read-only except between set_writable(true) and set_writable(false)
  // (load-time rearrangements such as kernels::tile_fp4). No effect on a mapping.
  void set_writable(bool writable);

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t reserved_ = 0;  // bytes of the mapping (copy: rounded up to whole huge pages)
  size_t slack_ = 0;     // a copy's bytes past size_ (zero until written)
  bool copied_ = false;
};

// Physical memory of this machine in bytes (0 if unknown).
size_t physical_memory_bytes();

// Reads a whole (small) text file; throws Error naming the file.
std::string read_text_file(const std::string& path);

}  // namespace dsv4
