#include "io/safetensors_writer.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace dsv4 {

void SafetensorsWriter::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                            std::vector<uint8_t> bytes) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  DSV4_CHECK(size_t(n) * dtype_size(dtype) == bytes.size(), "tensor ", name, ": shape and byte count disagree");
  tensors_[name] = Entry{dtype, std::move(shape), std::move(bytes)};
}

void SafetensorsWriter::add_f32(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  add(name, DType::F32, std::move(shape), std::move(b));
}

void SafetensorsWriter::add_i32(const std::string& name, std::vector<int64_t> shape, const std::vector<int32_t>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  add(name, DType::I32, std::move(shape), std::move(b));
}

void SafetensorsWriter::write(const std::string& path) const {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata_.empty()) header["__metadata__"] = metadata_;
  uint64_t offset = 0;
  for (const auto& [name, e] : tensors_) {
    header[name] = {{"dtype", std::string(dtype_name(e.dtype))}, {"shape", e.shape},
                    {"data_offsets", {offset, offset + e.bytes.size()}}};
    offset += e.bytes.size();
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8) h += ' ';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(cat("cannot write ", path));
  uint64_t len = h.size();
  uint8_t le[8];
  for (int i = 0; i < 8; ++i) le[i] = uint8_t(len >> (8 * i));
  out.write(reinterpret_cast<const char*>(le), 8);
  out.write(h.data(), std::streamsize(h.size()));
  for (const auto& [name, e] : tensors_) out.write(reinterpret_cast<const char*>(e.bytes.data()), std::streamsize(e.bytes.size()));
  if (!out) throw Error(cat("error while writing ", path));
}

}  // namespace dsv4
