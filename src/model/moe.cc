#include "model/moe.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <atomic>
#include <cmath>
#include <memory>
#include <span>
#include <numeric>
#include <optional>

#include "core/arena.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "model/expert_cache.h"
#include "model/numerics.h"
#include "model/profile.h"
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

}  // namespace

// y = w2( weight · silu(min(g, L)) · clamp(v, ±L) ). Grouping the tokens of one expert reads its
// weights once per call instead of once per token.
void expert_rows(const ModelConfig& c, Numerics numerics, const ExpertWeights& w, const float* xq, int64_t m,
                 const float* weight, float* y, ThreadPool* pool) {
  const int64_t I = c.moe_inter_dim;
  Scratch<float> g(size_t(m * I)), v(size_t(m * I));
  kernels::linear(w.w1, xq, m, g.data(), pool);
  kernels::linear(w.w3, xq, m, v.data(), pool);
  for (int64_t r = 0; r < m; ++r)
    kernels::swiglu(g.data() + r * I, v.data() + r * I, I, c.swiglu_limit, weight[r], g.data() + r * I);
  Scratch<float> hq = gemm_input(g.data(), m, I, numerics);
  kernels::linear(w.w2, hq.data(), m, y, pool);
}

namespace {

// DSV4_FUSED_EXPERTS=0 keeps the expert-at-a-time decode path (for before/after measurements).
bool fused_experts_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("DSV4_FUSED_EXPERTS");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

void expert_forward(const MoeArgs& a, const ExpertWeights& w, const float* xq, int64_t m, const float* weight,
                    float* y, ThreadPool* pool) {
  expert_rows(*a.config, a.numerics, w, xq, m, weight, y, pool);
}

// The tokens routed to each expert, in token order, with their routing weights.
struct Groups {
  Scratch<Scratch<int64_t>> tok;  // [E][m_e] token indices
  Scratch<Scratch<float>> wgt;    // [E][m_e] routing weights
};

Groups group_by_expert(const MoeArgs& a, const float* logits) {
  const int E = a.config->n_routed_experts;
  Groups gr{Scratch<Scratch<int64_t>>(size_t(E)), Scratch<Scratch<float>>(size_t(E))};
  for (int64_t i = 0; i < a.n; ++i) {
    Route r = route(a, logits + i * E, a.tokens[i], a.positions[i]);
    for (size_t k = 0; k < r.experts.size(); ++k) {
      gr.tok[size_t(r.experts[k])].push_back(i);
      gr.wgt[size_t(r.experts[k])].push_back(r.weights[k]);
    }
  }
  return gr;
}

// x rows `rows` of xq gathered into [m, dim].
Scratch<float> gather(const float* xq, const Scratch<int64_t>& rows, int64_t D) {
  Scratch<float> xg(rows.size() * size_t(D));
  for (size_t r = 0; r < rows.size(); ++r) std::copy(xq + rows[r] * D, xq + (rows[r] + 1) * D, xg.begin() + int64_t(r) * D);
  return xg;
}

// A routed expert's weights for the duration of a scope: resident, or pinned in the cache (read
// from disk first if needed).
class ExpertRef {
 public:
  ExpertRef(const MoeArgs& a, int e)
      : cache_(a.cache), layer_(a.layer), e_(e),
        w_(cache_ ? &cache_->acquire(layer_, e) : &a.weights->experts[size_t(e)]) {}
  ~ExpertRef() {
    if (cache_) cache_->release(layer_, e_);
  }
  ExpertRef(const ExpertRef&) = delete;
  ExpertRef& operator=(const ExpertRef&) = delete;
  const ExpertWeights& weights() const { return *w_; }

