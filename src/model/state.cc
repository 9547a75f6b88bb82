#include "model/state.h"

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
