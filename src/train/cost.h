// What a training step costs (`dsv4 train --bench`): the model's useful FLOP per token and the
// memory formula. No torch types (the CLI includes this).
#pragma once

#include <cstdint>

#include "model/config.h"
#include "train/trainer.h"

namespace dsv4::train {

struct TrainCost {
  int64_t params = 0;         // every F32 parameter (the I64 hash table aside)
  int64_t trainable = 0;      // those with gradients (not the balancing biases)
  int64_t muon = 0;           // trained by Muon (one momentum buffer each); the rest AdamW (two)
  int64_t active_matmul = 0;  // matrix weights one token multiplies: K of E routed experts, the
                              // head twice with MTP, the MTP block; not the embedding lookup
  double attention_flop = 0;  // per token, forward + backward: q·k and p·v over the keys a
                              // position really uses (window, its compressed entries, the
                              // indexer's picks) plus the indexer's scoring, averaged over a sequence
  double flop_per_token = 0;  // 6 · active_matmul + attention_flop
  double static_bytes = 0;    // 4 · (params + trainable + muon + 2 · adamw): weights, grads, moments
};

TrainCost train_cost(const ModelConfig& c, const TrainOptions& o);

}  // namespace dsv4::train
