// Attention of the training forward: RoPE, the compressors, the lightning indexer and sparse
// attention with the sink (spec §4.4), over whole sequences with masks instead of caches.
#include <cmath>
#include <limits>

#include "train/layers.h"
#include "train/qat.h"

namespace dsv4::train {

namespace {

namespace F = torch::nn::functional;
using torch::indexing::Slice;


constexpr double kInf = std::numeric_limits<double>::infinity();

// visible[s][j]: compressed entry j (tokens j·r … j·r+r−1) is complete at query position s.
Tensor entry_visible(int64_t S, int64_t n_entries, int ratio) {
  Tensor s = torch::arange(S, torch::kLong).unsqueeze(1);
  Tensor j = torch::arange(n_entries, torch::kLong).unsqueeze(0);
  return (j + 1) * ratio <= s + 1;
}

// Window: query t sees positions t−W+1 … t.
Tensor window_visible(int64_t S, int64_t W) {
  Tensor t = torch::arange(S, torch::kLong).unsqueeze(1);
  Tensor p = torch::arange(S, torch::kLong).unsqueeze(0);
  return (p <= t) & (p > t - W);
}

// The indexer's picks [B, S, n_entries] (bool): the top index_topk visible entries by score
// (spec §4.4.5), chosen on detached scores.
Tensor index_select(const TrainModel& m, const std::string& prefix, int layer, const Tensor& x, const Tensor& qr,
                    const Rope& rope, ForwardTrace* trace, IndexerStats* stats) {
  const ModelConfig& c = m.config;
  const int64_t B = x.size(0), S = x.size(1), Hi = c.index_n_heads, di = c.index_head_dim;
  Tensor keys = compress(m, prefix + "indexer.compressor.", layer, 4, x.detach(), /*index_keys=*/true);
  const int64_t n_e = keys.size(1);
  Tensor q = fp8_linear(m, qr.detach(), prefix + "indexer.wq_b.weight").view({B, S, Hi, di});
  q = hadamard(apply_rope(q, rope, /*heads=*/true));
  if (m.qat) q = fp4_sim(q, 32);
  Tensor w = project(x.detach(), m.p(prefix + "indexer.weights_proj.weight")) * (1.0 / std::sqrt(double(di * Hi)));
  Tensor score = (torch::einsum("bshd,bjd->bshj", {q, keys}).relu() * w.unsqueeze(-1)).sum(2);
  Tensor visible = entry_visible(S, n_e, 4);
  score = score.masked_fill(visible.logical_not(), -kInf);
  const int64_t k = std::min<int64_t>(c.index_topk, n_e);
  Tensor idx = top_k(score.detach(), k);
  Tensor picked = visible.expand({B, S, n_e}).gather(-1, idx);
  Tensor selected = torch::zeros({B, S, n_e}, torch::kBool).scatter(-1, idx, picked);
  if (trace) stats->scores = score, stats->selected = selected;
  return selected;
}

// o [B, S, H, Dh] → wo_b(grouped wo_a(o)): group g's heads through wo_a rows g·R … (g+1)·R.
Tensor output_projection(const TrainModel& m, const std::string& prefix, const Tensor& o) {
  const ModelConfig& c = m.config;
  const int64_t B = o.size(0), S = o.size(1), G = c.o_groups, R = c.o_lora_rank;
  const int64_t group_in = c.n_heads / G * c.head_dim;
  Tensor wo_a = (m.qat ? fp8_weight_sim(m.p(prefix + "wo_a.weight")) : m.p(prefix + "wo_a.weight")).view({G, R, group_in});
  Tensor z = torch::einsum("bsgi,gri->bsgr", {o.reshape({B, S, G, group_in}), wo_a}).reshape({B, S, G * R});
  return fp8_linear(m, z, prefix + "wo_b.weight");
}

}  // namespace

Tensor fp8_linear(const TrainModel& m, const Tensor& x, const std::string& weight, bool input_quant) {
  if (!m.qat) return project(x, m.p(weight));
  return project(input_quant ? fp8_sim(x, 128) : x, fp8_weight_sim(m.p(weight)));
}

Tensor fp4_linear(const TrainModel& m, const Tensor& x, const std::string& weight) {
  if (!m.qat) return project(x, m.p(weight));
  return project(fp8_sim(x, 128), fp4_weight_sim(m.p(weight)));
}

Tensor kv_sim(const TrainModel& m, const Tensor& kv) {
  if (!m.qat) return kv;
  const int64_t nope = m.config.nope_head_dim();
  return torch::cat({fp8_sim(kv.narrow(-1, 0, nope), 64), kv.narrow(-1, nope, kv.size(-1) - nope)}, -1);
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  Tensor y = x * torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight.defined() ? y * weight : y;
}

Rope rope_at(const Tensor& inv_freq, const Tensor& positions, torch::Dtype dtype) {
  // F32 models: the engine's F32 angle f32(pos) · inv_freq; F64 models the same in F64.
  Tensor angle = positions.to(dtype).unsqueeze(1) * inv_freq.to(dtype).unsqueeze(0);
  return Rope{angle.cos(), angle.sin()};
}

Tensor apply_rope(const Tensor& x, const Rope& r, bool heads, bool inverse) {
  const int64_t width = x.size(-1), half = r.cos.size(-1);
  Tensor c = heads ? r.cos.unsqueeze(1) : r.cos;
  Tensor s = heads ? r.sin.unsqueeze(1) : r.sin;
  if (inverse) s = -s;
  Tensor rot = x.narrow(-1, width - 2 * half, 2 * half);
  std::vector<int64_t> pairs(rot.sizes().begin(), rot.sizes().end());
  pairs.back() = half;
  pairs.push_back(2);
  rot = rot.reshape(pairs);
  Tensor a = rot.select(-1, 0), b = rot.select(-1, 1);
  Tensor out = torch::stack({a * c - b * s, a * s + b * c}, -1).flatten(-2);
  return torch::cat({x.narrow(-1, 0, width - 2 * half), out}, -1);
}

Tensor hadamard(const Tensor& x) {
  const int64_t n = x.size(-1);
  Tensor i = torch::arange(n, torch::kLong);
  Tensor bits = torch::bitwise_and(i.unsqueeze(1), i.unsqueeze(0));
  Tensor parity = torch::zeros({n, n}, torch::kLong);
  for (int64_t b = 1; b < n; b <<= 1) parity = parity + torch::bitwise_and(bits, b).ne(0).to(torch::kLong);
  Tensor H = 1.0 - 2.0 * torch::remainder(parity, 2).to(x.scalar_type());
  return torch::matmul(x, H) * (1.0 / std::sqrt(double(n)));
}

Tensor compress(const TrainModel& m, const std::string& prefix, int layer, int ratio, const Tensor& x,
                bool index_keys) {
  const ModelConfig& c = m.config;
  const int64_t B = x.size(0), d = index_keys ? c.index_head_dim : c.head_dim, n_e = x.size(1) / ratio;
  const bool overlap = ratio == 4;
  const int64_t width = overlap ? 2 * d : d;
  if (n_e == 0) return torch::zeros({B, 0, d}, x.options());
  Tensor xs = x.narrow(1, 0, n_e * ratio);
  Tensor kv = project(xs, m.p(prefix + "wkv.weight")).view({B, n_e, ratio, width});
  // Gate logits get the position-in-block embedding (ape), the values do not.
  Tensor sc = project(xs, m.p(prefix + "wgate.weight")).view({B, n_e, ratio, width}) + m.p(prefix + "ape");
  if (overlap) {
    // Entry j pools block j−1 through the first d channels and block j through the second d;
    // block −1 is (value 0, gate −∞).
    Tensor prev_kv = torch::cat({torch::zeros({B, 1, ratio, d}, x.options()), kv.narrow(1, 0, n_e - 1).narrow(-1, 0, d)}, 1);
    Tensor prev_sc = torch::cat({torch::full({B, 1, ratio, d}, -kInf, x.options()), sc.narrow(1, 0, n_e - 1).narrow(-1, 0, d)}, 1);
    kv = torch::cat({prev_kv, kv.narrow(-1, d, d)}, 2);
    sc = torch::cat({prev_sc, sc.narrow(-1, d, d)}, 2);
  }
  Tensor e = (torch::softmax(sc, 2) * kv).sum(2);
  e = rms_norm(e, m.p(prefix + "norm.weight"), c.norm_eps);
  Tensor first_pos = torch::arange(n_e, torch::kLong) * ratio;  // rotated at the block's first position
  e = apply_rope(e, rope_at(m.inv_freq[size_t(layer)], first_pos, m.dtype()), /*heads=*/false);
  if (index_keys) return m.qat ? fp4_sim(hadamard(e), 32) : hadamard(e);
  return kv_sim(m, e);
}

Tensor attention(const TrainModel& m, const std::string& prefix, int layer, const Tensor& x, ForwardTrace* trace) {
  const ModelConfig& c = m.config;
  const int64_t B = x.size(0), S = x.size(1), H = c.n_heads, Dh = c.head_dim;
  const int ratio = c.compress_ratio(layer);
  const Rope rope = rope_at(m.inv_freq[size_t(layer)], torch::arange(S, torch::kLong), m.dtype());
  Tensor qr = rms_norm(fp8_linear(m, x, prefix + "wq_a.weight"), m.p(prefix + "q_norm.weight"), c.norm_eps);
  Tensor q = rms_norm(fp8_linear(m, qr, prefix + "wq_b.weight").view({B, S, H, Dh}), Tensor(), c.norm_eps);
  q = apply_rope(q, rope, /*heads=*/true);
  Tensor kv = rms_norm(fp8_linear(m, x, prefix + "wkv.weight"), m.p(prefix + "kv_norm.weight"), c.norm_eps);
  kv = kv_sim(m, apply_rope(kv, rope, /*heads=*/false));  // one head: both key and value

  const double scale = 1.0 / std::sqrt(double(Dh));
  std::vector<Tensor> logits{torch::einsum("bshd,btd->bhst", {q, kv}) * scale};
  logits[0] = logits[0].masked_fill(window_visible(S, c.window_size).logical_not(), -kInf);
  Tensor entries;
  IndexerStats stats;
  if (ratio != 0 && S >= ratio) {  // shorter sequences complete no entry
    entries = compress(m, prefix + "compressor.", layer, ratio, x, /*index_keys=*/false);
    Tensor visible = entry_visible(S, entries.size(1), ratio).view({1, 1, S, entries.size(1)});
    if (ratio == 4) visible = visible & index_select(m, prefix, layer, x, qr, rope, trace, &stats).unsqueeze(1);
    logits.push_back((torch::einsum("bshd,bjd->bhsj", {q, entries}) * scale).masked_fill(visible.logical_not(), -kInf));
  }
  // The sink joins only the denominator: a key of logit sink_h whose value is dropped.
  logits.push_back(m.p(prefix + "attn_sink").view({1, H, 1, 1}).expand({B, H, S, 1}));
  Tensor probs = torch::softmax(torch::cat(logits, -1), -1);
  Tensor o = torch::einsum("bhst,btd->bshd", {probs.narrow(-1, 0, S), kv});
  if (entries.defined()) {
    Tensor pc = probs.narrow(-1, S, entries.size(1));
    o = o + torch::einsum("bhsj,bjd->bshd", {pc, entries});
    if (trace && ratio == 4) {
      stats.attn_probs = pc.detach().sum(1);
      trace->indexers.push_back(stats);
    }
  }
  // Values carry rotated rope dims; rotating back makes them relative (spec §4.4.8).
  o = apply_rope(o, rope, /*heads=*/true, /*inverse=*/true);
  return output_projection(m, prefix, o);
}

}  // namespace dsv4::train
