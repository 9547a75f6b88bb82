#include "model/attention.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "kernels/sparse_attention.h"
#include "model/compressor.h"
#include "model/indexer.h"
#include "model/numerics.h"
#include "model/profile.h"
#include "model/trace.h"

namespace dsv4 {

namespace {

// q = wq_b(q_norm(wq_a(x))), per-head weightless RMS norm, RoPE. Returns q [n, H·Dh]; `qr_in`
// receives wq_b's (quantized) input, which the indexer reuses.
Scratch<float> query_path(const AttentionArgs& a, const Scratch<int64_t>& pos, Scratch<float>* qr_in) {
  const ModelConfig& c = *a.config;
  const AttentionWeights& w = *a.weights;
  Scratch<float> xq = gemm_input(a.x, a.n, c.dim, a.numerics);
  Scratch<float> qr(size_t(a.n * c.q_lora_rank));
  kernels::linear(w.wq_a, xq.data(), a.n, qr.data(), a.pool);
  for (int64_t i = 0; i < a.n; ++i)
    kernels::rms_norm(qr.data() + i * c.q_lora_rank, w.q_norm.data(), c.q_lora_rank, c.norm_eps,
                      qr.data() + i * c.q_lora_rank);
  *qr_in = gemm_input(qr.data(), a.n, c.q_lora_rank, a.numerics);
  Scratch<float> q(size_t(a.n * c.n_heads * c.head_dim));
  kernels::linear(w.wq_b, qr_in->data(), a.n, q.data(), a.pool);
  parallel_for(a.pool, a.n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      for (int h = 0; h < c.n_heads; ++h) {
        float* qh = q.data() + (i * c.n_heads + h) * c.head_dim;
        kernels::rms_norm(qh, nullptr, c.head_dim, c.norm_eps, qh);
        a.rope->apply(qh, c.head_dim, pos[size_t(i)]);
      }
  });
  return q;
}

// kv = kv_norm(wkv(x)), RoPE, FP8 round trip of the non-rope dims (reference numerics; the cache
// then stores those dims as FP8 exactly, kv_rows.h).
Scratch<float> kv_path(const AttentionArgs& a, const Scratch<int64_t>& pos) {
  const ModelConfig& c = *a.config;
  Scratch<float> xq = gemm_input(a.x, a.n, c.dim, a.numerics);
  Scratch<float> kv(size_t(a.n * c.head_dim));
  kernels::linear(a.weights->wkv, xq.data(), a.n, kv.data(), a.pool);
  for (int64_t i = 0; i < a.n; ++i) {
    float* r = kv.data() + i * c.head_dim;
    kernels::rms_norm(r, a.weights->kv_norm.data(), c.head_dim, c.norm_eps, r);
    a.rope->apply(r, c.head_dim, pos[size_t(i)]);
    if (a.numerics == Numerics::kReference) kernels::fp8_simulate(r, c.nope_head_dim(), 64);
  }
  return kv;
}

// wo_a's group g on every row: z's columns [g·R, (g+1)·R) from the group's heads of o. Several
// rows are gathered into one call ([n, group_in] → [n, R]), so the group's weights are read once.
void wo_a_group(const AttentionArgs& a, const float* o, int64_t g, float* z, ThreadPool* pool) {
  const ModelConfig& c = *a.config;
  const int64_t group_in = c.n_heads / c.o_groups * c.head_dim, R = c.o_lora_rank, G = c.o_groups;
  if (a.n == 1) return kernels::linear_rows(a.weights->wo_a, g * R, R, o + g * group_in, 1, z + g * R, pool);
  ArenaScope scope;
  Scratch<float> og(size_t(a.n * group_in)), zg(size_t(a.n * R));
  for (int64_t i = 0; i < a.n; ++i)
    std::copy(o + (i * G + g) * group_in, o + (i * G + g + 1) * group_in, og.begin() + i * group_in);
  kernels::linear_rows(a.weights->wo_a, g * R, R, og.data(), a.n, zg.data(), pool);
  for (int64_t i = 0; i < a.n; ++i) std::copy(zg.begin() + i * R, zg.begin() + (i + 1) * R, z + (i * G + g) * R);
}

// Rows up to which wo_a's groups are shared out whole, one thread-pool region for all of them.
constexpr int64_t kGroupsInOneRegionRows = 8;

// o [n, H·Dh] → wo_b(wo_a grouped(o)) [n, dim]. Group g maps heads [g·H/G, (g+1)·H/G) through
// wo_a rows [g·R, (g+1)·R); wo_a takes unquantized input (the reference dequantizes it to BF16).
void output_projection(const AttentionArgs& a, const float* o) {
  const ModelConfig& c = *a.config;
  Scratch<float> z(size_t(a.n * c.o_groups * c.o_lora_rank));
  if (a.n <= kGroupsInOneRegionRows && a.pool && a.pool->size() > 1 && c.o_groups >= a.pool->size()) {
    // A decode step, a batch of them or a verify forward: the groups' calls (the same calls, so
    // the same bits) shared out in one region instead of a region each — o_groups − 1 fewer
    // per layer (at least a group per thread).
    parallel_for(a.pool, c.o_groups, [&](int64_t b, int64_t e) {
      for (int64_t g = b; g < e; ++g) wo_a_group(a, o, g, z.data(), nullptr);
    });
  } else {
    for (int64_t g = 0; g < c.o_groups; ++g) wo_a_group(a, o, g, z.data(), a.pool);
  }
  Scratch<float> zq = gemm_input(z.data(), a.n, c.o_groups * c.o_lora_rank, a.numerics);
  kernels::linear(a.weights->wo_b, zq.data(), a.n, a.out, a.pool);
}

// Cached rows ids(0) … ids(n−1) of `rows`, decoded to F32 ([n, dim]) on every thread (at a long
// context a decode step reads thousands of them).
template <class Ids>
void decode_rows(const KvRows& rows, int64_t n, Ids ids, float* out, ThreadPool* pool) {
  parallel_for(pool, n, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) rows.get(ids(j), out + j * rows.dim());
  }, 16);
}

