#include "core/memory_info.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace dsv4 {

namespace fs = std::filesystem;

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

// A field of a cgroup's memory.stat ("name value" lines); 0 when absent.
uint64_t stat_value(const fs::path& p, const std::string& name) {
  std::ifstream in(p);
  std::string key;
  uint64_t v = 0;
  while (in >> key >> v)
    if (key == name) return v;
  return 0;
}

}  // namespace

// Looked up at the path /proc/self/cgroup names (v2 "0::PATH", v1 "N:...memory...:PATH") and at
// the mount's root (a container sees its own cgroup as the root).
uint64_t cgroup_memory_limit(const std::string& root) {
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
    if (const uint64_t v = limit_value(first_word(f)); v > 0) {
      // What the cgroup already uses, less its page cache (reclaimed before anything is killed):
      // a process asking after loading its weights must see them taken.
      const bool v2 = f.filename() == "memory.max";
      const uint64_t usage = limit_value(first_word(f.parent_path() / (v2 ? "memory.current" : "memory.usage_in_bytes")));
      const uint64_t cache = stat_value(f.parent_path() / "memory.stat", v2 ? "file" : "total_cache");
      const uint64_t used = usage > cache ? usage - cache : 0;
      const uint64_t headroom = v > used ? v - used : 1;
      if (best == 0 || headroom < best) best = headroom;
    }
  return best;
}

uint64_t available_memory(const std::string& root) {
  const uint64_t avail = mem_available(root), limit = cgroup_memory_limit(root);
  if (avail == 0) return limit;
  return limit == 0 ? avail : std::min(avail, limit);
}

}  // namespace dsv4
