// Writing safetensors files (logits dumps, generated checkpoints). Tensors are collected in
// memory and written in name order with an 8-byte aligned header, as the Python library does.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace dsv4 {

class SafetensorsWriter {
 public:
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes);
  void add_f32(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& values);
  void add_i32(const std::string& name, std::vector<int64_t> shape, const std::vector<int32_t>& values);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // Throws Error naming the path on I/O failure.
  void write(const std::string& path) const;

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace dsv4
