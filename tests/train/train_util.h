// Helpers of the trainer tests: a tiny config with every layer kind, F64 parameters.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "train/forward.h"

namespace dsv4::train::test {

// Layers: window, CSA (ratio 4, indexer), HCA (ratio 8), window; one hash layer; MTP. Widths
// are small but keep every divisibility the math needs (Hadamard: power-of-two index dims).
inline ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 48;
  c.dim = 32;
  c.moe_inter_dim = 32;  // FP4 export: multiples of 32
  c.n_layers = 4;
  c.n_mtp_layers = 1;
  c.n_hash_layers = 1;
  c.n_heads = 2;
  c.head_dim = 16;
  c.rope_head_dim = 8;
  c.q_lora_rank = 16;
  c.o_groups = 2;
  c.o_lora_rank = 8;
  c.n_routed_experts = 4;
  c.n_shared_experts = 1;
  c.n_activated_experts = 2;
  c.route_scale = 1.5f;
  c.swiglu_limit = 1.0f;  // small, so the clamp is active on some values
  c.window_size = 8;
  c.compress_ratios = {0, 4, 8, 0, 0};
  c.rope_theta = 10000;
  c.compress_rope_theta = 160000;
  c.rope_factor = 16;
  c.original_seq_len = 64;
  c.index_n_heads = 2;
  c.index_head_dim = 16;
  c.index_topk = 2;
  c.hc_mult = 4;
  c.hc_sinkhorn_iters = 20;
  c.hc_eps = 1e-6f;
  c.norm_eps = 1e-6f;
  c.max_position_embeddings = 256;
  return c;
}

// The smallest layout the engine loads (its FP8 block divisibilities): window, CSA, HCA
// (ratio 16), window, MTP; one hash layer.
inline ModelConfig micro_config() {
  ModelConfig c = tiny_config();
  c.vocab_size = 300;
  c.dim = 128;
  c.moe_inter_dim = 128;
  c.head_dim = 128;
  c.rope_head_dim = 64;
  c.q_lora_rank = 128;
  c.o_lora_rank = 64;
  c.index_head_dim = 64;
  c.index_topk = 4;
  c.window_size = 32;
  c.compress_ratios = {0, 4, 16, 0, 0};
  c.swiglu_limit = 10.0f;
  c.original_seq_len = 65536;
  c.beta_fast = 32;
  c.beta_slow = 1;
  c.has_expert_dtype = true;
  return c;
}

// A learnable stream: mostly t → (5t + 3) mod V, with one random token in eight.
inline std::vector<int32_t> learnable_stream(int64_t n, int32_t V) {
  std::vector<int32_t> out{1};
  uint64_t x = 12345;
  for (int64_t i = 1; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    out.push_back((x >> 60) == 0 ? int32_t((x >> 20) % uint64_t(V)) : (5 * out.back() + 3) % V);
  }
  return out;
}

}  // namespace dsv4::train::test
