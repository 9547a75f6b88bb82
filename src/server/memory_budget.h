// The server's memory budget for sequence states: the KV caches of running requests plus the
// prefix cache's snapshots. Without one, `--parallel` sequences that each grow to the model's
// whole context (plus snapshot copies) could take more memory than the machine has, and the
// kernel's OOM killer would end every request at once.
//
// Admission reserves what a request can grow to (prompt + max_tokens, SequenceCost::bytes) when
// it is submitted: a request that can never fit is refused (400), one that does not fit beside
// the requests already admitted waits for nothing and is refused as temporarily full (429).
// Snapshots use what the reservations leave free, evicted as reservations grow.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/memory_info.h"
#include "model/model.h"

namespace dsv4::server {

// What one sequence's Session holds at `tokens` tokens, as an upper bound: the fixed window
// rings, the per-token compressed KV and indexer keys (twice: a growing vector may hold up to
// double its size), the token list and the outputs of one prefill chunk.
class SequenceCost {
 public:
  SequenceCost(const ModelConfig& config, Numerics numerics, int64_t prefill_chunk);
  size_t bytes(int64_t tokens) const;

 private:
  double fixed_ = 0, per_token_ = 0;
};

using dsv4::available_memory;  // core/memory_info.h: MemAvailable capped by the cgroup limit

// The default budget: three quarters of what is left once the model's weights (`model_bytes`)
// are in memory, and never less than an eighth of `available` (a model mapped from disk need
// not be resident).
size_t default_memory_budget(uint64_t available, uint64_t model_bytes);

// Sizes of the *.safetensors files of a checkpoint directory (what loading it makes resident).
uint64_t checkpoint_bytes(const std::string& dir);

}  // namespace dsv4::server
