#include "io/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/memory_info.h"

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

// The little-endian header length in a file's first 8 bytes.
uint64_t header_length(const uint8_t* b) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | b[i];
  return n;
}

}  // namespace

std::vector<TensorView> parse_safetensors(const uint8_t* bytes, size_t size, const std::string* origin) {
  const std::string file = origin ? *origin : std::string("<memory>");
  if (size < 8) throw Error(cat(file, ": truncated safetensors file (", size, " bytes, no header length)"));
  const uint64_t header_len = header_length(bytes);
  if (header_len > kMaxHeaderBytes || header_len > size - 8)
    throw Error(cat(file, ": header length ", header_len, " exceeds the file size ", size,
                    " (truncated or not a safetensors file)"));
  json header;
  // nlohmann keeps the last of two equal keys; a header naming a tensor twice is ambiguous about
  // which bytes the tensor has, so the parse callback refuses it instead of picking one.
  std::set<std::string> top_keys;
  auto no_duplicates = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && !top_keys.insert(parsed.get<std::string>()).second)
      throw Error(cat(file, ": tensor '", parsed.get<std::string>(), "' appears twice in the safetensors header"));
    return true;
  };
  try {
    header = json::parse(bytes + 8, bytes + 8 + header_len, no_duplicates);
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
    // Compared by division: numel × element size can wrap around 2^64 for a hostile shape, and a
    // wrapped product that happens to equal the span would give a view far larger than its bytes.
    const uint64_t numel = checked_numel(t.shape, where), esize = dtype_size(t.dtype), span = end - begin;
    if (span % esize != 0 || numel != span / esize)
      throw Error(cat(where, ": ", dtype_name(t.dtype), " ", t.shape_str(), " has ", numel, " elements of ", esize,
                      " bytes, data_offsets span ", span, " bytes"));
    t.data = data + begin;
    t.file_offset = uint64_t(t.data - bytes);
    t.nbytes = size_t(end - begin);
    out.push_back(std::move(t));
  }
  // Overlapping tensors would alias each other's weights: refuse. Each tensor is compared with the
  // one reaching furthest so far, not just its predecessor: a tensor can overlap an earlier, longer
  // one with an empty or short tensor sorted between them.
  std::vector<const TensorView*> sorted;
  for (const auto& t : out)
    if (t.nbytes > 0) sorted.push_back(&t);  // empty tensors own no bytes
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->data < b->data; });
  const TensorView* reach = nullptr;
  for (const TensorView* t : sorted) {
    if (reach && reach->data + reach->nbytes > t->data)
      throw Error(cat(file, ": tensors '", reach->name, "' and '", t->name, "' overlap in the data section"));
    if (!reach || t->data + t->nbytes > reach->data + reach->nbytes) reach = t;
  }
  return out;
}

namespace {

// Reads the header and the kept tensors' bytes of a partially loaded file (adjacent tensors as
// one range); returns its views.
std::vector<TensorView> load_kept(MappedFile* f, const TensorDirectory::Keep& keep, bool populate) {
  if (f->size() < 8) return parse_safetensors(f->data(), f->size(), &f->path());  // the parse says why
  f->load(0, 8);
  const uint64_t header_len = header_length(f->data());
  f->load(8, size_t(std::min<uint64_t>(header_len, f->size() - 8)));
  std::vector<TensorView> views = parse_safetensors(f->data(), f->size(), &f->path());
  std::vector<std::pair<size_t, size_t>> ranges;
  for (const TensorView& t : views)
    if (keep(t.name) && t.nbytes) ranges.emplace_back(size_t(t.data - f->data()), size_t(t.data - f->data()) + t.nbytes);
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 0; i < ranges.size();) {
    size_t j = i + 1, end = ranges[i].second;
    while (j < ranges.size() && ranges[j].first <= end + 4096) end = std::max(end, ranges[j++].second);
    if (populate || f->copied()) f->load(ranges[i].first, end - ranges[i].first);
    i = j;
  }
  f->seal();
  return views;
}

// Bytes to reserve past a copied file's end for align_tensors: up to 63 per tensor, and a header
// entry takes more than 32 bytes. 0 when the header length is unreadable (the parse says why).
size_t alignment_slack(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint8_t b[8];
  if (!in.read(reinterpret_cast<char*>(b), 8)) return 0;
  return size_t(std::min<uint64_t>(header_length(b), uint64_t(1) << 30) / 32 + 1) * 64;
}

// Moves a copied file's tensors to 64-byte boundaries (in order, each at most 63 bytes plus the
// shifts before it further on) and points their views there. The safetensors format packs
// tensors back to back after a header of any length, so most start mid cache line, and every
// 64-byte load of a kernel then straddles two lines: the head's product read 35–40 % slower.
void align_tensors(MappedFile* f, std::vector<TensorView>* views) {
  std::vector<TensorView*> order;
  for (TensorView& t : *views)
    if (t.nbytes > 0) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorView* a, const TensorView* b) { return a->data < b->data; });
  std::vector<size_t> to(order.size());
  size_t end = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    to[i] = (std::max<size_t>(order[i]->file_offset, end) + 63) / 64 * 64;
    end = to[i] + order[i]->nbytes;
  }
  if (end > f->extent()) return;  // no room (cannot happen with alignment_slack): left as stored
  uint8_t* base = const_cast<uint8_t*>(f->data());
  f->set_writable(true);
  for (size_t i = order.size(); i-- > 0;)  // last first: each moves up, past its own source only
    if (to[i] != order[i]->file_offset) std::memmove(base + to[i], base + order[i]->file_offset, order[i]->nbytes);
  f->set_writable(false);
  for (size_t i = 0; i < order.size(); ++i) order[i]->data = base + to[i];
}