// The keys each row of a segment attends: row r's are keys[first[r], first[r+1]), pointers
// into this call's `kv` or into the decoded cache rows held here.
struct KeyLists {
  Scratch<float> ring;     // [W, Dh] window slots older positions use (slot p mod W)
  Scratch<float> entries;  // [n_entries, Dh] compressed entries (all of them), or
  Scratch<float> picked;   // the indexer's picks per row, when they are fewer rows
  Scratch<const float*> keys;
  Scratch<int64_t> first;  // [n + 1]
};

KeyLists key_lists(const AttentionArgs& a, const Segment& seg, const Scratch<float>& kv, const Selection& selected) {
  const ModelConfig& c = *a.config;
  const AttentionWeights& w = *a.weights;
  const LayerState* st = seg.state;
  const int64_t Dh = c.head_dim, W = c.window_size;
  const int ratio = w.compressor ? w.compressor->ratio : 0;
  KeyLists L;
  // The cache holds compact rows: decode what this segment reads once — the ring, and the
  // compressed entries unless the indexer's picks are fewer rows than all of them.
  L.ring.resize(size_t(W * Dh));
  for (int64_t p = std::max<int64_t>(0, seg.start_pos - W + 1); p < seg.start_pos; ++p) {
    st->window_kv.get(p % W, L.ring.data() + (p % W) * Dh);
    PhaseProfile::add_bytes(int64_t(st->window_kv.row_bytes()), /*kv=*/true);
  }
  const int64_t n_entries = st->n_compressed();
  const bool per_query = w.indexer && n_entries > seg.n * c.index_topk;
  L.entries.resize(size_t((w.compressor && !per_query ? n_entries : 0) * Dh));
  decode_rows(st->compressed_kv, int64_t(L.entries.size()) / Dh, [](int64_t j) { return j; }, L.entries.data(), a.pool);
  PhaseProfile::add_bytes(int64_t(L.entries.size()) / Dh * int64_t(st->compressed_kv.row_bytes()), /*kv=*/true);
  // Laid out here, so that the threads only fill them.
  auto n_window = [&](int64_t t) { return t - std::max<int64_t>(0, t - W + 1) + 1; };
  Scratch<int64_t>& first = L.first;
  first.resize(size_t(seg.n + 1));
  Scratch<int64_t> pick_first(size_t(seg.n + 1));
  for (int64_t r = 0; r < seg.n; ++r) {
    const int64_t t = seg.start_pos + r;
    const int64_t n_comp = w.indexer ? int64_t(selected.row(seg.row0 + r).size()) : w.compressor ? (t + 1) / ratio : 0;
    first[size_t(r + 1)] = first[size_t(r)] + n_window(t) + n_comp;
    pick_first[size_t(r + 1)] = pick_first[size_t(r)] + (per_query ? n_comp : 0);
  }
  L.keys.resize(size_t(first[size_t(seg.n)]));
  L.picked.resize(size_t(pick_first[size_t(seg.n)] * Dh));
  if (per_query) {  // the picks of all rows, row after row
    Scratch<int32_t> picks;
    for (int64_t r = 0; r < seg.n; ++r) {
      const auto row = selected.row(seg.row0 + r);
      picks.insert(picks.end(), row.begin(), row.end());
    }
    decode_rows(st->compressed_kv, int64_t(picks.size()), [&](int64_t m) { return picks[size_t(m)]; }, L.picked.data(),
                a.pool);
    PhaseProfile::add_bytes(int64_t(picks.size()) * int64_t(st->compressed_kv.row_bytes()), /*kv=*/true);
  }
  parallel_for(a.pool, seg.n, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t i = seg.row0 + r, t = seg.start_pos + r;
      const float** k = L.keys.data() + first[size_t(r)];
      // Window: positions max(0, t−W+1) … t; older ones from the ring, this call's from `kv`.
      for (int64_t p = std::max<int64_t>(0, t - W + 1); p <= t; ++p)
        *k++ = p < seg.start_pos ? L.ring.data() + (p % W) * Dh : kv.data() + (seg.row0 + p - seg.start_pos) * Dh;
      if (w.indexer && per_query) {
        const float* rows = L.picked.data() + pick_first[size_t(r)] * Dh;
        for (size_t m = 0; m < selected.row(i).size(); ++m) *k++ = rows + m * Dh;
      } else if (w.indexer) {
        for (int32_t j : selected.row(i)) *k++ = L.entries.data() + j * Dh;
      } else if (w.compressor) {
        for (int64_t j = 0; j < (t + 1) / ratio; ++j) *k++ = L.entries.data() + j * Dh;
      }
    }
  });
  return L;
}

