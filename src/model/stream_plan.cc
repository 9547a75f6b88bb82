#include "model/stream_plan.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/error.h"
#include "core/memory_info.h"
#include "model/expert_cache.h"

namespace dsv4 {

namespace {

namespace fs = std::filesystem;

uint64_t safetensors_bytes(const std::string& dir) {
  uint64_t n = 0;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return fs::file_size(dir, ec);
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".safetensors") n += e.file_size(ec);
  return n;
}

// Memory kept out of the default budget: the process's own needs (tokenizer, KV state,
// activations, the server's buffers) and the page cache of what it reads besides.
uint64_t reserve_bytes(uint64_t available) { return (uint64_t(128) << 20) + available / 10; }

}  // namespace

size_t default_cache_bytes(uint64_t available, uint64_t resident, uint64_t experts) {
  const uint64_t used = resident + reserve_bytes(available);
  const uint64_t left = std::min(available > used ? available - used : 0, experts);
  return left < experts / 64 ? 0 : size_t(left);  // not even a few tokens' experts: 0
}

bool is_routed_expert_tensor(const std::string& name) { return name.find(".ffn.experts.") != std::string::npos; }

StreamPlan plan_residency(const std::string& dir, Residency asked, size_t expert_cache_bytes) {
  StreamPlan p;
  p.residency = asked;
  p.available = available_memory();
  p.checkpoint_bytes = safetensors_bytes(dir);
  // The same test TensorDirectory::open applies before copying a checkpoint.
  const bool fits = p.available == 0 || double(p.checkpoint_bytes) < 0.85 * double(p.available);
  if (expert_cache_bytes > 0) {
    p.residency = Residency::kStream;
    p.cache_bytes = expert_cache_bytes;
    p.asked = true;
  } else if (asked == Residency::kCopy && !fits) {
    p.residency = Residency::kStream;
  }
  return p;
}

StreamPlan prepare_streaming(TensorDirectory* dir, StreamPlan p) {
  if (p.residency != Residency::kStream) return p;
  uint64_t resident = 0, experts = 0;
  for (const auto& [name, t] : dir->tensors()) (is_routed_expert_tensor(name) ? experts : resident) += t.nbytes;
  if (!p.asked) {
    p.cache_bytes = default_cache_bytes(p.available, resident, experts);
    if (p.cache_bytes == 0) {
      std::fprintf(stderr,
                   "dsv4: warning: the checkpoint (%.1f GB) does not fit in the memory this process may use (%.1f GB), "
                   "not even without its routed experts (%.1f GB resident): weights stay memory-mapped and decoding "
                   "will be bound by disk reads\n",
                   double(p.checkpoint_bytes) / 1e9, double(p.available) / 1e9, double(resident) / 1e9);
      p.residency = Residency::kMap;
      return p;
    }
    std::fprintf(stderr,
                 "dsv4: the checkpoint (%.1f GB) does not fit in the memory this process may use (%.1f GB): %.1f GB "
                 "stay resident, the routed experts (%.1f GB) stream from disk through a %.2f GB expert cache\n",
                 double(p.checkpoint_bytes) / 1e9, double(p.available) / 1e9, double(resident) / 1e9,
                 double(experts) / 1e9, double(p.cache_bytes) / 1e9);
  }
  dir->copy_into_memory([](const std::string& name) { return !is_routed_expert_tensor(name); });
  return p;
}

std::shared_ptr<ExpertCache> start_streaming(const ModelConfig& c, const Weights& w, const TensorDirectory& dir,
                                             const StreamPlan& p) {
  if (p.residency != Residency::kStream) return nullptr;
  // $DSV4_EXPERT_CACHE_POLICY=lfu|lru: for measuring the policies against each other (README).
  const char* env = std::getenv("DSV4_EXPERT_CACHE_POLICY");
  const std::string name = env ? env : "";
  if (!name.empty() && name != "lru" && name != "lfu")
    throw Error(cat("DSV4_EXPERT_CACHE_POLICY must be lru or lfu, not '", name, "'"));
  const CachePolicy policy = name == "lfu" ? CachePolicy::kLfu : name == "lru" ? CachePolicy::kLru : ExpertCache::kDefaultPolicy;
  return std::make_shared<ExpertCache>(c, w, dir, p.cache_bytes, policy);
}

}  // namespace dsv4