 private:
  ExpertCache* cache_;
  int layer_, e_;
  const ExpertWeights* w_;
};

// The routed experts with tokens, in increasing id.
Scratch<int32_t> active_experts(const Groups& gr) {
  Scratch<int32_t> ids;
  for (size_t e = 0; e < gr.tok.size(); ++e)
    if (!gr.tok[e].empty()) ids.push_back(int32_t(e));
  return ids;
}

void prefetch_rest(const MoeArgs& a, const Scratch<int32_t>& ids, size_t from) {
  if (a.cache && from < ids.size()) a.cache->prefetch(a.layer, std::span<const int32_t>(ids.data() + from, ids.size() - from));
}

// The next layer's experts as its gate picks them on a.next_x (MoeArgs), read ahead.
void prefetch_predicted(const MoeArgs& a) {
  if (!a.next_weights || !a.next_x) return;
  const int E = a.config->n_routed_experts;
  MoeArgs p = a;
  p.weights = a.next_weights, p.hash_routed = false, p.trace = nullptr, p.layer = a.next_layer;
  Scratch<float> logits(size_t(a.n * E));
  kernels::linear(p.weights->gate, a.next_x, a.n, logits.data(), nullptr);
  const Groups gr = group_by_expert(p, logits.data());
  Scratch<int32_t> ids = active_experts(gr);
  // Surest first (largest routing weight): the guesses the next gate then drops are likely still
  // queued there, where cancel_unchosen takes them back unread.
  Scratch<float> weight(size_t(E), 0.0f);
  for (int32_t e : ids)
    for (float w : gr.wgt[size_t(e)]) weight[size_t(e)] += w;
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t x, int32_t y) { return weight[size_t(x)] > weight[size_t(y)]; });
  a.cache->prefetch(p.layer, std::span<const int32_t>(ids.data(), ids.size()), /*predicted=*/true);
}

// The shared expert on every row [n, dim]. Run first: with streamed experts it overlaps their
// reads; its sum still comes last, as in the reference.
Scratch<float> shared_expert(const MoeArgs& a, const float* xq, ThreadPool* pool) {
  Scratch<float> ones(static_cast<size_t>(a.n), 1.0f), y(size_t(a.n * a.config->dim));
  expert_forward(a, a.weights->shared, xq, a.n, ones.data(), y.data(), pool);
  return y;
}

// Decode and short prompts: experts one after another, each product split over the threads.
void experts_in_turn(const MoeArgs& a, const float* xq, const Groups& gr) {
  const int64_t D = a.config->dim;
  const Scratch<int32_t> ids = active_experts(gr);
  prefetch_rest(a, ids, 0);
  Scratch<float> ys;
  {
    PhaseTimer timer(Phase::kSharedExpert);
    ys = shared_expert(a, xq, a.pool);
  }
  PhaseTimer timer(Phase::kRoutedExperts);
  for (size_t k = 0; k < ids.size(); ++k) {
    const size_t e = size_t(ids[k]);
    const Scratch<int64_t>& rows = gr.tok[e];
    ArenaScope scope;
    prefetch_rest(a, ids, k);  // slots freed by the experts done so far
    const ExpertRef w(a, int(e));
    Scratch<float> xg = gather(xq, rows, D), y(rows.size() * size_t(D));
    expert_forward(a, w.weights(), xg.data(), int64_t(rows.size()), gr.wgt[e].data(), y.data(), a.pool);
    for (size_t r = 0; r < rows.size(); ++r)
      for (int64_t d = 0; d < D; ++d) a.out[rows[r] * D + d] += y[r * size_t(D) + size_t(d)];
  }
  for (int64_t i = 0; i < a.n * D; ++i) a.out[i] += ys[size_t(i)];
}

// One expert on its gathered rows, for experts_fused: g, v [m, I] (g then the SwiGLU, in
// place), hq its quantized copy, y [m, dim].
struct ExpertJob {
  const ExpertWeights* w = nullptr;
  const float* x = nullptr;
  int64_t m = 0;
  const float* weight = nullptr;
  Scratch<float> g, v, hq, y;
};

