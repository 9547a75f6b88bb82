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
  return window_kv.bytes() + compressed_kv.bytes() + index_keys.bytes() + sz(compressor.cur_kv) + sz(compressor.cur_score) +
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
    c.ring_rows.resize(size_t(n * l.head_dim));
    for (int64_t k = 0; k < n; ++k) l.window_kv.get((s.pos + k) % l.window_size, c.ring_rows.data() + k * l.head_dim);
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
    for (int64_t k = 0; k < n; ++k) l.window_kv.set((cp.pos + k) % l.window_size, c.ring_rows.data() + k * l.head_dim);
    l.compressed_kv.resize(c.n_compressed);
    l.index_keys.resize(c.n_index_keys);
    l.compressor = c.compressor;
    l.index_compressor = c.index_compressor;
  }
  s->pos = cp.pos;
}

namespace {
// Reference numerics has already rounded what these rows hold (spec §3.6); plain has not.
KvFormat kv_format(Numerics n) { return n == Numerics::kReference ? KvFormat::kFp8Nope : KvFormat::kF32; }
KvFormat index_key_format(Numerics n) { return n == Numerics::kReference ? KvFormat::kFp4 : KvFormat::kF32; }
}  // namespace

LayerState make_layer_state(const ModelConfig& c, int layer_id, Numerics numerics) {
  LayerState s;
  s.head_dim = c.head_dim;
  s.window_size = c.window_size;
  s.window_kv = KvRows(kv_format(numerics), c.head_dim, c.rope_head_dim);
  s.window_kv.resize(c.window_size);
  s.compressed_kv = KvRows(kv_format(numerics), c.head_dim, c.rope_head_dim);
  const int ratio = c.compress_ratio(layer_id);
  if (ratio != 0) s.compressor = make_compressor_state(ratio, c.head_dim);
  if (ratio == 4) {
    s.index_head_dim = c.index_head_dim;
    s.index_keys = KvRows(index_key_format(numerics), c.index_head_dim);
    s.index_compressor = make_compressor_state(4, c.index_head_dim);
  }
  return s;
}

SequenceState make_sequence_state(const ModelConfig& c, Numerics numerics) {
  SequenceState s;
  for (int l = 0; l < c.n_layers; ++l) s.layers.push_back(make_layer_state(c, l, numerics));
  return s;
}

MtpState make_mtp_state(const ModelConfig& c, Numerics numerics) {
  MtpState s;
  if (c.n_mtp_layers > 0) s.layer = make_layer_state(c, c.n_layers, numerics);
  return s;
}

namespace {
// A compressor's pending F32 rows at their largest: a whole block of (A, Z) rows, and for the
// overlapping one the previous block too (CompressorState).
double pending_bytes(int ratio, int64_t d) {
  const double width = double((ratio == 4 ? 2 : 1) * d), blocks = ratio == 4 ? 2 : 1;
  return blocks * 2 * double(ratio) * width * 4;
}
}  // namespace

double kv_bytes_per_token(const ModelConfig& c, Numerics numerics, double* fixed) {
  const double kv = double(KvRows::row_bytes_for(kv_format(numerics), c.head_dim, c.rope_head_dim));
  const double key = double(KvRows::row_bytes_for(index_key_format(numerics), c.index_head_dim, 0));
  double per_token = 0;
  *fixed = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    const int r = c.compress_ratio(l);
    *fixed += double(c.window_size) * kv;
    if (r) per_token += kv / r, *fixed += pending_bytes(r, c.head_dim);
    if (r == 4) per_token += key / 4, *fixed += pending_bytes(4, c.index_head_dim);
  }
  return per_token;
}

}  // namespace dsv4
