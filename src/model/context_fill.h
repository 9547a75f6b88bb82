// A sequence state filled as if `pos` tokens had been consumed, with random rows on each cache's
// storage grid (FP8 with F32 rope dims, FP4 indexer keys in reference numerics; F32 in plain) and
// compressor pending state of the right shape. For benchmarks only: decode and chunk-prefill
// timings at a long context (up to the model's 1M) without running a long prefill first. The
// rows are not what any prompt would produce; the work per step is the same.
#pragma once

#include <cstdint>

#include "model/config.h"
#include "model/state.h"

namespace dsv4 {

// `s` must be fresh (make_sequence_state); afterwards s->pos == pos.
void fill_synthetic_context(const ModelConfig& c, Numerics numerics, SequenceState* s, int64_t pos, uint64_t seed);

}  // namespace dsv4
