// Attention of one layer (spec §4.4), mirroring the reference `Attention.forward`.
//
// Low-rank queries with a weightless per-head RMS norm; ONE shared 512-dim KV vector per token
// (K = V) with kv_norm; interleaved RoPE on the last rope dims; keys = the sliding window of the
// last window_size tokens (including the query) plus compressed entries — all complete ones
// (HCA) or the indexer's top-k (CSA); sparse attention with a per-head sink; inverse RoPE on the
// output; grouped low-rank output projection wo_a → wo_b.
//
// Works on a chunk of n consecutive tokens at any start position: every query sees exactly the
// keys single-token decode would give it, so prefill, chunked prefill and decode agree.
#pragma once

#include <cstdint>

#include "model/config.h"
#include "model/rope.h"
#include "model/state.h"
#include "model/weights.h"

namespace dsv4 {

class Trace;

struct AttentionArgs {
  const ModelConfig* config = nullptr;
  const AttentionWeights* weights = nullptr;
  const RopeTable* rope = nullptr;  // the layer's table
  Numerics numerics = Numerics::kReference;
  const float* x = nullptr;  // [n, dim] = attn_norm(hc_pre(X))
  int64_t n = 0;
  int64_t start_pos = 0;
  float* out = nullptr;      // [n, dim]
  Trace* trace = nullptr;
  const char* trace_tag = "";
};

void attention_forward(const AttentionArgs& args, LayerState* state);

}  // namespace dsv4