// out rows [r0, r0 + n) of x·Wᵀ for x's m rows (out: [m, W.out]) on the calling thread.
void linear_piece(const Linear& W, int64_t r0, int64_t n, const float* x, int64_t m, float* out) {
  if (m == 1) return kernels::linear_rows(W, r0, n, x, 1, out + r0, nullptr);
  ArenaScope scope;
  Scratch<float> t(size_t(m * n));
  kernels::linear_rows(W, r0, n, x, m, t.data(), nullptr);
  for (int64_t r = 0; r < m; ++r) std::copy(t.begin() + r * n, t.begin() + (r + 1) * n, out + r * W.out + r0);
}

// The products `mats` (matrix, input, output per job) in one thread-pool region: their output
// rows laid end to end in blocks of 128 (a scale block of FP8, a multiple of FP4's 16-row tiles)
// and split into contiguous pieces, so that each thread streams through several matrices in turn
// and the threads meet once for all of them. Output rows do not depend on the split.
struct Product {
  const Linear* w;
  const float* x;
  int64_t m;
  float* y;
};
void products_in_one_region(const Scratch<Product>& mats, ThreadPool* pool) {
  constexpr int64_t kBlock = 128;
  Scratch<int64_t> first(mats.size() + 1, 0);  // the blocks of product i: [first[i], first[i+1])
  for (size_t i = 0; i < mats.size(); ++i) first[i + 1] = first[i] + (mats[i].w->out + kBlock - 1) / kBlock;
  parallel_for(pool, first.back(), [&](int64_t b, int64_t e) {
    size_t i = size_t(std::upper_bound(first.begin(), first.end(), b) - first.begin()) - 1;
    for (; b < e; ++i) {
      const Product& p = mats[i];
      const int64_t b1 = std::min(e, first[i + 1]);
      const int64_t r0 = (b - first[i]) * kBlock, r1 = std::min(p.w->out, (b1 - first[i]) * kBlock);
      linear_piece(*p.w, r0, r1 - r0, p.x, p.m, p.y);
      b = b1;
    }
  });
}

// Decode and short prompts with resident experts: the layer's routed experts and the shared one
// in two thread-pool regions — w1 and w3 of all, then w2 of all — instead of three per expert
// (each a wake-up and a barrier). The same operations per row as expert_rows, and the sums in
// experts_in_turn's order, so the bits are the same.
void experts_fused(const MoeArgs& a, const float* xq, const Groups& gr) {
  const ModelConfig& c = *a.config;
  const int64_t D = c.dim, I = c.moe_inter_dim;
  const Scratch<int32_t> ids = active_experts(gr);
  Scratch<Scratch<float>> xg;
  for (int32_t e : ids) xg.push_back(gather(xq, gr.tok[size_t(e)], D));
  Scratch<float> ones(static_cast<size_t>(a.n), 1.0f);
  Scratch<ExpertJob> jobs(ids.size() + 1);  // routed in increasing id, the shared one last
  for (size_t k = 0; k <= ids.size(); ++k) {
    ExpertJob& j = jobs[k];
    const bool shared = k == ids.size();
    j.w = shared ? &a.weights->shared : &a.weights->experts[size_t(ids[k])];
    j.x = shared ? xq : xg[k].data();
    j.m = shared ? a.n : int64_t(gr.tok[size_t(ids[k])].size());
    j.weight = shared ? ones.data() : gr.wgt[size_t(ids[k])].data();
    j.g.resize(size_t(j.m * I)), j.v.resize(size_t(j.m * I)), j.y.resize(size_t(j.m * D));
  }
  Scratch<Product> up, down;
  for (ExpertJob& j : jobs) {
    up.push_back({&j.w->w1, j.x, j.m, j.g.data()});
    up.push_back({&j.w->w3, j.x, j.m, j.v.data()});
  }
  products_in_one_region(up, a.pool);
  for (ExpertJob& j : jobs) {
    for (int64_t r = 0; r < j.m; ++r)
      kernels::swiglu(j.g.data() + r * I, j.v.data() + r * I, I, c.swiglu_limit, j.weight[r], j.g.data() + r * I);
    j.hq = gemm_input(j.g.data(), j.m, I, a.numerics);
    down.push_back({&j.w->w2, j.hq.data(), j.m, j.y.data()});
  }
  products_in_one_region(down, a.pool);
  for (size_t k = 0; k < ids.size(); ++k) {
    const Scratch<int64_t>& rows = gr.tok[size_t(ids[k])];
    for (size_t r = 0; r < rows.size(); ++r)
      for (int64_t d = 0; d < D; ++d) a.out[rows[r] * D + d] += jobs[k].y[r * size_t(D) + size_t(d)];
  }
  const Scratch<float>& ys = jobs.back().y;
  for (int64_t i = 0; i < a.n * D; ++i) a.out[i] += ys[size_t(i)];
}

