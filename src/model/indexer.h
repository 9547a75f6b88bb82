// The lightning indexer of ratio-4 (CSA) layers (spec §4.4.5), mirroring the reference
// `Indexer`: scores every complete compressed entry for each query,
//   score[j] = Σ_h w_h · relu(qI_h · K_j),
// and keeps the top index_topk entries for attention.
#pragma once

#include <cstdint>
#include <span>

#include "core/arena.h"

#include "model/config.h"
#include "model/rope.h"
#include "model/state.h"
#include "model/weights.h"

namespace dsv4 {

class Trace;
class ThreadPool;

struct IndexerArgs {
  const ModelConfig* config = nullptr;
  const IndexerWeights* weights = nullptr;
  const RopeTable* rope = nullptr;
  Numerics numerics = Numerics::kReference;
  const float* qr_in = nullptr;  // [n, q_lora_rank] wq_b input (already act-quantized in reference mode)
  const float* x = nullptr;      // [n, dim] attention input (weights_proj input, never quantized)
  int64_t n = 0;
  const int64_t* positions = nullptr;          // [n] position of each row
  const LayerState* const* states = nullptr;   // [n] each row's sequence state (its indexer keys)
  Trace* trace = nullptr;
  const char* trace_tag = "";    // "block{i}" in trace names
  ThreadPool* pool = nullptr;    // kernels' threads (null: serial)
};

// Per query row, the selected entry ids (descending score, ties to the lower id): row i holds
// min(index_topk, (pos_i+1) div 4) of them.
struct Selection {
  Scratch<int32_t> ids;    // all rows' ids, row after row
  Scratch<int64_t> first;  // [n + 1]: row i is ids[first[i], first[i+1])
  std::span<const int32_t> row(int64_t i) const {
    return {ids.data() + first[size_t(i)], size_t(first[size_t(i + 1)] - first[size_t(i)])};
  }
};
Selection index_select(const IndexerArgs& args);

}  // namespace dsv4
