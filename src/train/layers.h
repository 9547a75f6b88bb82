// The pieces of the training forward (forward.h), shared by attention.cc and forward.cc and
// exposed for the per-component gradient tests. Shapes: B batch, S sequence, D model width.
#pragma once

#include <torch/torch.h>

#include <string>

#include "train/forward.h"

namespace dsv4::train {

using torch::Tensor;

// y = x · Wᵀ (checkpoint matrices are [out, in]).
inline Tensor project(const Tensor& x, const Tensor& w) { return torch::matmul(x, w.t()); }

// x · Wᵀ for a weight stored as FP8 (fp8_linear; input_quant false for wo_a) or FP4 (routed
// experts in FP4 checkpoints): with QAT, x is FP8-quantized in blocks of 128 and W rounded to
// its grid; otherwise project().
Tensor fp8_linear(const TrainModel& m, const Tensor& x, const std::string& weight, bool input_quant = true);
Tensor fp4_linear(const TrainModel& m, const Tensor& x, const std::string& weight);
// With QAT: the FP8 round trip (blocks of 64) of the non-rope dims of KV vectors.
Tensor kv_sim(const TrainModel& m, const Tensor& kv);

// Ids of the k largest scores along the last dim, ties to the lower id (the engine's rule:
// indexer scores tie exactly where relu zeroes every head).
Tensor top_k(const Tensor& scores, int64_t k);

// RMSNorm over the last dim; weight may be undefined (weightless, the per-head q norm).
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps);

// cos/sin [n, half] at `positions` (int64 [n]) from inv_freq: angle = f32(pos) · inv_freq as the
// engine computes it (in F64 for F64 models).
struct Rope {
  Tensor cos, sin;  // [n, half]
};
Rope rope_at(const Tensor& inv_freq, const Tensor& positions, torch::Dtype dtype);
// Rotates the last 2·half dims of x [..., n, heads?, width] in interleaved pairs. `heads`: x has
// a head axis between the position axis and the last one. inverse: by −angle.
Tensor apply_rope(const Tensor& x, const Rope& r, bool heads, bool inverse = false);

// y = x · H_n · n^−½ with the Sylvester Hadamard matrix (the indexer's rotation).
Tensor hadamard(const Tensor& x);

// The compressor of one layer (`prefix` "layers.{i}.attn.compressor." or the indexer's): entries
// [B, S / ratio, d], normalized and rotated to their first position; indexer keys also Hadamard.
Tensor compress(const TrainModel& m, const std::string& prefix, int layer, int ratio, const Tensor& x,
                bool index_keys);

// Attention sub-layer of block `layer` (`prefix` "layers.{i}.attn." / "mtp.0.attn.") on its
// normalized input x [B, S, D]; returns [B, S, D] (after wo_b).
Tensor attention(const TrainModel& m, const std::string& prefix, int layer, const Tensor& x, ForwardTrace* trace);

// MoE sub-layer on x [B, S, D] with the block's input tokens (hash routing).
Tensor moe(const TrainModel& m, const std::string& prefix, int layer, const Tensor& x, const Tensor& tokens,
           ForwardTrace* trace);

// SwiGLU with the clamp: silu(min(g, L)) · clamp(v, −L, L) (L = 0: no clamp).
Tensor swiglu(const Tensor& g, const Tensor& v, double limit);

// Hyper-connections (spec §4.3). pre-mix: the sub-layer input u [B, S, D] and the mix.
struct HcMix {
  Tensor post;  // [B, S, hc]
  Tensor comb;  // [B, S, hc, hc] (after Sinkhorn): comb[j][k] mixes stream j into k
};
Tensor hc_pre(const TrainModel& m, const std::string& prefix, const Tensor& x, HcMix* mix);
Tensor hc_post(const Tensor& f, const Tensor& x, const HcMix& mix);
Tensor sinkhorn(const Tensor& logits, int iters, double eps);
// The final collapse of the streams and the head: logits [B, S, V].
Tensor head(const TrainModel& m, const std::string& prefix, const std::string& norm_name, const Tensor& x);

// One transformer block on the streams x [B, S, hc, D].
Tensor block(const TrainModel& m, const std::string& prefix, int layer, const Tensor& x, const Tensor& tokens,
             ForwardTrace* trace);

}  // namespace dsv4::train
