#include "model/indexer.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "core/thread_pool.h"
#include "kernels/fp4_index.h"
#include "kernels/hadamard.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "model/profile.h"
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
  PhaseTimer timer(Phase::kIndexerScoring);  // scoring and selection (the projections above are weights)
  for (int64_t i = 0; i < a.n; ++i)
    PhaseProfile::add_bytes(candidates(i) * int64_t(a.states[i]->index_keys.row_bytes()), /*kv=*/true);
  // Reference numerics: queries and keys are FP4, scored from their codes in exact integers
  // (kernels/fp4_index.h; the same bits as decoding both and taking F32 dots). A row or key
  // outside the exact bounds, and plain numerics, take the F32 path.
  Scratch<kernels::Fp4IndexQuery> fp4(static_cast<size_t>(a.n));
  Scratch<uint8_t> use_fp4(static_cast<size_t>(a.n), 0);
  if (a.numerics == Numerics::kReference)
    for (int64_t i = 0; i < a.n; ++i)
      use_fp4[size_t(i)] = a.states[i]->index_keys.format() == KvFormat::kFp4 &&
                           kernels::fp4_index_prepare(q.data() + i * heads * hd, heads, hd, &fp4[size_t(i)]);

  // score[j] = Σ_h w_h · relu(q_h · K_j) for candidates [j0, j1) of row i (one summation order
  // for both paths).
  auto score_span = [&](int64_t i, int64_t j0, int64_t j1, float* score) {
    ArenaScope scope;
    const KvRows& keys = a.states[i]->index_keys;
    Scratch<float> dots(size_t((j1 - j0) * heads)), key(static_cast<size_t>(hd));
    Scratch<uint8_t> exact(size_t(j1 - j0), 0);
    if (use_fp4[size_t(i)])
      kernels::fp4_index_dots(fp4[size_t(i)], keys.row_data(j0), keys.row_bytes(), j1 - j0, dots.data(), exact.data());
    const int64_t m = j1 - j0;  // dots[h·m + j − j0]
    for (int64_t j = j0; j < j1; ++j) {
      if (exact[size_t(j - j0)]) continue;
      keys.get(j, key.data());
      for (int h = 0; h < heads; ++h) dots[size_t(h * m + j - j0)] = kernels::dot(q.data() + (i * heads + h) * hd, key.data(), hd);
    }
    kernels::relu_weighted_sum(dots.data(), heads, m, hw.data() + i * heads, score);
  };
  // Top k by score, ties to the lower id: one 64-bit key per candidate orders exactly so (the
  // score's bits mapped to an ascending integer, complemented, above the id), so nth_element and
  // a sort of the k run on plain integers instead of comparisons through the ids.
  auto select = [&](int64_t i, const float* score, int64_t n_cand) {
    ArenaScope scope;
    const int64_t k = out.first[size_t(i + 1)] - out.first[size_t(i)];
    Scratch<uint64_t> order(static_cast<size_t>(n_cand));
    for (int64_t j = 0; j < n_cand; ++j) {
      const uint32_t b = std::bit_cast<uint32_t>(score[j] + 0.0f);  // −0 → +0: equal scores tie
      const uint32_t ascending = b & 0x80000000u ? ~b : b | 0x80000000u;
      order[size_t(j)] = uint64_t(~ascending) << 32 | uint32_t(j);
    }
    if (k < n_cand) std::nth_element(order.begin(), order.begin() + k, order.end());
    std::sort(order.begin(), order.begin() + k);
    int32_t* ids = out.ids.data() + out.first[size_t(i)];
    for (int64_t m = 0; m < k; ++m) ids[m] = int32_t(uint32_t(order[size_t(m)]));
    if (a.trace) {
      a.trace->f32(cat("indexer.", a.trace_tag, ".scores"), a.positions[i], score, n_cand);
      a.trace->i32(cat("indexer.", a.trace_tag, ".topk"), a.positions[i], ids, k);
    }
  };

  // Rows in groups whose scores fit a bounded buffer (a long prefill chunk at a long context);
  // work items are spans of kSpan candidates, so one decode row spreads over every thread.
  constexpr int64_t kSpan = 256, kMaxScores = int64_t(1) << 22;
  for (int64_t r0 = 0; r0 < a.n;) {
    ArenaScope scope;
    Scratch<int64_t> score_at(1, 0);
    Scratch<int64_t> item_row, item_j0;
    int64_t r1 = r0;
    for (; r1 < a.n && (r1 == r0 || score_at.back() + candidates(r1) <= kMaxScores); ++r1) {
      for (int64_t j = 0; j < candidates(r1); j += kSpan) item_row.push_back(r1), item_j0.push_back(j);
      score_at.push_back(score_at.back() + candidates(r1));
    }
    Scratch<float> scores(size_t(score_at.back()));
    parallel_for(a.pool, int64_t(item_row.size()), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t i = item_row[size_t(t)], j0 = item_j0[size_t(t)];
        score_span(i, j0, std::min(j0 + kSpan, candidates(i)), scores.data() + score_at[size_t(i - r0)] + j0);
      }
    });
    // Traced runs stay serial so the trace records rows in order.
    auto select_rows = [&](int64_t b, int64_t e) {
      for (int64_t i = r0 + b; i < r0 + e; ++i) select(i, scores.data() + score_at[size_t(i - r0)], candidates(i));
    };
    if (a.trace) select_rows(0, r1 - r0);
    else parallel_for(a.pool, r1 - r0, select_rows);
    r0 = r1;
  }
  return out;
}

}  // namespace dsv4
