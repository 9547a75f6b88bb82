// Attention of one query token over a gathered set of KV rows, with a per-head sink
// (the official `sparse_attn` kernel, spec §4.4.7).
//
// K = V: one shared KV vector per key (head_dim wide) serves every query head. The sink enters
// the softmax denominator only, not the running max: o_h = Σ e^(ℓ_i−μ)·kv_i / (Σ e^(ℓ_i−μ) + e^(sink_h−μ)).
#pragma once

#include <cstdint>

namespace dsv4::kernels {

struct SparseAttentionArgs {
  const float* q = nullptr;            // [n_heads, head_dim]
  const float* const* kv = nullptr;    // n_kv pointers to [head_dim] rows
  int64_t n_kv = 0;
  const float* sink = nullptr;         // [n_heads]
  int n_heads = 0;
  int64_t head_dim = 0;
  float softmax_scale = 0;             // head_dim^-0.5
  float* out = nullptr;                // [n_heads, head_dim]
  float* scratch = nullptr;            // [n_heads, n_kv] logits workspace
};

// The active ISA's kernel (kernels/isa.h).
void sparse_attention(const SparseAttentionArgs& a);
// The scalar twin, summing in plain index order.
void sparse_attention_reference(const SparseAttentionArgs& a);

}  // namespace dsv4::kernels