// Row r of `seg` attending over its keys L, for heads [h0, h0 + hpi).
void attend_row(const AttentionArgs& a, const Segment& seg, const KeyLists& L, const Scratch<float>& q, int64_t r,
                int64_t h0, int hpi, Scratch<float>* logits, float* o) {
  const ModelConfig& c = *a.config;
  const int64_t Dh = c.head_dim;
  const int64_t i = seg.row0 + r, t = seg.start_pos + r;
  const int64_t n_kv = L.first[size_t(r + 1)] - L.first[size_t(r)];
  logits->resize(size_t(n_kv * hpi));
  kernels::SparseAttentionArgs sa;
  sa.q = q.data() + (i * c.n_heads + h0) * Dh;
  sa.kv = L.keys.data() + L.first[size_t(r)];
  sa.n_kv = n_kv;
  sa.sink = a.weights->attn_sink.data() + h0;
  sa.n_heads = hpi;
  sa.head_dim = Dh;
  sa.softmax_scale = 1.0f / std::sqrt(float(Dh));
  sa.out = o + (i * c.n_heads + h0) * Dh;
  sa.scratch = logits->data();
  kernels::sparse_attention(sa);
  // Values carry rotated rope dims; rotating the output back makes them relative (§4.4.8).
  for (int h = 0; h < hpi; ++h) a.rope->apply(sa.out + h * Dh, Dh, t, /*inverse=*/true);
}

// Attention of segments [s0, s1)'s rows over their windows and compressed keys, all in one
// thread-pool region. Work items are (row, group of heads): heads are independent, so a decode
// step's single row still spreads over every thread; with many rows each item is a whole row.
void attend_segments(const AttentionArgs& a, int s0, int s1, const Scratch<float>& q, const Scratch<float>& kv,
                     const Selection& selected, float* o) {
  const ModelConfig& c = *a.config;
  Scratch<KeyLists> lists;
  Scratch<int64_t> first_item(1, 0);
  for (int s = s0; s < s1; ++s) lists.push_back(key_lists(a, a.segments[s], kv, selected));
  int64_t rows = 0;
  for (int s = s0; s < s1; ++s) rows += a.segments[s].n;
  const int threads = a.pool ? a.pool->size() : 1;
  // Groups keep multiples of 4 heads: the SIMD kernel's unit (its per-head results do not
  // depend on the group), so splitting never changes a result.
  int head_split = 1;
  while (rows * head_split < 2 * threads && c.n_heads % (head_split * 8) == 0) head_split *= 2;
  const int hpi = c.n_heads / head_split;  // heads per item
  for (int s = s0; s < s1; ++s) first_item.push_back(first_item.back() + a.segments[s].n * head_split);
  parallel_for(a.pool, first_item.back(), [&](int64_t b, int64_t e) {
    ArenaScope scope;
    Scratch<float> logits;
    size_t k = size_t(std::upper_bound(first_item.begin(), first_item.end(), b) - first_item.begin()) - 1;
    for (int64_t item = b; item < e; ++item) {
      while (item >= first_item[k + 1]) ++k;
      const int64_t j = item - first_item[k];
      attend_row(a, a.segments[s0 + int(k)], lists[k], q, j / head_split, (j % head_split) * hpi, hpi, &logits, o);
    }
  });
}

