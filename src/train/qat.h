// Quantization-aware training (spec §3.5–§3.6, golden README §5 "reference numerics"): the
// roundings of the official forward as fake quantization with straight-through gradients
// (forward rounds, backward passes the gradient unchanged). With TrainModel::qat off every
// function here is the identity.
#pragma once

#include <torch/torch.h>

namespace dsv4::train {

// Round-to-nearest-even onto the E4M3 / E2M1 grids (saturating at ±448 / ±6), no scaling.
torch::Tensor round_e4m3(const torch::Tensor& v);
torch::Tensor round_e2m1(const torch::Tensor& v);

// act_quant round trips along the last dim in blocks of `block`: power-of-two scale
// 2^ceil(log2(amax / 448)) (amax ≥ 1e-4), FP8 (fp8_sim) or 2^ceil(log2(amax / 6)) (amax ≥
// 6·2^-126), FP4 (fp4_sim). Straight-through gradients.
torch::Tensor fp8_sim(const torch::Tensor& x, int64_t block);
torch::Tensor fp4_sim(const torch::Tensor& x, int64_t block);

// Weights on their checkpoint grids: FP8 with one scale per 128×128 block, FP4 with one per
// 1×32 (routed experts). Straight-through gradients.
torch::Tensor fp8_weight_sim(const torch::Tensor& w);
torch::Tensor fp4_weight_sim(const torch::Tensor& w);

}  // namespace dsv4::train
