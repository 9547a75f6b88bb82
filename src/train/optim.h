// Optimizers and the auxiliary training terms of DeepSeek-V4 (seed: "Training — from the tech
// report"): Muon for the hidden matrices, AdamW for the rest; the aux-loss-free balancing bias
// update, the sequence-wise balance loss and the lightning indexer's distillation loss.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "train/forward.h"

namespace dsv4::train {

struct OptimConfig {
  double lr = 3e-3;            // peak learning rate of both optimizers (Muon's update is RMS-matched)
  double weight_decay = 0.1;   // decoupled, on matrices (Muon's and the embedding / head)
  double momentum = 0.95;      // Muon (Nesterov)
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8;
  bool muon = true;            // false: AdamW for everything (the ablation)
};

// Muon takes the 2-D weight matrices of the blocks; embedding, head, norms, hyper-connection
// mixes, sinks and ape stay with AdamW.
bool uses_muon(const std::string& name, const torch::Tensor& t);

// Newton–Schulz iteration (5 steps, quintic coefficients) towards the nearest semi-orthogonal
// matrix of g (g normalized by its Frobenius norm first).
torch::Tensor newton_schulz(const torch::Tensor& g, int steps = 5);

class Optimizer {
 public:
  Optimizer(Params* params, OptimConfig config);
  // One update with learning rate `lr` from the gradients held by the parameters.
  void step(double lr);
  int64_t steps_taken() const { return t_; }
  // Moment buffers by "<param>#<slot>" (for the training state file).
  std::map<std::string, torch::Tensor>& state() { return state_; }
  void set_steps_taken(int64_t t) { t_ = t; }

 private:
  void muon_update(const std::string& name, torch::Tensor& w, const torch::Tensor& g, double lr);
  void adamw_update(const std::string& name, torch::Tensor& w, const torch::Tensor& g, double lr);
  torch::Tensor& slot(const std::string& name, const char* which, const torch::Tensor& like);
  Params* params_;
  OptimConfig config_;
  std::map<std::string, torch::Tensor> state_;
  int64_t t_ = 0;
};

// Scales every gradient so their global L2 norm is at most max_norm; returns the norm before.
double clip_gradients(Params* params, double max_norm);

// Sequence-wise balance loss (V3 §2.1.2): Σ_i f_i P_i per sequence, averaged over the batch,
// with f_i = E/(K·S) · (tokens of the sequence routed to i), P_i = mean over the sequence of the
// normalized affinity s_i / Σ_j s_j.
torch::Tensor balance_loss(const RouteStats& r, int64_t n_experts);

// Aux-loss-free balancing: bias_i += speed · sign(mean load − load_i) over the batch's routing.
void update_balance_bias(Params* params, const RouteStats& r, int64_t n_experts, double speed);

// KL(main attention mass over the picked entries ‖ softmax of the index scores over them),
// averaged over the positions that picked any entry (V3.2's indexer training objective).
torch::Tensor indexer_loss(const IndexerStats& s);

// Linear warm-up, then cosine decay to min_ratio · peak at the last step.
double lr_at(int64_t step, int64_t total, int64_t warmup, double peak, double min_ratio);

}  // namespace dsv4::train
