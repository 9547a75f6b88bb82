#include "train/optim.h"

#include <cmath>

#include "core/error.h"

namespace dsv4::train {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

bool uses_muon(const std::string& name, const torch::Tensor& t) {
  return t.dim() == 2 && ends_with(name, ".weight") && name != "embed.weight" && name != "head.weight" &&
         is_trainable(name);
}

torch::Tensor newton_schulz(const torch::Tensor& g, int steps) {
  // Quintic coefficients of Jordan et al. (2024): fast convergence of singular values to ~1.
  const double a = 3.4445, b = -4.7750, c = 2.0315;
  const bool tall = g.size(0) > g.size(1);
  torch::Tensor x = tall ? g.t() : g;
  x = x / (x.norm() + 1e-7);
  for (int i = 0; i < steps; ++i) {
    torch::Tensor A = torch::matmul(x, x.t());
    torch::Tensor B = b * A + c * torch::matmul(A, A);
    x = a * x + torch::matmul(B, x);
  }
  return tall ? x.t() : x;
}

Optimizer::Optimizer(Params* params, OptimConfig config) : params_(params), config_(config) {}

torch::Tensor& Optimizer::slot(const std::string& name, const char* which, const torch::Tensor& like) {
  const std::string key = name + "#" + which;
  auto it = state_.find(key);
  if (it == state_.end()) it = state_.emplace(key, torch::zeros_like(like)).first;
  return it->second;
}

void Optimizer::muon_update(const std::string& name, torch::Tensor& w, const torch::Tensor& g, double lr) {
  torch::Tensor& buf = slot(name, "momentum", g);
  buf.mul_(config_.momentum).add_(g);
  const torch::Tensor nesterov = g + config_.momentum * buf;
  // Liu et al. (2025): 0.2·sqrt(max(rows, cols)) gives the update the RMS of a typical AdamW
  // update, so one learning rate and weight decay serve both optimizers.
  const double scale = 0.2 * std::sqrt(double(std::max(w.size(0), w.size(1))));
  w.mul_(1.0 - lr * config_.weight_decay);
  w.add_(newton_schulz(nesterov), -lr * scale);
}

void Optimizer::adamw_update(const std::string& name, torch::Tensor& w, const torch::Tensor& g, double lr) {
  torch::Tensor& m = slot(name, "m", g);
  torch::Tensor& v = slot(name, "v", g);
  m.mul_(config_.beta1).add_(g, 1.0 - config_.beta1);
  v.mul_(config_.beta2).addcmul_(g, g, 1.0 - config_.beta2);
  const double c1 = 1.0 - std::pow(config_.beta1, double(t_)), c2 = 1.0 - std::pow(config_.beta2, double(t_));
  if (w.dim() == 2) w.mul_(1.0 - lr * config_.weight_decay);  // matrices only: not norms, biases, mixes
  w.addcdiv_(m, (v / c2).sqrt_().add_(config_.adam_eps), -lr / c1);
}

void Optimizer::step(double lr) {
  torch::NoGradGuard no_grad;
  ++t_;
  for (auto& [name, w] : params_->tensors) {
    if (!is_trainable(name) || !w.grad().defined()) continue;
    const torch::Tensor g = w.grad();
    if (config_.muon && uses_muon(name, w)) muon_update(name, w, g, lr);
    else adamw_update(name, w, g, lr);
  }
}

double clip_gradients(Params* params, double max_norm) {
  torch::NoGradGuard no_grad;
  double sq = 0;
  for (auto& [name, w] : params->tensors)
    if (w.grad().defined()) sq += w.grad().pow(2).sum().item<double>();
  const double norm = std::sqrt(sq);
  if (norm > max_norm && max_norm > 0)
    for (auto& [name, w] : params->tensors)
      if (w.grad().defined()) w.mutable_grad().mul_(max_norm / norm);
  return norm;
}

torch::Tensor balance_loss(const RouteStats& r, int64_t n_experts) {
  const int64_t S = r.scores.size(1), K = r.experts.size(2);
  torch::Tensor affinity = r.scores / r.scores.sum(-1, true);
  torch::Tensor P = affinity.mean(1);  // [B, E]
  torch::Tensor counts = torch::zeros({r.experts.size(0), n_experts}, r.scores.options())
                             .scatter_add(1, r.experts.reshape({r.experts.size(0), -1}),
                                          torch::ones({r.experts.size(0), S * K}, r.scores.options()));
  torch::Tensor f = counts * (double(n_experts) / double(K * S));
  return (f * P).sum(-1).mean();
}

void update_balance_bias(Params* params, const RouteStats& r, int64_t n_experts, double speed) {
  torch::NoGradGuard no_grad;
  torch::Tensor load = torch::bincount(r.experts.reshape(-1), {}, n_experts).to(torch::kDouble);
  torch::Tensor bias = params->at(r.bias_name);
  bias.add_((load.mean() - load).sign().to(bias.scalar_type()) * speed);
}

torch::Tensor indexer_loss(const IndexerStats& s) {
  const torch::Tensor sel = s.selected;
  const torch::Tensor rows = sel.any(-1);
  if (rows.sum().item<int64_t>() == 0) return torch::zeros({}, s.scores.options());
  const torch::Tensor logp = torch::log_softmax(s.scores.masked_fill(sel.logical_not(), -INFINITY), -1)
                                 .masked_fill(sel.logical_not(), 0.0);
  torch::Tensor target = s.attn_probs.masked_fill(sel.logical_not(), 0.0);
  target = target / target.sum(-1, true).clamp_min(1e-30);
  const torch::Tensor kl = (target * (target.clamp_min(1e-30).log() - logp)).masked_fill(sel.logical_not(), 0.0).sum(-1);
  return kl.masked_select(rows).mean();
}

double lr_at(int64_t step, int64_t total, int64_t warmup, double peak, double min_ratio) {
  if (step < warmup) return peak * double(step + 1) / double(warmup);
  const double progress = total > warmup ? double(step - warmup) / double(std::max<int64_t>(1, total - warmup - 1)) : 1.0;
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
  return peak * (min_ratio + (1.0 - min_ratio) * cosine);
}

}  // namespace dsv4::train
