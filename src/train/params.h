// The trainer's parameters: every checkpoint tensor (spec §2) as one dense torch tensor under its
// checkpoint name, dequantized to the training dtype (F32 or F64). Quantized matrices have their
// logical shape ([out, in], FP4 unpacked); `.scale` tensors do not exist here — they belong to the
// stored format, not to the model.
//
// Two entries are buffers, not trained by gradients: `ffn.gate.bias` (the balancing bias, moved
// by the aux-loss-free update) and `ffn.gate.tid2eid` (I64 hash-routing table).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/config.h"

namespace dsv4::train {

struct Params {
  std::map<std::string, torch::Tensor> tensors;  // checkpoint name → tensor (sorted: deterministic order)

  const torch::Tensor& at(const std::string& name) const;  // throws Error naming the tensor
  bool has(const std::string& name) const { return tensors.count(name) != 0; }
};

// Whether gradient descent trains this entry (false for the balancing bias and tid2eid).
bool is_trainable(const std::string& name);

// The logical (dequantized) names and shapes a config implies, in checkpoint order.
struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<ParamSpec> param_specs(const ModelConfig& c);

// Fresh parameters for training from scratch, a pure function of (config, seed, dtype).
Params init_params(const ModelConfig& c, uint64_t seed, torch::Dtype dtype);

// Every tensor of the checkpoint in `dir`, dequantized exactly (FP8/FP4 with their block
// scales, BF16) to `dtype`; the checkpoint's inventory is validated first (Error on mismatch).
Params load_params(const std::string& dir, const ModelConfig& c, torch::Dtype dtype);

// Sets requires_grad on every trainable entry.
void enable_grad(Params* p);

}  // namespace dsv4::train
