// The per-sequence state: everything that persists between forward calls of one sequence.
//
// One LayerState per attention layer (and one for the MTP block): the sliding-window ring of
// KV vectors, the compressed KV entries with the compressor's pending tokens, and (ratio-4
// layers) the indexer's compressed keys with its compressor's pending tokens. A fresh state is
// the reference's fresh-process state (zeros / −∞ compressor state, spec §9.24).
#pragma once

#include <cstdint>
#include <vector>

#include "core/arena.h"
#include "model/config.h"
#include "model/kv_rows.h"

namespace dsv4 {

// Pending (A, Z) rows of a compressor (spec §4.4.4): the tokens of the block being filled and,
// for the overlapping compressor, the previous complete block (its low halves feed the next
// entry). Rows are [coff·d] wide.
struct CompressorState {
  int64_t width = 0;            // coff·d
  std::vector<float> cur_kv;    // [n_cur, width] rows of the incomplete block, in order
  std::vector<float> cur_score;
  std::vector<float> prev_kv;   // [ratio, width] the previous complete block (overlap only)
  std::vector<float> prev_score;
  bool has_prev = false;        // false until one block has completed (entry 0's "previous" is empty)
};

// The cached rows are KvRows: FP8 (rope dims F32) and FP4 in reference numerics, F32 in plain
// (kv_rows.h).
struct LayerState {
  int64_t head_dim = 0;
  int window_size = 0;
  KvRows window_kv;      // [window_size, head_dim]; token p lives in slot p mod window
  KvRows compressed_kv;  // [n_entries, head_dim]; entry j pools tokens [j·r, (j+1)·r)
  CompressorState compressor;
  int64_t index_head_dim = 0;
  KvRows index_keys;     // [n_entries, index_head_dim] (ratio-4 layers)
  CompressorState index_compressor;

  int64_t n_compressed() const { return compressed_kv.size(); }
  int64_t n_index_keys() const { return index_keys.size(); }
  size_t bytes() const;
};

// A run of consecutive rows of a forward call that belong to one sequence: rows
// [row0, row0 + n) are that sequence's tokens at positions start_pos … start_pos + n − 1.
// Several segments in one call are several sequences batched together (their projections
// share one pass over the weights; attention stays within each sequence).
struct Segment {
  LayerState* state = nullptr;  // this layer's state of the sequence
  int64_t start_pos = 0;
  int64_t row0 = 0;
  int64_t n = 0;
};

// The position of every row of a call ([n]), from its segments.
inline Scratch<int64_t> segment_positions(const Segment* segments, int n_segments, int64_t n) {
  Scratch<int64_t> pos(static_cast<size_t>(n));
  for (int s = 0; s < n_segments; ++s)
    for (int64_t i = 0; i < segments[s].n; ++i) pos[size_t(segments[s].row0 + i)] = segments[s].start_pos + i;
  return pos;
}

// Main-model state of one sequence: `pos` tokens have been consumed.
struct SequenceState {
  int64_t pos = 0;
  std::vector<LayerState> layers;  // [n_layers]
  size_t bytes() const;
};

// The MTP block's own state (it runs over its own positions, spec §6).
struct MtpState {
  int64_t pos = 0;
  LayerState layer;
};

// What rolling a SequenceState back to an earlier position needs, taken before a forward of at
// most `span` tokens (speculative verification): the ring slots those tokens will overwrite,
// the entry counts (entries are only appended) and the compressors' small pending state.
struct SequenceCheckpoint {
  struct Layer {
    std::vector<float> ring_rows;  // [min(span, window), head_dim] old contents (decoded), in position order
    int64_t n_compressed = 0, n_index_keys = 0;
    CompressorState compressor, index_compressor;
  };
  int64_t pos = 0;
  int64_t span = 0;
  std::vector<Layer> layers;
};

SequenceCheckpoint checkpoint(const SequenceState& s, int64_t span);
// Restores `s` to exactly the state at the checkpoint (s.pos must be ≤ checkpoint.pos + span).
void rollback(SequenceState* s, const SequenceCheckpoint& cp);

LayerState make_layer_state(const ModelConfig& c, int layer_id, Numerics numerics);
SequenceState make_sequence_state(const ModelConfig& c, Numerics numerics);
MtpState make_mtp_state(const ModelConfig& c, Numerics numerics);

// Bytes of cached KV per token of context (compressed entries and indexer keys), as
// make_layer_state lays them out; `fixed`: what does not grow with the context (the window rings
// and the compressors' pending rows at their largest).
double kv_bytes_per_token(const ModelConfig& c, Numerics numerics, double* fixed);

}  // namespace dsv4