// Rows up to which all sequences attend in one region (a batch of decode steps: it took a
// region — a wake-up and a barrier — per sequence); longer calls (prompts) go a sequence at a
// time, so that only one sequence's decoded keys are held at once.
constexpr int64_t kSequencesInOneRegionRows = 8;

// Only after attention may a ring take the new tokens: earlier queries read the slots they replace.
void write_window(const ModelConfig& c, const Segment& seg, const Scratch<float>& kv) {
  const int64_t Dh = c.head_dim, W = c.window_size;
  for (int64_t p = std::max(seg.start_pos, seg.start_pos + seg.n - W); p < seg.start_pos + seg.n; ++p) {
    seg.state->window_kv.set(p % W, kv.data() + (seg.row0 + p - seg.start_pos) * Dh);
  }
}

}  // namespace

void attention_forward(const AttentionArgs& a) {
  const ModelConfig& c = *a.config;
  const AttentionWeights& w = *a.weights;
  const Scratch<int64_t> pos = segment_positions(a.segments, a.n_segments, a.n);
  Scratch<const LayerState*> row_state(size_t(a.n));
  for (int s = 0; s < a.n_segments; ++s)
    std::fill_n(row_state.begin() + a.segments[s].row0, a.segments[s].n, a.segments[s].state);
  Scratch<float> qr_in, q, kv;
  {
    PhaseTimer timer(Phase::kAttnProjection);
    q = query_path(a, pos, &qr_in);
    kv = kv_path(a, pos);
  }

  // Compressed entries completed by this call exist before any query attends (spec §4.6).
  if (w.compressor) {
    PhaseTimer timer(Phase::kCompressor);
    CompressArgs ca{&c, w.compressor.get(), a.rope, CompressorRole::kMainKv, a.numerics};
    CompressorProjections proj = compressor_project(*w.compressor, a.x, a.n, a.pool);
    for (int s = 0; s < a.n_segments; ++s) {
      const Segment& g = a.segments[s];
      compress(ca, proj, g.row0, g.n, g.start_pos, &g.state->compressor, &g.state->compressed_kv);
    }
  }
  Selection selected;
  if (w.indexer) {
    CompressArgs ci{&c, &w.indexer->compressor, a.rope, CompressorRole::kIndexKey, a.numerics};
    {
      PhaseTimer timer(Phase::kCompressor);
      CompressorProjections proj = compressor_project(w.indexer->compressor, a.x, a.n, a.pool);
      for (int s = 0; s < a.n_segments; ++s) {
        const Segment& g = a.segments[s];
        compress(ci, proj, g.row0, g.n, g.start_pos, &g.state->index_compressor, &g.state->index_keys);
      }
    }
    IndexerArgs ia{&c, w.indexer.get(), a.rope, a.numerics, qr_in.data(), a.x, a.n, pos.data(), row_state.data(),
                   a.trace, a.trace_tag, a.pool};
    PhaseTimer timer(Phase::kIndexer);
    selected = index_select(ia);
  }

  Scratch<float> o(size_t(a.n * c.n_heads * c.head_dim));
  {
    PhaseTimer timer(Phase::kSparseAttention);
    if (a.n <= kSequencesInOneRegionRows) {
      attend_segments(a, 0, a.n_segments, q, kv, selected, o.data());
    } else {
      for (int s = 0; s < a.n_segments; ++s) attend_segments(a, s, s + 1, q, kv, selected, o.data());
    }
  }
  {
    PhaseTimer timer(Phase::kAttnProjection);
    output_projection(a, o.data());
  }
  for (int s = 0; s < a.n_segments; ++s) write_window(c, a.segments[s], kv);
}

}  // namespace dsv4
