// ModelConfig: the DeepSeek-V4 hyper-parameters, read from a checkpoint's config.json.
//
// Field names follow the reference `ModelArgs` (model.py); the comment after each names the
// Hugging Face key it comes from (spec §1.1). Everything is read from the file — the reference
// ModelArgs defaults are a toy model, not V4 — and validated, so the rest of the code may rely
// on the divisibilities the math needs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dsv4 {

// Attention variant of one layer, from its compress ratio (spec §1.2).
enum class AttentionKind {
  kWindow,      // ratio 0: sliding window only (SWA)
  kCompressed,  // ratio ≠ 0, ≠ 4: window + every complete compressed entry (HCA, ratio 128)
  kIndexed,     // ratio 4: window + overlapping compressor + indexer top-k (CSA)
};

// How activations are rounded (spec §3.5–§3.6). kReference is the official forward: FP8
// activation quantization before FP8/FP4 linears, the KV FP8 round trip and the indexer FP4
// round trips, with F32 activations otherwise. kPlain drops every one of those roundings.
enum class Numerics { kReference, kPlain };

enum class ScoreFunc { kSqrtSoftplus, kSigmoid, kSoftmax };

// How routed-expert weights are stored: FP4 E2M1 pairs in I8 with 1×32 UE8M0 scales (release
// checkpoints) or FP8 E4M3 with 128×128 scales.
enum class ExpertFormat { kFp4, kFp8 };

struct ModelConfig {
  int64_t vocab_size = 0;          // vocab_size
  int64_t dim = 0;                 // hidden_size
  int64_t moe_inter_dim = 0;       // moe_intermediate_size (routed and shared experts)
  int n_layers = 0;                // num_hidden_layers
  int n_mtp_layers = 0;            // num_nextn_predict_layers (0 or 1 supported)
  int n_hash_layers = 0;           // num_hash_layers: layers < this route by token id
  int n_heads = 0;                 // num_attention_heads
  int64_t head_dim = 0;            // head_dim (q, k and v)
  int64_t rope_head_dim = 0;       // qk_rope_head_dim: the LAST dims of each head are rotary
  int64_t q_lora_rank = 0;         // q_lora_rank
  int o_groups = 0;                // o_groups
  int64_t o_lora_rank = 0;         // o_lora_rank
  int n_routed_experts = 0;        // n_routed_experts
  int n_shared_experts = 0;        // n_shared_experts (must be 1)
  int n_activated_experts = 0;     // num_experts_per_tok
  ScoreFunc score_func = ScoreFunc::kSqrtSoftplus;  // scoring_func
  float route_scale = 1.0f;        // routed_scaling_factor
  float swiglu_limit = 0.0f;       // swiglu_limit (0 = no clamp)
  int window_size = 0;             // sliding_window
  std::vector<int> compress_ratios;  // compress_ratios: n_layers + n_mtp_layers entries
  double rope_theta = 0;           // rope_theta (ratio-0 layers, no YaRN)
  double compress_rope_theta = 0;  // compress_rope_theta (ratio ≠ 0 layers, with YaRN)
  double rope_factor = 1;          // rope_scaling.factor
  int64_t original_seq_len = 0;    // rope_scaling.original_max_position_embeddings (0 = no YaRN)
  double beta_fast = 32, beta_slow = 1;  // rope_scaling.beta_fast / beta_slow
  int index_n_heads = 0;           // index_n_heads
  int64_t index_head_dim = 0;      // index_head_dim
  int index_topk = 0;              // index_topk
  int hc_mult = 0;                 // hc_mult: number of residual streams
  int hc_sinkhorn_iters = 0;       // hc_sinkhorn_iters
  float hc_eps = 0;                // hc_eps
  float norm_eps = 1e-6f;          // rms_norm_eps
  int64_t max_position_embeddings = 0;  // max_position_embeddings (context limit)
  int bos_token_id = 0, eos_token_id = 1;
  bool has_expert_dtype = false;   // expert_dtype present in the file
  ExpertFormat expert_format = ExpertFormat::kFp4;  // from expert_dtype; the loader may refine

  int compress_ratio(int layer) const { return compress_ratios.at(size_t(layer)); }
  AttentionKind attention_kind(int layer) const;
  bool is_hash_layer(int layer) const { return layer < n_hash_layers; }
  int64_t nope_head_dim() const { return head_dim - rope_head_dim; }
  int hc_mix_dim() const { return (2 + hc_mult) * hc_mult; }  // M: pre, post and comb weights
};

// Parses config.json text; `origin` labels errors. Throws Error on a missing or ill-typed field
// or a value the math cannot use (each message names the field).
ModelConfig parse_config(const std::string& json_text, const std::string& origin);
ModelConfig load_config(const std::string& model_dir);

const char* attention_kind_name(AttentionKind k);

}  // namespace dsv4
