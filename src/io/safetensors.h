// Safetensors checkpoints, memory-mapped and zero-copy.
//
// A checkpoint is either one `*.safetensors` file or a directory with
// `model.safetensors.index.json` naming the shard of every tensor (the Hugging Face layout of the
// official DeepSeek-V4 releases). Every header is validated before anything is used: JSON
// syntax, known dtypes, shapes whose byte size matches the offsets, offsets inside the file and
// not overlapping, and (sharded) agreement between the index and the shards. Any violation
// throws dsv4::Error naming the file and the tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace dsv4 {

// A tensor as stored: dtype, shape and a pointer into the mapping. Non-owning.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into a MappedFile owned by the TensorDirectory
  size_t nbytes = 0;
  uint64_t file_offset = 0;  // where the bytes are in the file (a copy may hold them elsewhere)
  const std::string* file = nullptr;  // path of the shard holding it (for error messages)

  int64_t numel() const;
  std::string shape_str() const;  // "[4, 256]"
};

// Parses one safetensors file image (header + data) into views over `bytes`. Exposed for tests
// and fuzzing; `origin` only labels error messages.
std::vector<TensorView> parse_safetensors(const uint8_t* bytes, size_t size, const std::string* origin);

class TensorDirectory {
 public:
  // `path` is a directory (with model.safetensors.index.json, or exactly one *.safetensors file)
  // or a single .safetensors file. `residency` says where the bytes live (core/mapped_file.h).
  // Files that fit in memory are pre-faulted; otherwise they are mapped whatever was asked, and a
  // warning on stderr says that every token will read from disk.
  // `keep` (when given) names the tensors whose bytes are needed: the others are listed and
  // validated like any tensor, but their bytes are never read or faulted in.
  using Keep = std::function<bool(const std::string& name)>;
  static std::unique_ptr<TensorDirectory> open(const std::string& path, Residency residency = Residency::kMap,
                                               const Keep& keep = {});

  const TensorView* find(const std::string& name) const;
  const TensorView& get(const std::string& name) const;  // throws Error if absent
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  size_t total_bytes() const;
  bool copied() const;  // the bytes live in anonymous memory (kCopy), not a file mapping
  const std::vector<std::unique_ptr<MappedFile>>& files() const { return files_; }

  // Streaming (Residency::kStream, issue 16): copies the tensors `resident` selects out of the
  // (unpopulated) mapping into anonymous memory on huge pages and points their views there; the
  // rest stay in the mapping, to be read on demand (model/expert_cache.h). Returns the bytes
  // copied. Throws Error naming the file if a read fails.
  size_t copy_into_memory(const std::function<bool(const std::string&)>& resident);
  size_t resident_bytes() const { return resident_bytes_; }
  // Where a tensor's bytes are in its file: the MappedFile and the byte offset. (A copied file's
  // tensors start on 64-byte boundaries: see align_tensors in safetensors.cc.)
  const MappedFile& file_of(const TensorView& t) const;
  uint64_t offset_of(const TensorView& t) const;

 private:
  void add_file(const std::string& path, const std::map<std::string, std::string>* expected_names, bool copy,
                bool populate, const Keep& keep);
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, TensorView> tensors_;
  std::shared_ptr<uint8_t> resident_;  // copy_into_memory's buffer (munmap on release)
  size_t resident_bytes_ = 0;
};

}  // namespace dsv4
