#include "model/indexer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/thread_pool.h"
#include "kernels/hadamard.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "model/trace.h"

namespace dsv4 {

Selection index_select(const IndexerArgs& a) {
  const ModelConfig& c = *a.config;
  const IndexerWeights& w = *a.weights;
  const int heads = c.index_n_heads;
  const int64_t hd = c.index_head_dim;

  // Queries: wq_b(qr), RoPE on the last rope dims, Hadamard, FP4 round trip — per head.
  Scratch<float> q(size_t(a.n * heads * hd));
  kernels::linear(w.wq_b, a.qr_in, a.n, q.data(), a.pool);
  for (int64_t i = 0; i < a.n; ++i)
    for (int h = 0; h < heads; ++h) {
      float* qh = q.data() + (i * heads + h) * hd;
      a.rope->apply(qh, hd, a.positions[i]);
      kernels::hadamard_inplace(qh, hd);
      if (a.numerics == Numerics::kReference) kernels::fp4_simulate(qh, hd, 32);
    }
  // Head weights: weights_proj(x) · index_head_dim^-0.5 · index_n_heads^-0.5.
  Scratch<float> hw(size_t(a.n * heads));
  kernels::linear(w.weights_proj, a.x, a.n, hw.data(), a.pool);
  const float wscale = 1.0f / std::sqrt(float(hd)) / std::sqrt(float(heads));
  for (float& v : hw) v *= wscale;

  // Complete entries only: row i scores min((pos+1) div 4, entries cached) candidates and keeps
  // up to index_topk; the output is laid out before the rows run.
  auto candidates = [&](int64_t i) { return std::min<int64_t>((a.positions[i] + 1) / 4, a.states[i]->n_index_keys()); };
  Selection out;
  out.first.resize(size_t(a.n + 1));
  for (int64_t i = 0; i < a.n; ++i)
    out.first[size_t(i + 1)] = out.first[size_t(i)] + std::min<int64_t>(c.index_topk, candidates(i));
  out.ids.resize(size_t(out.first[size_t(a.n)]));
  // Rows score independently (threads take chunks of them); traced runs stay serial so the
  // trace records rows in order.
  auto score_rows = [&](int64_t b, int64_t e) {
    ArenaScope scope;
    Scratch<float> score, key(static_cast<size_t>(hd));
    Scratch<int32_t> ids;
    for (int64_t i = b; i < e; ++i) {
      const int64_t pos = a.positions[i];
      const int64_t n_cand = candidates(i);
      score.assign(size_t(n_cand), 0.0f);
      for (int64_t j = 0; j < n_cand; ++j) {
        a.states[i]->index_keys.get(j, key.data());  // one FP4 row decoded per `heads` dot products
        float s = 0;
        for (int h = 0; h < heads; ++h) {
          float dotv = kernels::dot(q.data() + (i * heads + h) * hd, key.data(), hd);
          s += hw[size_t(i * heads + h)] * std::max(dotv, 0.0f);
        }
        score[size_t(j)] = s;
      }
      const int64_t k = out.first[size_t(i + 1)] - out.first[size_t(i)];
      ids.resize(size_t(n_cand));
      std::iota(ids.begin(), ids.end(), 0);
      std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t x, int32_t y) {
        return score[size_t(x)] > score[size_t(y)] || (score[size_t(x)] == score[size_t(y)] && x < y);
      });
      std::copy(ids.begin(), ids.begin() + k, out.ids.begin() + out.first[size_t(i)]);
      if (a.trace) {
        a.trace->f32(cat("indexer.", a.trace_tag, ".scores"), pos, score.data(), n_cand);
        a.trace->i32(cat("indexer.", a.trace_tag, ".topk"), pos, ids.data(), k);
      }
    }
  };
  if (a.trace) score_rows(0, a.n);
  else parallel_for(a.pool, a.n, score_rows);
  return out;
}

}  // namespace dsv4
