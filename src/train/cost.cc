#include "train/cost.h"

#include <algorithm>
#include <string>

#include "train/optim.h"
#include "train/params.h"

namespace dsv4::train {

namespace {

// Forward FLOP of one layer's attention cores for one sequence of S tokens (not per token).
double attention_forward_flop(const ModelConfig& c, int layer, int64_t S) {
  const int r = c.compress_ratio(layer);
  const double qk_pv = 4.0 * c.n_heads * c.head_dim;  // q·k and p·v, 2 FLOP per multiply-add
  double flop = 0;
  for (int64_t s = 0; s < S; ++s) {
    double keys = double(std::min<int64_t>(s + 1, c.window_size));
    if (r != 0) {
      const int64_t visible = (s + 1) / r;
      keys += double(r == 4 ? std::min<int64_t>(c.index_topk, visible) : visible);
      if (r == 4) flop += 2.0 * c.index_n_heads * c.index_head_dim * double(visible);  // index scores
    }
    flop += qk_pv * keys;
  }
  return flop;
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

}  // namespace

TrainCost train_cost(const ModelConfig& c, const TrainOptions& o) {
  TrainCost t;
  const bool mtp = o.mtp_weight > 0 && c.n_mtp_layers > 0;
  const double routed_share = double(c.n_activated_experts) / double(c.n_routed_experts);
  double active = 0;
  for (const ParamSpec& p : param_specs(c)) {
    if (p.name.size() >= 8 && p.name.compare(p.name.size() - 8, 8, ".tid2eid") == 0) continue;
    int64_t n = 1;
    for (int64_t d : p.shape) n *= d;
    t.params += n;
    if (!is_trainable(p.name)) continue;
    t.trainable += n;
    const bool matrix = p.shape.size() == 2;
    if (o.muon && matrix && uses_muon(p.name, torch::empty({0, 0}))) t.muon += n;
    if (!matrix || p.name == "embed.weight" || (!mtp && starts_with(p.name, "mtp."))) continue;
    if (p.name == "head.weight") active += double(n) * (mtp ? 2 : 1);
    else if (p.name.find(".ffn.experts.") != std::string::npos) active += double(n) * routed_share;
    else active += double(n);
  }
  t.active_matmul = int64_t(active);
  const int n_attn = c.n_layers + (mtp ? 1 : 0);
  double attn = 0;
  for (int l = 0; l < n_attn; ++l) attn += attention_forward_flop(c, l, o.seq_len);
  t.attention_flop = 3.0 * attn / double(o.seq_len);  // backward ≈ twice the forward
  t.flop_per_token = 6.0 * active + t.attention_flop;
  const int64_t adamw = t.trainable - t.muon;
  t.static_bytes = 4.0 * double(t.params + t.trainable + t.muon + 2 * adamw);
  return t;
}

}  // namespace dsv4::train
