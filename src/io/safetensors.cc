#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace dsv4 {

namespace fs = std::filesystem;
using nlohmann::json;

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

// Headers of real checkpoints are well under 10 MB; a larger length is corruption.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

uint64_t checked_numel(const std::vector<int64_t>& shape, const std::string& where) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(cat(where, ": negative dimension"));
    if (d != 0 && n > (uint64_t(1) << 62) / uint64_t(d)) throw Error(cat(where, ": shape too large"));
    n *= uint64_t(d);
  }
  return n;
}

}  // namespace

std::vector<TensorView> parse_safetensors(const uint8_t* bytes, size_t size, const std::string* origin) {
  const std::string file = origin ? *origin : std::string("<memory>");
  if (size < 8) throw Error(cat(file, ": truncated safetensors file (", size, " bytes, no header length)"));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeaderBytes || header_len > size - 8)
    throw Error(cat(file, ": header length ", header_len, " exceeds the file size ", size,
                    " (truncated or not a safetensors file)"));
  json header;
  try {
    header = json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const json::exception& e) {
    throw Error(cat(file, ": safetensors header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) throw Error(cat(file, ": safetensors header is not a JSON object"));

  const uint8_t* data = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  std::vector<TensorView> out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string where = cat(file, ": tensor '", it.key(), "'");
    const json& e = it.value();
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      throw Error(cat(where, ": entry needs dtype, shape and data_offsets"));
    TensorView t;
    t.name = it.key();
    t.file = origin;
    if (!e["dtype"].is_string() || !parse_dtype(e["dtype"].get<std::string>(), &t.dtype))
      throw Error(cat(where, ": unsupported dtype ", e["dtype"].dump()));
    if (!e["shape"].is_array()) throw Error(cat(where, ": shape is not an array"));
    for (const json& d : e["shape"]) {
      if (!d.is_number_integer()) throw Error(cat(where, ": shape has a non-integer entry"));
      t.shape.push_back(d.get<int64_t>());
    }
    const json& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw Error(cat(where, ": data_offsets must be two non-negative integers"));
    uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end) throw Error(cat(where, ": data_offsets begin > end"));
    if (end > data_size)
      throw Error(cat(where, ": data ends at byte ", end, " but the file holds only ", data_size,
                      " data bytes (truncated file?)"));
    uint64_t expect = checked_numel(t.shape, where) * dtype_size(t.dtype);
    if (expect != end - begin)
      throw Error(cat(where, ": ", dtype_name(t.dtype), " ", t.shape_str(), " needs ", expect,
                      " bytes, data_offsets span ", end - begin));
    t.data = data + begin;
    t.nbytes = size_t(end - begin);
    out.push_back(std::move(t));
  }
  // Overlapping tensors would alias each other's weights: refuse.
  std::vector<const TensorView*> sorted;
  for (const auto& t : out) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->data < b->data; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i - 1]->data + sorted[i - 1]->nbytes > sorted[i]->data && sorted[i]->nbytes > 0)
      throw Error(cat(file, ": tensors '", sorted[i - 1]->name, "' and '", sorted[i]->name,
                      "' overlap in the data section"));
  return out;
}

void TensorDirectory::add_file(const std::string& path, const std::map<std::string, std::string>* expected) {
  files_.push_back(std::make_unique<MappedFile>(path));
  const MappedFile& f = *files_.back();
  for (TensorView& t : parse_safetensors(f.data(), f.size(), &f.path())) {
    if (expected) {
      auto it = expected->find(t.name);
      if (it == expected->end() || fs::path(it->second).filename() != fs::path(path).filename())
        throw Error(cat(path, ": tensor '", t.name, "' is not listed for this shard in model.safetensors.index.json"));
    }
    std::string name = t.name;
    if (!tensors_.emplace(name, std::move(t)).second)
      throw Error(cat(path, ": tensor '", name, "' appears in more than one shard"));
  }
}

std::unique_ptr<TensorDirectory> TensorDirectory::open(const std::string& path) {
  auto dir = std::unique_ptr<TensorDirectory>(new TensorDirectory());
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(cat("checkpoint path ", path, " does not exist"));
  if (!fs::is_directory(path, ec)) {
    dir->add_file(path, nullptr);
    return dir;
  }
  const fs::path index_path = fs::path(path) / "model.safetensors.index.json";
  if (fs::exists(index_path, ec)) {
    json index;
    try {
      index = json::parse(read_text_file(index_path.string()));
    } catch (const json::exception& e) {
      throw Error(cat(index_path.string(), ": not valid JSON: ", e.what()));
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      throw Error(cat(index_path.string(), ": missing the \"weight_map\" object"));
    std::map<std::string, std::string> weight_map;
    std::set<std::string> shards;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) throw Error(cat(index_path.string(), ": weight_map entry '", it.key(), "' is not a file name"));
      std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard.find("..") != std::string::npos)
        throw Error(cat(index_path.string(), ": shard name '", shard, "' must be a plain file name"));
      weight_map[it.key()] = shard;
      shards.insert(shard);
    }
    for (const std::string& shard : shards) {
      fs::path p = fs::path(path) / shard;
      if (!fs::exists(p, ec)) throw Error(cat(index_path.string(), " names shard ", shard, ", which is missing"));
      dir->add_file(p.string(), &weight_map);
    }
    for (const auto& [name, shard] : weight_map)
      if (!dir->tensors_.count(name))
        throw Error(cat("tensor '", name, "' is listed in the index for ", shard, " but not stored there"));
    return dir;
  }
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(path))
    if (e.path().extension() == ".safetensors") found.push_back(e.path().string());
  if (found.size() != 1)
    throw Error(cat(path, ": expected model.safetensors.index.json or exactly one .safetensors file, found ",
                    found.size(), " .safetensors files"));
  dir->add_file(found[0], nullptr);
  return dir;
}

const TensorView* TensorDirectory::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const TensorView& TensorDirectory::get(const std::string& name) const {
  const TensorView* t = find(name);
  if (!t) throw Error(cat("checkpoint has no tensor '", name, "'"));
  return *t;
}

size_t TensorDirectory::total_bytes() const {
  size_t n = 0;
  for (const auto& [_, t] : tensors_) n += t.nbytes;
  return n;
}

}  // namespace dsv4
