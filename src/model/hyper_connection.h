// Manifold-constrained hyper-connections (mHC, spec §4.3): hc_mult residual streams per token,
// mixed into one sub-layer input by hc_pre and updated from the sub-layer output by hc_post.
// Mirrors `hc_pre`, `hc_post`, `hc_head` and the official `hc_split_sinkhorn` kernel.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace dsv4 {

// The mixing weights hc_pre computes for one token, consumed by hc_post.
struct HcMix {
  static constexpr int kMaxHc = 16;  // config.cc bounds hc_mult
  float post[kMaxHc];                // [hc]
  float comb[kMaxHc * kMaxHc];       // [hc, hc]: comb[j·hc + k] = weight of source stream j in destination k
};

// Sinkhorn projection of raw comb logits C [hc, hc] (row softmax + eps, column normalisation,
// then iters−1 × (row, column) normalisation; eps in every denominator). In place.
void sinkhorn(float* c, int hc, int iters, float eps);

// x: [hc, dim] streams of one token → u [dim] (the sub-layer input before its norm), mix out.
// `products`: the mix products fn · x computed beforehand (hc_mix_products), or null.
void hc_pre(const ModelConfig& c, const HcWeights& w, const float* x, float* u, HcMix* mix,
            const float* products = nullptr);
// Rows [r0, r1) of the mix products fn · x of one token into m[r0 .. r1): the one large read of
// hc_pre (1.5 MB per call at Flash widths), split over threads for a decode step. r0 must be a
// multiple of 4 (kernels::dot_rows sums rows in groups of four), so any split gives the same bits.
void hc_mix_products(const ModelConfig& c, const HcWeights& w, const float* x, int64_t r0, int64_t r1, float* m);
// x: [hc, dim] streams updated in place: x'_k = post_k·f + Σ_j comb[j][k]·x_j.
void hc_post(const ModelConfig& c, const HcMix& mix, const float* f, float* x);
// Final collapse: x [hc, dim] → u [dim].
void hc_head(const ModelConfig& c, const HcHeadWeights& w, const float* x, float* u);

}  // namespace dsv4