// The bytes of the tensors `keep` names in file `path` (headers only are read).
size_t kept_bytes(const std::string& path, const TensorDirectory::Keep& keep) {
  MappedFile probe(path, false, MappedFile::Partial{});
  if (probe.size() < 8) return 0;
  const uint64_t header_len = header_length(probe.data());
  if (header_len > probe.size() - 8) return 0;  // add_file reports it
  size_t n = 0;
  for (const TensorView& t : parse_safetensors(probe.data(), probe.size(), &probe.path()))
    if (keep(t.name)) n += t.nbytes;
  return n;
}

}  // namespace

void TensorDirectory::add_file(const std::string& path, const std::map<std::string, std::string>* expected, bool copy,
                               bool populate, const Keep& keep) {
  std::vector<TensorView> views;
  if (keep) {
    files_.push_back(std::make_unique<MappedFile>(path, copy, MappedFile::Partial{}));
    views = load_kept(files_.back().get(), keep, populate);
  } else {
    files_.push_back(std::make_unique<MappedFile>(path, copy, populate, copy ? alignment_slack(path) : 0));
    views = parse_safetensors(files_.back()->data(), files_.back()->size(), &files_.back()->path());
    if (files_.back()->copied()) align_tensors(files_.back().get(), &views);
  }
  for (TensorView& t : views) {
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

namespace {

// The files of a checkpoint path, and the index's tensor → shard map when it has one.
struct Listing {
  std::vector<std::string> files;
  std::map<std::string, std::string> weight_map;
  bool indexed = false;
  std::string index_path;
};

Listing list_checkpoint(const std::string& path) {
  Listing out;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(cat("checkpoint path ", path, " does not exist"));
  if (!fs::is_directory(path, ec)) {
    out.files.push_back(path);
    return out;
  }
  const fs::path index_path = fs::path(path) / "model.safetensors.index.json";
  if (fs::exists(index_path, ec)) {
    out.indexed = true;
    out.index_path = index_path.string();
    json index;
    try {
      index = json::parse(read_text_file(index_path.string()));
    } catch (const json::exception& e) {
      throw Error(cat(index_path.string(), ": not valid JSON: ", e.what()));
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      throw Error(cat(index_path.string(), ": missing the \"weight_map\" object"));
    std::set<std::string> shards;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) throw Error(cat(index_path.string(), ": weight_map entry '", it.key(), "' is not a file name"));
      std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard.find("..") != std::string::npos)
        throw Error(cat(index_path.string(), ": shard name '", shard, "' must be a plain file name"));
      out.weight_map[it.key()] = shard;
      shards.insert(shard);
    }
    for (const std::string& shard : shards) {
      fs::path p = fs::path(path) / shard;
      if (!fs::exists(p, ec)) throw Error(cat(index_path.string(), " names shard ", shard, ", which is missing"));
      out.files.push_back(p.string());
    }
    return out;
  }
  // The error_code form: an unreadable directory is input trouble (Error), not filesystem_error.
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".safetensors") out.files.push_back(it->path().string());
  if (ec) throw Error(cat("cannot list ", path, ": ", ec.message()));
  if (out.files.size() != 1)
    throw Error(cat(path, ": expected model.safetensors.index.json or exactly one .safetensors file, found ",
                    out.files.size(), " .safetensors files"));
  return out;
}

}  // namespace

std::unique_ptr<TensorDirectory> TensorDirectory::open(const std::string& path, Residency residency, const Keep& keep) {
  const Listing listing = list_checkpoint(path);
  size_t bytes = 0;
  for (const std::string& f : listing.files) {
    std::error_code ec;
    const auto n = fs::file_size(f, ec);
    if (!ec) bytes += size_t(n);
  }
  // A process that keeps part of the checkpoint (expert parallelism) needs room for that part.
  if (keep) {
    bytes = 0;
    for (const std::string& f : listing.files) bytes += kept_bytes(f, keep);
  }
  // Room is left for activations, KV state and the rest of the system. "RAM" is what this
  // process may use: inside a memory cgroup a copy the machine could hold is OOM-killed.
  const size_t ram = size_t(available_memory());
  const bool fits = ram == 0 || double(bytes) < 0.85 * double(ram);
  const bool copy = residency == Residency::kCopy && fits;
  const bool populate = fits && residency != Residency::kStream;  // streaming: copied or read on demand
  if (!fits && residency != Residency::kStream) {
    std::fprintf(stderr,
                 "dsv4: warning: the checkpoint (%.1f GB) does not fit in memory (%.1f GB): weights stay "
                 "memory-mapped and decoding will be bound by disk reads\n",
                 double(bytes) / 1e9, double(ram) / 1e9);
  }
  auto dir = std::unique_ptr<TensorDirectory>(new TensorDirectory());
  for (const std::string& f : listing.files) dir->add_file(f, listing.indexed ? &listing.weight_map : nullptr, copy, populate, keep);
  if (listing.indexed)
    for (const auto& [name, shard] : listing.weight_map)
      if (!dir->tensors_.count(name))
        throw Error(cat((fs::path(path) / shard).string(), ": tensor '", name, "' is listed for this shard in ",
                        listing.index_path, " but not stored there"));
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

bool TensorDirectory::copied() const {
  return !files_.empty() && files_.front()->copied();
}

size_t TensorDirectory::total_bytes() const {
  size_t n = 0;
  for (const auto& [_, t] : tensors_) n += t.nbytes;
  return n;
}

}  // namespace dsv4
