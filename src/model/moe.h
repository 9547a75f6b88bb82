// Mixture of experts (spec §4.5), mirroring the reference `Gate`, `Expert` and `MoE`.
//
// Router: scores sqrt(softplus(b·gate_e)) in F32; hash layers take the experts from
// tid2eid[token], others the top-k of score + bias (bias for selection only); weights are the
// selected unbiased scores renormalised, × route_scale. Experts: SwiGLU with the clamp
// (up ∈ [−L, L], gate ≤ L), routing weight applied before w2; plus one shared expert.
#pragma once

#include <cstdint>

#include "model/config.h"
#include "model/weights.h"

namespace dsv4 {

class Trace;
class ThreadPool;
class ExpertCache;

struct MoeArgs {
  const ModelConfig* config = nullptr;
  const MoeWeights* weights = nullptr;
  bool hash_routed = false;
  Numerics numerics = Numerics::kReference;
  const float* x = nullptr;        // [n, dim] = ffn_norm(hc_pre(X))
  const int32_t* tokens = nullptr; // [n] input ids (hash routing)
  int64_t n = 0;
  const int64_t* positions = nullptr;  // [n] for trace names only
  float* out = nullptr;            // [n, dim]
  Trace* trace = nullptr;
  const char* trace_tag = "";
  ThreadPool* pool = nullptr;  // kernels' threads (null: serial)
  ExpertCache* cache = nullptr;  // routed experts streamed from disk (null: resident weights)
  int layer_id = 0;              // the block's index for the cache (n_layers + m for MTP block m)
};

void moe_forward(const MoeArgs& args);

// Hash-routed layers know their experts from the token ids alone: starts the cache's reads for
// them before the block runs (no-op without a cache or on a score-routed layer).
void moe_prefetch_hashed(const MoeArgs& args);

}  // namespace dsv4
