#include "model/block.h"

#include <algorithm>

#include "core/arena.h"
#include "core/thread_pool.h"
#include "kernels/ops.h"
#include "model/attention.h"
#include "model/hyper_connection.h"
#include "model/moe.h"
#include "model/profile.h"
#include "model/trace.h"

namespace dsv4 {

namespace {

// hc_pre + norm for every token: the sub-layer input [n, dim] and each token's mix.
Scratch<float> pre_norm(const BlockArgs& a, const HcWeights& hc, const Vec& norm, Scratch<HcMix>* mixes) {
  const ModelConfig& c = *a.config;
  const int64_t D = c.dim, stride = c.hc_mult * D;
  PhaseTimer timer(Phase::kMhc);
  PhaseProfile::add_bytes(int64_t(hc.fn.size()) * 4);  // the mix weights, read once for all rows
  Scratch<float> y(size_t(a.n * D));
  mixes->resize(size_t(a.n));
  const int threads = a.pool ? a.pool->size() : 1;
  if (a.n == 1 && threads > 1) {  // one token: its mix products over the threads, in groups of 4 rows
    const int64_t M = c.hc_mix_dim();
    float m[2 * HcMix::kMaxHc + HcMix::kMaxHc * HcMix::kMaxHc];
    parallel_for(a.pool, (M + 3) / 4, [&](int64_t b, int64_t e) {
      hc_mix_products(c, hc, a.x, 4 * b, std::min(M, 4 * e), m);
    });
    hc_pre(c, hc, a.x, y.data(), &(*mixes)[0], m);
    kernels::rms_norm(y.data(), norm.data(), D, c.norm_eps, y.data());
    return y;
  }
  parallel_for(a.pool, a.n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      hc_pre(c, hc, a.x + i * stride, y.data() + i * D, &(*mixes)[size_t(i)]);
      kernels::rms_norm(y.data() + i * D, norm.data(), D, c.norm_eps, y.data() + i * D);
    }
  });
  return y;
}

void post(const BlockArgs& a, const Scratch<HcMix>& mixes, const float* f) {
  const int64_t D = a.config->dim, stride = a.config->hc_mult * D;
  PhaseTimer timer(Phase::kMhc);
  parallel_for(a.pool, a.n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hc_post(*a.config, mixes[size_t(i)], f + i * D, a.x + i * stride);
  });
}

}  // namespace

void block_forward(const BlockArgs& a) {
  const ModelConfig& c = *a.config;
  const BlockWeights& w = *a.weights;
  ArenaScope scope;  // every temporary of the block comes back at its end
  Scratch<HcMix> mixes;
  Scratch<float> f(size_t(a.n * c.dim));

  MoeArgs early;  // a hash-routed layer's expert reads overlap its attention
  early.config = &c, early.weights = &w.ffn, early.hash_routed = c.is_hash_layer(w.layer_id);
  early.tokens = a.tokens, early.n = a.n, early.cache = a.cache, early.layer = w.layer_id;
  moe_prefetch_hashed(early);

  Scratch<float> h = pre_norm(a, w.hc_attn, w.attn_norm, &mixes);
  AttentionArgs aa{&c, &w.attn, a.rope, a.numerics, h.data(), a.n, a.segments, a.n_segments, f.data(), a.trace, a.trace_tag, a.pool};
  attention_forward(aa);
  const Scratch<int64_t> pos = segment_positions(a.segments, a.n_segments, a.n);
  if (a.trace)
    for (int64_t i = 0; i < a.n; ++i) a.trace->f32(cat("attn_out.", a.trace_tag), pos[size_t(i)], f.data() + i * c.dim, c.dim);
  post(a, mixes, f.data());

  h = pre_norm(a, w.hc_ffn, w.ffn_norm, &mixes);
  MoeArgs ma{&c, &w.ffn, c.is_hash_layer(w.layer_id), a.numerics, h.data(), a.tokens, a.n, pos.data(),
             f.data(), a.trace, a.trace_tag, a.pool, w.layer_id, a.cache, a.executor};
  // The next block's FFN input, estimated from the residual as it is now (its own hc mix and
  // norm; only this MoE's and its attention's outputs are missing): its gate on this predicts
  // its experts, read while this layer and its attention compute.
  Scratch<float> next_h;
  if (a.cache && a.next && !c.is_hash_layer(a.next->layer_id) && a.n <= kMaxPredictedTokens) {
    Scratch<HcMix> next_mixes;
    next_h = pre_norm(a, a.next->hc_ffn, a.next->ffn_norm, &next_mixes);
    ma.next_weights = &a.next->ffn, ma.next_x = next_h.data(), ma.next_layer = a.next->layer_id;
  }
  moe_forward(ma);
  post(a, mixes, f.data());
}

}  // namespace dsv4
