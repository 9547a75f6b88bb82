#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/arena.h"
#include "core/error.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "model/numerics.h"
#include "model/trace.h"

namespace dsv4 {

namespace {

struct Route {
  Scratch<int32_t> experts;  // [K] in selection order
  Scratch<float> weights;    // [K]
};

Route route(const MoeArgs& a, const float* logits, int32_t token, int64_t pos) {
  const ModelConfig& c = *a.config;
  const int E = c.n_routed_experts, K = c.n_activated_experts;
  Scratch<float> scores(static_cast<size_t>(E));
  if (c.score_func == ScoreFunc::kSoftmax) {
    float mx = *std::max_element(logits, logits + E), sum = 0;
    for (int e = 0; e < E; ++e) sum += (scores[size_t(e)] = std::exp(logits[e] - mx));
    for (float& s : scores) s /= sum;
  } else {
    for (int e = 0; e < E; ++e)
      scores[size_t(e)] = c.score_func == ScoreFunc::kSigmoid ? kernels::sigmoid(logits[e])
                                                               : std::sqrt(kernels::softplus(logits[e]));
  }
  Route r;
  if (a.hash_routed) {
    if (token < 0 || token >= c.vocab_size) throw Error(cat("token id ", token, " outside the vocabulary"));
    const int32_t* row = a.weights->tid2eid.data() + int64_t(token) * K;
    r.experts.assign(row, row + K);
  } else {
    Scratch<float> sel(scores);
    for (int e = 0; e < E; ++e) sel[size_t(e)] += a.weights->bias[size_t(e)];
    Scratch<int32_t> ids(static_cast<size_t>(E));
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + K, ids.end(), [&](int32_t x, int32_t y) {
      return sel[size_t(x)] > sel[size_t(y)] || (sel[size_t(x)] == sel[size_t(y)] && x < y);
    });
    r.experts.assign(ids.begin(), ids.begin() + K);
    if (a.trace) a.trace->f32(cat("moe.", a.trace_tag, ".scores"), pos, sel.data(), E);
  }
  float sum = 0;
  for (int32_t e : r.experts) sum += scores[size_t(e)];
  for (int32_t e : r.experts) {
    float wgt = scores[size_t(e)];
    if (c.score_func != ScoreFunc::kSoftmax) wgt /= sum;
    r.weights.push_back(wgt * c.route_scale);
  }
  if (a.trace) {
    a.trace->i32(cat("moe.", a.trace_tag, ".experts"), pos, r.experts.data(), K);
    a.trace->f32(cat("moe.", a.trace_tag, ".weights"), pos, r.weights.data(), K);
  }
  return r;
}

// One expert on m gathered tokens: y = w2( weight · silu(min(g, L)) · clamp(v, ±L) ), each row
// added into acc rows `dst`. Rows are independent (batch-invariant kernels), so grouping the
// tokens of one expert reads its weights once per call instead of once per token.
void expert_forward(const MoeArgs& a, const ExpertWeights& w, const float* xq, int64_t m, const float* weight,
                    const int64_t* dst, float* acc) {
  const ModelConfig& c = *a.config;
  const int64_t I = c.moe_inter_dim, D = c.dim;
  Scratch<float> g(size_t(m * I)), v(size_t(m * I)), y(size_t(m * D));
  kernels::linear(w.w1, xq, m, g.data(), a.pool);
  kernels::linear(w.w3, xq, m, v.data(), a.pool);
  const float L = c.swiglu_limit;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t i = 0; i < I; ++i) {
      float gi = g[size_t(r * I + i)], vi = v[size_t(r * I + i)];
      if (L > 0) {
        vi = std::clamp(vi, -L, L);
        gi = std::min(gi, L);
      }
      g[size_t(r * I + i)] = kernels::silu(gi) * vi * weight[r];
    }
  Scratch<float> hq = gemm_input(g.data(), m, I, a.numerics);
  kernels::linear(w.w2, hq.data(), m, y.data(), a.pool);
  for (int64_t r = 0; r < m; ++r) {
    float* out = acc + dst[r] * D;
    for (int64_t d = 0; d < D; ++d) out[d] += y[size_t(r * D + d)];
  }
}

}  // namespace

void moe_forward(const MoeArgs& a) {
  const ModelConfig& c = *a.config;
  const int E = c.n_routed_experts;
  const int64_t D = c.dim;
  Scratch<float> logits(size_t(a.n * E));
  kernels::linear(a.weights->gate, a.x, a.n, logits.data(), a.pool);
  Scratch<float> xq = gemm_input(a.x, a.n, D, a.numerics);
  // Tokens grouped by expert. Experts run in increasing id, so every token still sums its
  // routed outputs in increasing expert id (as the reference), then the shared expert.
  Scratch<Scratch<int64_t>> tok(static_cast<size_t>(E));
  Scratch<Scratch<float>> wgt(static_cast<size_t>(E));
  for (int64_t i = 0; i < a.n; ++i) {
    Route r = route(a, logits.data() + i * E, a.tokens[i], a.positions[i]);
    for (size_t k = 0; k < r.experts.size(); ++k) {
      tok[size_t(r.experts[k])].push_back(i);
      wgt[size_t(r.experts[k])].push_back(r.weights[k]);
    }
  }
  std::fill(a.out, a.out + a.n * D, 0.0f);
  Scratch<float> xg;
  for (int e = 0; e < E; ++e) {
    const Scratch<int64_t>& rows = tok[size_t(e)];
    if (rows.empty()) continue;
    xg.resize(rows.size() * size_t(D));
    for (size_t r = 0; r < rows.size(); ++r)
      std::copy(xq.begin() + rows[r] * D, xq.begin() + (rows[r] + 1) * D, xg.begin() + int64_t(r) * D);
    expert_forward(a, a.weights->experts[size_t(e)], xg.data(), int64_t(rows.size()), wgt[size_t(e)].data(),
                   rows.data(), a.out);
  }
  Scratch<int64_t> all(static_cast<size_t>(a.n));
  std::iota(all.begin(), all.end(), 0);
  Scratch<float> ones(static_cast<size_t>(a.n), 1.0f);
  expert_forward(a, a.weights->shared, xq.data(), a.n, ones.data(), all.data(), a.out);
}

}  // namespace dsv4
