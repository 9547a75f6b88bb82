#include "server/memory_budget.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "model/state.h"

namespace dsv4::server {

namespace fs = std::filesystem;

SequenceCost::SequenceCost(const ModelConfig& c, Numerics numerics, int64_t prefill_chunk) {
  double rings = 0;
  const double kv = kv_bytes_per_token(c, numerics, &rings);
  // The compressors' pending rows (kv + score, the block being filled and the previous one),
  // counted at their largest and twice for vector growth.
  double pending = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    const int r = c.compress_ratio(l);
    if (r == 0) continue;
    const double width = double((r == 4 ? 2 : 1) * c.head_dim);
    pending += 2 * 2 * double(r) * width * sizeof(float) * 2;
    if (r == 4) pending += 2 * 2 * double(r) * double(2 * c.index_head_dim) * sizeof(float) * 2;
  }
  const double mtp_ring = c.n_layers > 0 ? rings / c.n_layers : 0;  // the MTP block's own window
  const double outputs = double(c.vocab_size + prefill_chunk * c.hc_mult * c.dim) * sizeof(float);
  fixed_ = rings + mtp_ring + pending + outputs;
  per_token_ = 2 * kv + sizeof(int32_t);
}

size_t SequenceCost::bytes(int64_t tokens) const {
  return size_t(fixed_ + per_token_ * double(std::max<int64_t>(tokens, 0)));
}

namespace {

// The first whitespace-separated word of a file ("" when it cannot be read).
std::string first_word(const fs::path& p) {
  std::ifstream in(p);
  std::string w;
  in >> w;
  return w;
}

// A cgroup limit in bytes; 0 for "max", absurd values (v1's "unlimited" is ~2^63) or no file.
uint64_t limit_value(const std::string& w) {
  if (w.empty() || w == "max") return 0;
  try {
    const unsigned long long v = std::stoull(w);
    return v >= (1ull << 60) ? 0 : uint64_t(v);
  } catch (const std::exception&) {
    return 0;
  }
}

uint64_t mem_available(const std::string& root) {
  std::ifstream in(root + "/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  while (in >> key) {
    if (key == "MemAvailable:" && in >> kb) return kb * 1024;
    std::getline(in, key);
  }
  return 0;
}

// The tightest limit among this process's memory cgroups (v2 "0::PATH", v1 "N:...memory...:PATH"),
// looked up at the path /proc/self/cgroup names and at the mount's root (a container sees its
// own cgroup as the root).
uint64_t cgroup_limit(const std::string& root) {
  std::vector<fs::path> files = {root + "/sys/fs/cgroup/memory.max",
                                 root + "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
  std::ifstream in(root + "/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (controllers.empty()) files.push_back(fs::path(root + "/sys/fs/cgroup" + path) / "memory.max");
    std::stringstream list(controllers);
    for (std::string c; std::getline(list, c, ',');)
      if (c == "memory") files.push_back(fs::path(root + "/sys/fs/cgroup/memory" + path) / "memory.limit_in_bytes");
  }
  uint64_t best = 0;
  for (const fs::path& f : files)
    if (const uint64_t v = limit_value(first_word(f)); v > 0 && (best == 0 || v < best)) best = v;
  return best;
}

}  // namespace

uint64_t available_memory(const std::string& root) {
  const uint64_t avail = mem_available(root), limit = cgroup_limit(root);
  if (avail == 0) return limit;
  return limit == 0 ? avail : std::min(avail, limit);
}

size_t default_memory_budget(uint64_t available, uint64_t model_bytes) {
  const uint64_t left = available > model_bytes ? available - model_bytes : 0;
  return size_t(std::max(left / 4 * 3, available / 8));
}

uint64_t checkpoint_bytes(const std::string& dir) {
  uint64_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".safetensors") n += e.file_size(ec);
  return n;
}

}  // namespace dsv4::server
