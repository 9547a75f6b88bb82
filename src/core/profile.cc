#include "core/profile.h"

namespace dsv4 {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::kIndexerScoring: return "indexer scoring";
    case Phase::kSparseAttention: return "sparse attention";
    case Phase::kCompressor: return "compressors";
    case Phase::kEmbed: return "embedding";
    case Phase::kMhc: return "mHC + norms";
    case Phase::kAttnProjection: return "attention projections";
    case Phase::kIndexer: return "indexer projections";
    case Phase::kGate: return "gate";
    case Phase::kSharedExpert: return "shared expert";
    case Phase::kRoutedExperts: return "routed experts";
    case Phase::kHead: return "head";
    case Phase::kOther: return "other";
    case Phase::kCount: break;
  }
  return "?";
}

void PhaseProfile::reset() {
  for (auto& n : ns) n.store(0, std::memory_order_relaxed);
  for (auto& b : bytes) b.store(0, std::memory_order_relaxed);
  for (auto* c : {&kv_bytes, &regions, &wait_ns, &chunks, &worker_chunks, &experts_touched}) c->store(0, std::memory_order_relaxed);
  current.store(-1, std::memory_order_relaxed);
  mark_ns.store(now_ns(), std::memory_order_relaxed);
}

}  // namespace dsv4