// Expert e's rows of Y: [first[e], first[e+1]); the shared expert's (n rows) are e = E.
Scratch<int64_t> row_layout(const MoeArgs& a, const Groups& gr) {
  const int E = a.config->n_routed_experts;
  Scratch<int64_t> first(size_t(E) + 2, 0);
  for (int e = 0; e < E; ++e) first[size_t(e) + 1] = first[size_t(e)] + int64_t(gr.tok[size_t(e)].size());
  first[size_t(E) + 1] = first[size_t(E)] + a.n;
  return first;
}

// out = Σ Y rows per token in the reference's order: routed experts in increasing id, then the
// shared expert (the order experts_in_turn adds them in).
void combine(const MoeArgs& a, const Groups& gr, const Scratch<int64_t>& first, const float* Y) {
  const int64_t D = a.config->dim;
  const int E = a.config->n_routed_experts, K = a.config->n_activated_experts;
  // Y row of (expert e, its j-th token), listed per token in increasing e; the shared row last.
  Scratch<int64_t> slots(size_t(a.n * (K + 1))), count(size_t(a.n), 0);
  for (int e = 0; e < E; ++e)
    for (size_t j = 0; j < gr.tok[size_t(e)].size(); ++j) {
      const int64_t i = gr.tok[size_t(e)][j];
      DSV4_CHECK(count[size_t(i)] < K, "a token routed to more experts than n_activated_experts");
      slots[size_t(i * (K + 1) + count[size_t(i)]++)] = first[size_t(e)] + int64_t(j);
    }
  parallel_for(a.pool, a.n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float* out = a.out + i * D;
      for (int64_t k = 0; k < count[size_t(i)]; ++k) {
        const float* y = Y + slots[size_t(i * (K + 1) + k)] * D;
        for (int64_t d = 0; d < D; ++d) out[d] += y[d];
      }
      const float* ys = Y + (first[size_t(E)] + i) * D;
      for (int64_t d = 0; d < D; ++d) out[d] += ys[d];
    }
  }, 4);
}

// Per-expert output rows for experts_in_parallel: expert e's rows of Y are [first[e], first[e+1]);
// the shared expert is e = E (row_layout).
struct ExpertRows {
  Scratch<int64_t> first;
  Scratch<float> Y;
  int64_t rows(int e) const { return first[size_t(e) + 1] - first[size_t(e)]; }
};

// Experts `todo` (E = the shared one) whole on one thread each, threads claiming them largest
// first (ties by id). weights[e]: expert e's weights.
void run_whole_experts(const MoeArgs& a, const float* xq, const Groups& gr, ExpertRows* out, Scratch<int> todo,
                       const Scratch<const ExpertWeights*>& weights) {
  const int64_t D = a.config->dim;
  const int E = a.config->n_routed_experts;
  // std::sort: stable_sort would take a heap buffer.
  std::sort(todo.begin(), todo.end(), [&](int x, int y) { return out->rows(x) != out->rows(y) ? out->rows(x) > out->rows(y) : x < y; });
  Scratch<float> ones(static_cast<size_t>(a.n), 1.0f);
  std::atomic<size_t> next{0};
  const int T = a.pool ? a.pool->size() : 1;
  parallel_for(a.pool, T, [&](int64_t, int64_t) {
    for (size_t k; (k = next.fetch_add(1)) < todo.size();) {
      ArenaScope scope;
      const int e = todo[k];
      float* y = out->Y.data() + out->first[size_t(e)] * D;
      if (e == E) {
        expert_forward(a, a.weights->shared, xq, a.n, ones.data(), y, nullptr);
      } else {
        Scratch<float> xg = gather(xq, gr.tok[size_t(e)], D);
        expert_forward(a, *weights[size_t(e)], xg.data(), out->rows(e), gr.wgt[size_t(e)].data(), y, nullptr);
      }
    }
  });
}

