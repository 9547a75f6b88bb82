// Attention of one layer (spec §4.4), mirroring the reference `Attention.forward`.
//
// Low-rank queries with a weightless per-head RMS norm; ONE shared 512-dim KV vector per token
// (K = V) with kv_norm; interleaved RoPE on the last rope dims; keys = the sliding window of the
// last window_size tokens (including the query) plus compressed entries — all complete ones
// (HCA) or the indexer's top-k (CSA); sparse attention with a per-head sink; inverse RoPE on the
// output; grouped low-rank output projection wo_a → wo_b.
//
// Works on chunks of consecutive tokens of one or several sequences (segments) at any start
// position: every query sees exactly the keys single-token decode would give it, so prefill,
// chunked prefill, decode and batched decode agree. Projections run once over all rows.
#pragma once

#include <cstdint>

#include "model/config.h"
#include "model/rope.h"
#include "model/state.h"
#include "model/weights.h"

namespace dsv4 {

class Trace;
class ThreadPool;

struct AttentionArgs {
  const ModelConfig* config = nullptr;
  const AttentionWeights* weights = nullptr;
  const RopeTable* rope = nullptr;  // the layer's table
  Numerics numerics = Numerics::kReference;
  const float* x = nullptr;  // [n, dim] = attn_norm(hc_pre(X)), all segments' rows
  int64_t n = 0;
  const Segment* segments = nullptr;  // which rows belong to which sequence (and its state)
  int n_segments = 0;
  float* out = nullptr;      // [n, dim]
  Trace* trace = nullptr;
  const char* trace_tag = "";
  ThreadPool* pool = nullptr;  // kernels' threads (null: serial)
};

void attention_forward(const AttentionArgs& args);

}  // namespace dsv4
