#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "model/numerics.h"
#include "model/trace.h"

namespace dsv4 {

namespace {

struct Route {
  std::vector<int32_t> experts;  // [K] in selection order
  std::vector<float> weights;    // [K]
};

Route route(const MoeArgs& a, const float* logits, int32_t token, int64_t pos) {
  const ModelConfig& c = *a.config;
  const int E = c.n_routed_experts, K = c.n_activated_experts;
  std::vector<float> scores(static_cast<size_t>(E));
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
    std::vector<float> sel(scores);
    for (int e = 0; e < E; ++e) sel[size_t(e)] += a.weights->bias[size_t(e)];
    std::vector<int32_t> ids(static_cast<size_t>(E));
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

// One expert on one token: w2( weight · silu(min(g, L)) · clamp(v, ±L) ), added into `acc`.
void expert_forward(const MoeArgs& a, const ExpertWeights& w, const float* xq, float weight, float* acc) {
  const ModelConfig& c = *a.config;
  const int64_t I = c.moe_inter_dim;
  std::vector<float> g(static_cast<size_t>(I)), v(static_cast<size_t>(I)), y(static_cast<size_t>(c.dim));
  kernels::linear(w.w1, xq, 1, g.data(), nullptr);
  kernels::linear(w.w3, xq, 1, v.data(), nullptr);
  const float L = c.swiglu_limit;
  for (int64_t i = 0; i < I; ++i) {
    float gi = g[size_t(i)], vi = v[size_t(i)];
    if (L > 0) {
      vi = std::clamp(vi, -L, L);
      gi = std::min(gi, L);
    }
    g[size_t(i)] = kernels::silu(gi) * vi * weight;
  }
  std::vector<float> hq = gemm_input(g.data(), 1, I, a.numerics);
  kernels::linear(w.w2, hq.data(), 1, y.data(), nullptr);
  for (int64_t d = 0; d < c.dim; ++d) acc[d] += y[size_t(d)];
}

}  // namespace

void moe_forward(const MoeArgs& a) {
  const ModelConfig& c = *a.config;
  const int E = c.n_routed_experts;
  std::vector<float> logits(size_t(a.n * E));
  kernels::linear(a.weights->gate, a.x, a.n, logits.data(), nullptr);
  std::vector<float> xq = gemm_input(a.x, a.n, c.dim, a.numerics);
  std::vector<float> acc(static_cast<size_t>(c.dim));
  for (int64_t i = 0; i < a.n; ++i) {
    Route r = route(a, logits.data() + i * E, a.tokens[i], a.positions[i]);
    // Routed outputs summed in increasing expert id, as the reference does; then the shared one.
    std::vector<int> order(r.experts.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int x, int y) { return r.experts[size_t(x)] < r.experts[size_t(y)]; });
    std::fill(acc.begin(), acc.end(), 0.0f);
    const float* xr = xq.data() + i * c.dim;
    for (int k : order)
      expert_forward(a, a.weights->experts[size_t(r.experts[size_t(k)])], xr, r.weights[size_t(k)], acc.data());
    expert_forward(a, a.weights->shared, xr, 1.0f, acc.data());
    std::copy(acc.begin(), acc.end(), a.out + i * c.dim);
  }
}

}  // namespace dsv4