// Streamed experts in waves of what the cache can hold pinned at once (half its slots: the other
// half takes the next wave's reads meanwhile), in increasing id; the shared expert in the first.
void run_whole_experts_streamed(const MoeArgs& a, const float* xq, const Groups& gr, ExpertRows* out) {
  const int E = a.config->n_routed_experts;
  const Scratch<int32_t> ids = active_experts(gr);
  const size_t wave = std::max<size_t>(1, a.cache->slots() / 2);
  prefetch_rest(a, ids, 0);
  for (size_t from = 0; from < ids.size() || from == 0; from += wave) {
    ArenaScope scope;
    Scratch<int> todo;
    Scratch<const ExpertWeights*> weights(size_t(E), nullptr);
    std::vector<std::unique_ptr<ExpertRef>> refs;
    if (from == 0) todo.push_back(E);
    for (size_t k = from; k < std::min(ids.size(), from + wave); ++k) {
      refs.push_back(std::make_unique<ExpertRef>(a, ids[k]));
      weights[size_t(ids[k])] = &refs.back()->weights();
      todo.push_back(ids[k]);
    }
    prefetch_rest(a, ids, from + wave);
    run_whole_experts(a, xq, gr, out, std::move(todo), weights);
  }
}

// Long prompts: every expert (the shared one included) whole on one thread, threads claiming
// experts largest first. Each expert's SwiGLU and quantization run in parallel too, and the
// threads meet once per layer instead of three times per expert. Outputs land in per-expert
// rows of Y and are summed afterwards in the reference's order, so the result is bit-identical
// to experts_in_turn.
void experts_in_parallel(const MoeArgs& a, const float* xq, const Groups& gr) {
  const int64_t D = a.config->dim;
  const int E = a.config->n_routed_experts;
  ExpertRows Y{row_layout(a, gr), {}};
  Y.Y.resize(size_t(Y.first[size_t(E) + 1] * D));
  if (a.cache) {
    run_whole_experts_streamed(a, xq, gr, &Y);
  } else {
    Scratch<int> todo;
    Scratch<const ExpertWeights*> weights(size_t(E), nullptr);
    for (int e = 0; e <= E; ++e)
      if (Y.rows(e) > 0) todo.push_back(e);
    for (int e = 0; e < E; ++e) weights[size_t(e)] = &a.weights->experts[size_t(e)];
    run_whole_experts(a, xq, gr, &Y, std::move(todo), weights);
  }
  combine(a, gr, Y.first, Y.Y.data());
}

// Routed experts through the executor (possibly other processes), the shared expert here while
// they run; then the same combine.
void experts_by_executor(const MoeArgs& a, const float* xq, const Groups& gr) {
  DSV4_CHECK(!a.cache, "an expert executor with streamed experts (Model::load refuses the combination)");
  const int64_t D = a.config->dim;
  const int E = a.config->n_routed_experts;
  const Scratch<int64_t> first = row_layout(a, gr);
  Scratch<float> Y(size_t(first[size_t(E) + 1] * D));
  RoutedBatch b{a.config, a.weights, a.layer, a.numerics, xq, a.n, gr.tok.data(), gr.wgt.data(), first.data(),
                Y.data(), a.pool};
  a.executor->run(b, [&] {
    ArenaScope scope;
    Scratch<float> ones(static_cast<size_t>(a.n), 1.0f);
    expert_forward(a, a.weights->shared, xq, a.n, ones.data(), Y.data() + first[size_t(E)] * D, a.pool);
  });
  combine(a, gr, first, Y.data());
}

