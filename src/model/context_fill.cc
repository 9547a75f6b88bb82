#include "model/context_fill.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "kernels/quant.h"

namespace dsv4 {

namespace {

// Cheap uniform values in (−2, 2): filling 1M tokens' worth of rows must take seconds.
struct Rng {
  uint64_t x;
  float next() {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return float(int32_t(uint32_t(x >> 32))) * (2.0f / 2147483648.0f);
  }
  void fill(float* v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) v[i] = next();
  }
};

// A row the cache accepts: rounded onto its storage grid first (what the numerics would do).
void random_row(Rng& rng, const KvRows& rows, int64_t rope_dim, float* v) {
  rng.fill(v, rows.dim());
  if (rows.format() == KvFormat::kFp8Nope) kernels::fp8_simulate(v, rows.dim() - rope_dim, 64);
  if (rows.format() == KvFormat::kFp4) kernels::fp4_simulate(v, rows.dim(), 32);
}

// Sized as appending would have left it (KvRows grows by an eighth): the first decode steps do
// not pay for a reallocation a real prefill would have made long before.
void size_rows(KvRows* rows, int64_t n) {
  rows->reserve(n + std::max<int64_t>(n / 8, 16));
  rows->resize(n);
}

void fill_rows(Rng& rng, KvRows* rows, int64_t first, int64_t n, int64_t rope_dim) {
  std::vector<float> v(static_cast<size_t>(rows->dim()));
  for (int64_t j = first; j < first + n; ++j) {
    random_row(rng, *rows, rope_dim, v.data());
    rows->set(j, v.data());
  }
}

// The compressor's pending rows at position pos: pos mod r tokens of the open block and, once a
// block has completed, the previous block (overlapping compressor).
void fill_pending(Rng& rng, CompressorState* st, int ratio, bool overlap, int64_t pos) {
  const size_t open = size_t((pos % ratio) * st->width), full = size_t(ratio * st->width);
  st->cur_kv.resize(open), st->cur_score.resize(open);
  rng.fill(st->cur_kv.data(), int64_t(open)), rng.fill(st->cur_score.data(), int64_t(open));
  st->has_prev = overlap && pos >= ratio;
  if (st->has_prev) {
    st->prev_kv.resize(full), st->prev_score.resize(full);
    rng.fill(st->prev_kv.data(), int64_t(full)), rng.fill(st->prev_score.data(), int64_t(full));
  }
}

}  // namespace

void fill_synthetic_context(const ModelConfig& c, Numerics numerics, SequenceState* s, int64_t pos, uint64_t seed) {
  (void)numerics;  // the rows' formats are already the state's
  DSV4_CHECK(s->pos == 0 && int64_t(s->layers.size()) == c.n_layers, "fill_synthetic_context needs a fresh state");
  DSV4_CHECK(pos >= 0 && pos <= c.max_position_embeddings, "context ", pos, " beyond the model's ",
             c.max_position_embeddings);
  Rng rng{seed * 0x9E3779B97F4A7C15ull + 1};
  for (int l = 0; l < c.n_layers; ++l) {
    LayerState& st = s->layers[size_t(l)];
    const int64_t W = st.window_size;
    for (int64_t p = std::max<int64_t>(0, pos - W); p < pos; ++p) fill_rows(rng, &st.window_kv, p % W, 1, c.rope_head_dim);
    const int ratio = c.compress_ratio(l);
    if (ratio == 0) continue;
    size_rows(&st.compressed_kv, pos / ratio);
    fill_rows(rng, &st.compressed_kv, 0, pos / ratio, c.rope_head_dim);
    fill_pending(rng, &st.compressor, ratio, ratio == 4, pos);
    if (ratio == 4) {
      size_rows(&st.index_keys, pos / 4);
      fill_rows(rng, &st.index_keys, 0, pos / 4, 0);
      fill_pending(rng, &st.index_compressor, 4, true, pos);
    }
  }
  s->pos = pos;
}

}  // namespace dsv4
