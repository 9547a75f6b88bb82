// The KV compressor (spec §4.4.4), mirroring the reference `Compressor`: every `ratio` tokens
// are pooled into one compressed entry by a per-channel softmax over learned gate logits.
// Ratio 4 overlaps: entry j pools block j−1 through the first d channels and block j through
// the second d. Used twice: the main compressor (head_dim wide KV entries for attention) and
// the indexer's (index_head_dim wide keys for the lightning indexer).
#pragma once

#include <cstdint>
#include <vector>

#include "core/arena.h"
#include "model/config.h"
#include "model/rope.h"
#include "model/state.h"
#include "model/weights.h"

namespace dsv4 {

class ThreadPool;

enum class CompressorRole {
  kMainKv,     // entry: norm, RoPE at j·r, FP8 round trip of the non-rope dims
  kIndexKey,   // entry: norm, RoPE at j·r, Hadamard, FP4 round trip of all dims
};

struct CompressArgs {
  const ModelConfig* config = nullptr;
  const CompressorWeights* weights = nullptr;
  const RopeTable* rope = nullptr;  // the layer's (compress) table
  CompressorRole role = CompressorRole::kMainKv;
  Numerics numerics = Numerics::kReference;
};

// The per-token projections of all rows of a call: A = Wkv·a and Z = Wgate·a (ape not yet
// added), each [n, coff·d]; a: [n, dim].
struct CompressorProjections {
  Scratch<float> kv, score;
};
CompressorProjections compressor_project(const CompressorWeights& w, const float* a, int64_t n,
                                         ThreadPool* pool = nullptr);

// Consumes one sequence's rows [row0, row0 + n) of `proj` at positions start_pos …; the state
// must hold exactly start_pos % ratio pending tokens. Appends each entry that completes to
// `entries` ([·, d] rows, entry j at row j); entries become visible to a query at t iff
// (j+1)·ratio ≤ t+1.
void compress(const CompressArgs& args, const CompressorProjections& proj, int64_t row0, int64_t n,
              int64_t start_pos, CompressorState* state, KvRows* entries);

}  // namespace dsv4