// kAuto resolved (moe.h). Whole experts per thread pay once there are several per thread to
// balance the load with and each has rows enough to be compute-bound (a prompt); several
// sequences' decode steps touch many experts with a row or two each, which stream best split
// over every thread (fused). Streamed experts go one at a time as their reads complete, or in
// waves of whole experts.
ExpertSchedule pick_schedule(const MoeArgs& a, int64_t active) {
  const int T = a.pool ? a.pool->size() : 1;
  const bool fused = fused_experts_enabled();
  const bool many_rows = a.n * a.config->n_activated_experts >= 4 * active;
  if (a.schedule == ExpertSchedule::kWholeExperts ||
      (a.schedule == ExpertSchedule::kAuto && T > 1 && active >= 8 * T && (many_rows || a.cache || !fused)))
    return ExpertSchedule::kWholeExperts;
  if (a.cache || a.schedule == ExpertSchedule::kInTurn || (a.schedule == ExpertSchedule::kAuto && !fused))
    return ExpertSchedule::kInTurn;
  return ExpertSchedule::kFused;
}

}  // namespace

void moe_forward(const MoeArgs& a) {
  const ModelConfig& c = *a.config;
  const int E = c.n_routed_experts;
  const int64_t D = c.dim;
  std::optional<PhaseTimer> gate_timer(Phase::kGate);
  Scratch<float> logits(size_t(a.n * E));
  kernels::linear(a.weights->gate, a.x, a.n, logits.data(), a.pool);
  Scratch<float> xq = gemm_input(a.x, a.n, D, a.numerics);
  const Groups gr = group_by_expert(a, logits.data());
  if (a.cache) {  // this layer's reads first, then the next layer's predicted ones behind them
    const Scratch<int32_t> ids = active_experts(gr);
    a.cache->cancel_unchosen(a.layer, std::span<const int32_t>(ids.data(), ids.size()));
    prefetch_rest(a, ids, 0);
    prefetch_predicted(a);
  }
  std::fill(a.out, a.out + a.n * D, 0.0f);
  int64_t active = 0;
  for (const auto& t : gr.tok) active += !t.empty();
  PhaseProfile::count(PhaseProfile::experts_touched, active);
  gate_timer.reset();
  {
    PhaseTimer timer(Phase::kRoutedExperts);  // experts_in_turn splits off the shared expert
    if (a.executor) {
      experts_by_executor(a, xq.data(), gr);
    } else {
      switch (pick_schedule(a, active)) {
        case ExpertSchedule::kWholeExperts: experts_in_parallel(a, xq.data(), gr); break;
        case ExpertSchedule::kInTurn: experts_in_turn(a, xq.data(), gr); break;
        default: experts_fused(a, xq.data(), gr); break;
      }
    }
  }
  if (a.cache) a.cache->end_layer(a.layer);  // its reservations (wrong predictions included) lapse
}

}  // namespace dsv4

namespace dsv4 {

void moe_prefetch_hashed(const MoeArgs& a) {
  if (!a.cache || !a.hash_routed) return;
  const int K = a.config->n_activated_experts;
  Scratch<int32_t> ids;  // the arena: no allocation in the decode loop
  for (int64_t i = 0; i < a.n; ++i) {
    if (a.tokens[i] < 0 || a.tokens[i] >= a.config->vocab_size) continue;  // route() reports it
    const int32_t* row = a.weights->tid2eid.data() + int64_t(a.tokens[i]) * K;
    ids.insert(ids.end(), row, row + K);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  a.cache->prefetch(a.layer, std::span<const int32_t>(ids.data(), ids.size()));
}

}  // namespace dsv4
