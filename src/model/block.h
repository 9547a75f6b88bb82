// One transformer block (spec §4.3), mirroring the reference `Block.forward`:
//   X ← hc_post(attn(attn_norm(hc_pre(X))), X);  X ← hc_post(moe(ffn_norm(hc_pre(X))), X)
// over hc_mult residual streams per token.
#pragma once

#include <cstdint>

#include "model/config.h"
#include "model/rope.h"
#include "model/state.h"
#include "model/weights.h"

namespace dsv4 {

class Trace;
class ThreadPool;
class ExpertCache;
class ExpertExecutor;

struct BlockArgs {
  const ModelConfig* config = nullptr;
  const BlockWeights* weights = nullptr;
  const RopeTable* rope = nullptr;
  Numerics numerics = Numerics::kReference;
  float* x = nullptr;               // [n, hc, dim] residual streams, updated in place
  const int32_t* tokens = nullptr;  // [n] (hash routing)
  int64_t n = 0;
  const Segment* segments = nullptr;  // the sequences the rows belong to, with this layer's states
  int n_segments = 0;
  Trace* trace = nullptr;
  const char* trace_tag = "";       // "block{i}" or "mtp"
  ThreadPool* pool = nullptr;       // kernels' threads (null: serial)
  ExpertCache* cache = nullptr;     // routed experts streamed from disk (null: resident)
  ExpertExecutor* executor = nullptr;  // where the routed experts run (null: here)
  const BlockWeights* next = nullptr;  // the block after this one (null: last), to predict its experts
};

void block_forward(const BlockArgs& args);

}  // namespace dsv4
