// The training forward outside attention: hyper-connections, norms, MoE, blocks, head, MTP.
#include "train/forward.h"

#include <cmath>

#include "core/error.h"
#include "model/rope.h"
#include "train/layers.h"

namespace dsv4::train {

namespace {


std::string layer_prefix(const ModelConfig& c, int layer) {
  return layer < c.n_layers ? cat("layers.", layer, ".") : std::string("mtp.0.");
}

// m = (fn · x) · ρ over the flattened streams, ρ = rsqrt(mean(x²) + eps) (spec §4.3).
Tensor mix_logits(const Tensor& x, const Tensor& fn, double eps) {
  Tensor flat = x.flatten(-2);
  return project(flat, fn) * torch::rsqrt(flat.pow(2).mean(-1, true) + eps);
}

// One expert (w1 gate, w3 up, w2 down) on rows x [m, D], the hidden activation × weight [m].
// Routed experts of FP4 checkpoints are FP4; shared experts (and FP8-expert checkpoints) FP8.
Tensor expert(const TrainModel& m, const std::string& p, const Tensor& x, const Tensor& weight, bool routed) {
  const bool fp4 = routed && m.config.expert_format == ExpertFormat::kFp4;
  auto lin = [&](const Tensor& in, const char* w) { return fp4 ? fp4_linear(m, in, p + w) : fp8_linear(m, in, p + w); };
  Tensor h = swiglu(lin(x, "w1.weight"), lin(x, "w3.weight"), m.config.swiglu_limit);
  if (weight.defined()) h = h * weight.unsqueeze(-1);  // before w2: it sees w2's input rounding
  return lin(h, "w2.weight");
}

}  // namespace

TrainModel::TrainModel(ModelConfig c, Params p) : config(std::move(c)), params(std::move(p)) {
  for (int l = 0; l < config.n_layers + config.n_mtp_layers; ++l) {
    const RopeTable t = layer_rope_table(config, l);
    inv_freq.push_back(torch::tensor(std::vector<double>(t.inv_freq.begin(), t.inv_freq.end()), torch::kDouble));
  }
}

torch::Dtype TrainModel::dtype() const { return params.at("embed.weight").scalar_type(); }

Tensor top_k(const Tensor& scores, int64_t k) {
  // A stable descending sort keeps equal scores in id order, as the engine breaks ties.
  return std::get<1>(scores.sort(/*stable=*/true, -1, /*descending=*/true)).narrow(-1, 0, k);
}

Tensor sinkhorn(const Tensor& logits, int iters, double eps) {
  // Row softmax + eps, a column normalization, then iters−1 (row, column) rounds; eps in every
  // denominator, as the reference.
  Tensor c = torch::softmax(logits, -1) + eps;
  c = c / (c.sum(-2, true) + eps);
  for (int it = 1; it < iters; ++it) {
    c = c / (c.sum(-1, true) + eps);
    c = c / (c.sum(-2, true) + eps);
  }
  return c;
}

Tensor hc_pre(const TrainModel& m, const std::string& prefix, const Tensor& x, HcMix* mix) {
  const ModelConfig& c = m.config;
  const int64_t hc = c.hc_mult;
  Tensor mx = mix_logits(x, m.p(prefix + "fn"), c.norm_eps);
  const Tensor& scale = m.p(prefix + "scale");
  const Tensor& base = m.p(prefix + "base");
  Tensor pre = torch::sigmoid(mx.narrow(-1, 0, hc) * scale[0] + base.narrow(0, 0, hc)) + c.hc_eps;
  mix->post = 2.0 * torch::sigmoid(mx.narrow(-1, hc, hc) * scale[1] + base.narrow(0, hc, hc));
  Tensor comb = mx.narrow(-1, 2 * hc, hc * hc) * scale[2] + base.narrow(0, 2 * hc, hc * hc);
  std::vector<int64_t> shape(comb.sizes().begin(), comb.sizes().end() - 1);
  shape.push_back(hc);
  shape.push_back(hc);
  mix->comb = sinkhorn(comb.reshape(shape), c.hc_sinkhorn_iters, c.hc_eps);
  return (pre.unsqueeze(-1) * x).sum(-2);
}

Tensor hc_post(const Tensor& f, const Tensor& x, const HcMix& mix) {
  // out[k] = post[k]·f + Σ_j comb[j][k]·x[j]
  return mix.post.unsqueeze(-1) * f.unsqueeze(-2) + torch::einsum("...jk,...jd->...kd", {mix.comb, x});
}

Tensor head(const TrainModel& m, const std::string& prefix, const std::string& norm_name, const Tensor& x) {
  const ModelConfig& c = m.config;
  Tensor mx = mix_logits(x, m.p(prefix + "hc_head_fn"), c.norm_eps);
  Tensor pre = torch::sigmoid(mx * m.p(prefix + "hc_head_scale")[0] + m.p(prefix + "hc_head_base")) + c.hc_eps;
  Tensor u = rms_norm((pre.unsqueeze(-1) * x).sum(-2), m.p(norm_name), c.norm_eps);
  return project(u, m.p("head.weight"));
}

Tensor swiglu(const Tensor& g, const Tensor& v, double limit) {
  if (limit <= 0) return torch::silu(g) * v;
  return torch::silu(g.clamp_max(limit)) * v.clamp(-limit, limit);
}

Tensor moe(const TrainModel& m, const std::string& prefix, int layer, const Tensor& x, const Tensor& tokens,
           ForwardTrace* trace) {
  const ModelConfig& c = m.config;
  const int64_t B = x.size(0), S = x.size(1), D = c.dim, E = c.n_routed_experts, K = c.n_activated_experts;
  DSV4_CHECK(c.score_func == ScoreFunc::kSqrtSoftplus, "the trainer implements sqrt(softplus) routing only");
  Tensor xf = x.reshape({B * S, D});
  Tensor scores = torch::sqrt(torch::softplus(project(xf, m.p(prefix + "gate.weight"))));  // threshold 20
  Tensor experts;
  if (c.is_hash_layer(layer)) {
    experts = m.p(prefix + "gate.tid2eid").index_select(0, tokens.reshape({B * S}));
  } else {
    // The bias steers selection only (aux-loss-free balancing); weights come from the scores.
    const size_t route = trace ? trace->routes.size() : 0;
    if (trace && route < trace->forced_experts.size()) {
      experts = trace->forced_experts[route].reshape({B * S, K});
    } else {
      experts = top_k(scores.detach() + m.p(prefix + "gate.bias"), K);
    }
    if (trace) trace->routes.push_back({prefix + "gate.bias", scores.view({B, S, E}), experts.view({B, S, K})});
  }
  Tensor w = scores.gather(1, experts);
  w = w / w.sum(-1, true) * double(c.route_scale);
  Tensor out = expert(m, prefix + "shared_experts.", xf, Tensor(), /*routed=*/false);
  for (int64_t e = 0; e < E; ++e) {
    Tensor hit = (experts == e).nonzero();  // [m, 2]: (token, slot)
    if (hit.size(0) == 0) continue;
    Tensor rows = hit.select(1, 0);
    Tensor y = expert(m, cat(prefix, "experts.", e, "."), xf.index_select(0, rows), w.index({rows, hit.select(1, 1)}), /*routed=*/true);
    out = out.index_add(0, rows, y);
  }
  return out.view({B, S, D});
}

Tensor block(const TrainModel& m, const std::string& prefix, int layer, const Tensor& x, const Tensor& tokens,
             ForwardTrace* trace) {
  const ModelConfig& c = m.config;
  HcMix mix;
  Tensor u = rms_norm(hc_pre(m, prefix + "hc_attn_", x, &mix), m.p(prefix + "attn_norm.weight"), c.norm_eps);
  Tensor y = hc_post(attention(m, prefix + "attn.", layer, u, trace), x, mix);
  u = rms_norm(hc_pre(m, prefix + "hc_ffn_", y, &mix), m.p(prefix + "ffn_norm.weight"), c.norm_eps);
  return hc_post(moe(m, prefix + "ffn.", layer, u, tokens, trace), y, mix);
}

ForwardResult forward(const TrainModel& m, const torch::Tensor& tokens, ForwardTrace* trace) {
  const ModelConfig& c = m.config;
  Tensor e = m.p("embed.weight").index_select(0, tokens.flatten()).view({tokens.size(0), tokens.size(1), c.dim});
  Tensor x = e.unsqueeze(2).expand({tokens.size(0), tokens.size(1), c.hc_mult, c.dim});
  for (int l = 0; l < c.n_layers; ++l) x = block(m, layer_prefix(c, l), l, x, tokens, trace);
  return ForwardResult{head(m, "", "norm.weight", x), x};
}

torch::Tensor mtp_forward(const TrainModel& m, const torch::Tensor& hidden, const torch::Tensor& next_tokens,
                          ForwardTrace* trace) {
  const ModelConfig& c = m.config;
  if (c.n_mtp_layers == 0) throw Error("this model has no MTP block (num_nextn_predict_layers = 0)");
  const std::string p = layer_prefix(c, c.n_layers);
  Tensor e = m.p("embed.weight").index_select(0, next_tokens.flatten()).view({next_tokens.size(0), next_tokens.size(1), c.dim});
  e = fp8_linear(m, rms_norm(e, m.p(p + "enorm.weight"), c.norm_eps), p + "e_proj.weight");
  Tensor h = fp8_linear(m, rms_norm(hidden, m.p(p + "hnorm.weight"), c.norm_eps), p + "h_proj.weight");
  Tensor x = block(m, p, c.n_layers, e.unsqueeze(2) + h, next_tokens, trace);
  return head(m, p, p + "norm.weight", x);
}

}  // namespace dsv4::train
