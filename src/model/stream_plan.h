// Where a checkpoint's bytes live, decided from the memory this process may use (issue 16):
// copied whole when it fits, else everything but the routed experts copied and the routed
// experts streamed from disk through an expert cache (model/expert_cache.h), else mapped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/mapped_file.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/weights.h"

namespace dsv4 {

class ExpertCache;

struct StreamPlan {
  Residency residency = Residency::kMap;
  size_t cache_bytes = 0;        // kStream: the cache's budget (0: the default, see below)
  bool asked = false;            // the budget was given (--expert-cache-gb): no fallback
  uint64_t available = 0;        // core/memory_info.h: available_memory()
  uint64_t checkpoint_bytes = 0; // the *.safetensors files' sizes
};

// `asked`: the residency the caller wants; `expert_cache_bytes` > 0 asks for streaming.
StreamPlan plan_residency(const std::string& dir, Residency asked, size_t expert_cache_bytes);

// A routed expert's tensors ("...ffn.experts.N....", not the shared experts'): streamed.
bool is_routed_expert_tensor(const std::string& name);

// The default budget: what `available` leaves after the `resident` bytes and a reserve (128 MB
// + 10 %) for the KV state, activations and the rest of the process, at most the routed
// `experts`' bytes; 0 when that is under 1/64 of them (streaming would only thrash).
size_t default_cache_bytes(uint64_t available, uint64_t resident, uint64_t experts);

// Streaming, before binding: copies everything but the routed experts into memory and settles
// the budget — given, or what is left of available memory after the resident part and a
// reserve for the KV state, activations and the rest of the process. When the default budget
// cannot hold one token's experts, falls back to the plain mapping with a warning (returns a
// plan with kMap); a given budget too small is an Error from the cache.
StreamPlan prepare_streaming(TensorDirectory* dir, StreamPlan plan);

// The cache for a prepared kStream plan, after binding.
std::shared_ptr<ExpertCache> start_streaming(const ModelConfig& c, const Weights& w, const TensorDirectory& dir,
                                             const StreamPlan& plan);

}  // namespace dsv4
