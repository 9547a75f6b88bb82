// The DeepSeek-V4 forward as libtorch tensor ops with autograd (spec §4–§6), for training.
//
// It computes what the engine computes in plain numerics (golden "no-sim" mode) for whole
// sequences from position 0: a batch [B, S] of token ids is one causal prefill per row. Every
// differentiable step (hyper-connections with Sinkhorn, norms, attention with compressed KV,
// routed experts' weights, SwiGLU clamp, MTP) carries gradients; the discrete choices — the
// indexer's top-k and the router's expert selection — are taken on detached values, as in the
// reference. The dtype of the parameters (F32 or F64) is the dtype of the computation.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/config.h"
#include "train/params.h"

namespace dsv4::train {

// Per-layer rotary frequencies (the engine's tables, model/rope.h) as tensors.
struct TrainModel {
  ModelConfig config;
  Params params;
  std::vector<torch::Tensor> inv_freq;  // [n_layers + n_mtp] of [rope_head_dim / 2], F64
  // Quantization-aware: the official forward's FP8/FP4 roundings of activations, KV and indexer
  // q/k, and weights on their checkpoint grids, with straight-through gradients (qat.h). Off:
  // the engine's plain numerics.
  bool qat = false;

  TrainModel(ModelConfig c, Params p);
  torch::Dtype dtype() const;
  const torch::Tensor& p(const std::string& name) const { return params.at(name); }
};

// Routing of one score-routed MoE layer, for the balance loss and the bias update.
struct RouteStats {
  std::string bias_name;  // "layers.{i}.ffn.gate.bias" / "mtp.0.ffn.gate.bias"
  torch::Tensor scores;   // [B, S, E] sqrt(softplus) affinities (with grad)
  torch::Tensor experts;  // [B, S, K] selected expert ids
};

// The lightning indexer of one ratio-4 layer, for its training loss. Its inputs are detached:
// the indexer learns only from its own loss (as in V3.2), never steering the main model.
struct IndexerStats {
  torch::Tensor scores;      // [B, S, n_entries] index scores (with grad), −inf where not visible
  torch::Tensor attn_probs;  // [B, S, n_entries] main attention mass per entry (detached)
  torch::Tensor selected;    // [B, S, n_entries] the indexer's picks (bool)
};

struct ForwardTrace {
  std::vector<RouteStats> routes;
  // Anticipatory Routing: when set, the i-th score-routed layer met takes forced_experts[i]
  // ([B, S, K], computed ahead from older parameters) as its selection instead of its own top-k.
  std::vector<torch::Tensor> forced_experts;
  std::vector<IndexerStats> indexers;
};

struct ForwardResult {
  torch::Tensor logits;  // [B, S, V]
  torch::Tensor hidden;  // [B, S, hc, D]: output of the last main block (the head's and MTP's input)
};

// tokens: [B, S] int64. trace (optional) collects routing and indexer statistics.
ForwardResult forward(const TrainModel& m, const torch::Tensor& tokens, ForwardTrace* trace = nullptr);

// The MTP block on the main model's final hidden streams [B, S, hc, D] and the ids of the next
// tokens [B, S] (row s carries token s+1): logits [B, S, V] predicting token s+2.
torch::Tensor mtp_forward(const TrainModel& m, const torch::Tensor& hidden, const torch::Tensor& next_tokens,
                          ForwardTrace* trace = nullptr);

}  // namespace dsv4::train
