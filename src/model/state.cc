#include "model/state.h"

#include <algorithm>

#include "core/error.h"

namespace dsv4 {

namespace {
CompressorState make_compressor_state(int ratio, int64_t d) {
  CompressorState s;
  s.width = (ratio == 4 ? 2 : 1) * d;
  return s;
}
}  // namespace

size_t LayerState::bytes() const {
  auto sz = [](const std::vector<float>& v) { return v.capacity() * sizeof(float); };
  return sz(window_kv) + sz(compressed_kv) + sz(index_keys) + sz(compressor.cur_kv) + sz(compressor.cur_score) +
         sz(compressor.prev_kv) + sz(compressor.prev_score) + sz(index_compressor.cur_kv) +
         sz(index_compressor.cur_score) + sz(index_compressor.prev_kv) + sz(index_compressor.prev_score);
}

size_t SequenceState::bytes() const {
  size_t n = 0;
  for (const LayerState& l : layers) n += l.bytes();
  return n;
}

SequenceCheckpoint checkpoint(const SequenceState& s, int64_t span) {
  SequenceCheckpoint cp;
  cp.pos = s.pos;
  cp.span = span;
  for (const LayerState& l : s.layers) {
    SequenceCheckpoint::Layer c;
    const int64_t n = std::min<int64_t>(span, l.window_size);
    for (int64_t p = s.pos; p < s.pos + n; ++p) {
      const float* row = l.window_kv.data() + (p % l.window_size) * l.head_dim;
      c.ring_rows.insert(c.ring_rows.end(), row, row + l.head_dim);
    }
    c.n_compressed = l.n_compressed();
    c.n_index_keys = l.n_index_keys();
    c.compressor = l.compressor;
    c.index_compressor = l.index_compressor;
    cp.layers.push_back(std::move(c));
  }
  return cp;
}

void rollback(SequenceState* s, const SequenceCheckpoint& cp) {
  DSV4_CHECK(s->pos >= cp.pos && s->pos <= cp.pos + cp.span, "rollback beyond the checkpoint's span");
  for (size_t i = 0; i < s->layers.size(); ++i) {
    LayerState& l = s->layers[i];
    const SequenceCheckpoint::Layer& c = cp.layers[i];
    const int64_t n = int64_t(c.ring_rows.size()) / l.head_dim;
    for (int64_t k = 0; k < n; ++k)
      std::copy(c.ring_rows.begin() + k * l.head_dim, c.ring_rows.begin() + (k + 1) * l.head_dim,
                l.window_kv.begin() + ((cp.pos + k) % l.window_size) * l.head_dim);
    l.compressed_kv.resize(size_t(c.n_compressed * l.head_dim));
    l.index_keys.resize(size_t(c.n_index_keys * l.index_head_dim));
    l.compressor = c.compressor;
    l.index_compressor = c.index_compressor;
  }
  s->pos = cp.pos;
}

LayerState make_layer_state(const ModelConfig& c, int layer_id) {
  LayerState s;
  s.head_dim = c.head_dim;
  s.window_size = c.window_size;
  s.window_kv.assign(size_t(c.window_size * c.head_dim), 0.0f);
  const int ratio = c.compress_ratio(layer_id);
  if (ratio != 0) s.compressor = make_compressor_state(ratio, c.head_dim);
  if (ratio == 4) {
    s.index_head_dim = c.index_head_dim;
    s.index_compressor = make_compressor_state(4, c.index_head_dim);
  }
  return s;
}

SequenceState make_sequence_state(const ModelConfig& c) {
  SequenceState s;
  for (int l = 0; l < c.n_layers; ++l) s.layers.push_back(make_layer_state(c, l));
  return s;
}

MtpState make_mtp_state(const ModelConfig& c) {
  MtpState s;
  if (c.n_mtp_layers > 0) s.layer = make_layer_state(c, c.n_layers);
  return s;
}

}  // namespace dsv4
