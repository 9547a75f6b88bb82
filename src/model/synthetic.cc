// Presets and config.json of synthetic checkpoints (synthetic.h). The weights themselves are
// generated and streamed to disk in synthetic_writer.cc.
#include "model/synthetic.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace dsv4 {

namespace {

// Official per-layer compress ratios (spec §1.2), main layers only; the MTP entry (0) is
// appended separately.
int flash_ratio(int layer, int n) {
  if (layer < 2) return 0;
  if (layer == n - 1) return 4;
  return layer % 2 == 0 ? 4 : 128;
}
int pro_ratio(int layer, int n) {
  if (layer < 2) return 128;
  if (layer == n - 1) return 4;
  return layer % 2 == 0 ? 4 : 128;
}
// tiny: two window layers first (like Flash), then CSA/HCA alternating, so 6 layers hold every
// attention kind twice (an HCA layer last: its compressor state is exercised at the end).
int tiny_ratio(int layer) {
  if (layer < 2) return 0;
  return layer % 2 == 0 ? 4 : 128;
}

// The shortest decimal that reads back as `f`, as a double, so F32 fields print as "1e-06"
// rather than "9.99999997e-07".
double shortest(float f) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf - 1, f);
  *r.ptr = 0;
  return std::strtod(buf, nullptr);
}

// Fields shared by all presets (official values where they exist).
ModelConfig common_config() {
  ModelConfig c;
  c.vocab_size = 129280;  // the real V4 tokenizer, also for tiny (the synthetic model must use it)
  c.n_mtp_layers = 1;
  c.n_shared_experts = 1;
  c.n_activated_experts = 6;
  c.score_func = ScoreFunc::kSqrtSoftplus;
  c.swiglu_limit = 10.0f;
  c.window_size = 128;
  c.rope_head_dim = 64;
  c.rope_theta = 10000;
  c.compress_rope_theta = 160000;
  c.rope_factor = 16;
  c.original_seq_len = 65536;
  c.beta_fast = 32;
  c.beta_slow = 1;
  c.hc_mult = 4;
  c.hc_sinkhorn_iters = 20;
  c.hc_eps = 1e-6f;
  c.norm_eps = 1e-6f;
  c.bos_token_id = 0;
  c.eos_token_id = 1;
  c.has_expert_dtype = true;
  c.expert_format = ExpertFormat::kFp4;
  return c;
}

}  // namespace

ModelConfig preset_config(const std::string& name, int layers_override, int experts_override) {
  if (layers_override < 0 || experts_override < 0)
    throw Error(cat("preset ", name, ": --layers and --experts must be positive"));
  ModelConfig c = common_config();
  int official_layers = 0;  // 0 = no upper bound on --layers
  if (name == "tiny") {
    c.dim = 256;
    c.moe_inter_dim = 128;
    c.n_layers = 6;
    c.n_hash_layers = 2;
    c.n_heads = 4;
    c.head_dim = 128;
    c.q_lora_rank = 128;
    c.o_groups = 2;
    c.o_lora_rank = 64;
    c.n_routed_experts = 16;
    c.route_scale = 1.5f;
    c.index_n_heads = 4;
    // 128 like both official models: the indexer's exact FP4 scoring works on 128-dim blocks
    // (kernels/fp4_index.h), so 64 would send every key down the slower F32 path.
    c.index_head_dim = 128;
    c.index_topk = 8;
    // The YaRN setting (common_config) says the model was trained on original_seq_len tokens, so
    // that many positions need no extrapolation at all: enough for a coding agent's prompt.
    c.max_position_embeddings = c.original_seq_len;
  } else if (name == "flash") {
    c.dim = 4096;
    c.moe_inter_dim = 2048;
    c.n_layers = official_layers = 43;
    c.n_hash_layers = 3;
    c.n_heads = 64;
    c.head_dim = 512;
    c.q_lora_rank = 1024;
    c.o_groups = 8;
    c.o_lora_rank = 1024;
    c.n_routed_experts = 256;
    c.route_scale = 1.5f;
    c.index_n_heads = 64;
    c.index_head_dim = 128;
    c.index_topk = 512;
    c.max_position_embeddings = 1048576;
  } else if (name == "pro") {
    c.dim = 7168;
    c.moe_inter_dim = 3072;
    c.n_layers = official_layers = 61;
    c.n_hash_layers = 3;
    c.n_heads = 128;
    c.head_dim = 512;
    c.q_lora_rank = 1536;
    c.o_groups = 16;
    c.o_lora_rank = 1024;
    c.n_routed_experts = 384;
    c.route_scale = 2.5f;
    c.index_n_heads = 64;
    c.index_head_dim = 128;
    c.index_topk = 1024;
    c.max_position_embeddings = 1048576;
  } else {
    throw Error(cat("unknown preset \"", name, "\" (known: ", kSyntheticPresets, ")"));
  }
  const int full_layers = c.n_layers;
  if (layers_override > 0) {
    if (official_layers > 0 && layers_override > official_layers)
      throw Error(cat("preset ", name, " has ", official_layers, " layers; --layers ", layers_override, " exceeds it"));
    c.n_layers = layers_override;
    c.n_hash_layers = std::min(c.n_hash_layers, c.n_layers);
  }
  if (experts_override > 0) {
    if (experts_override < c.n_activated_experts)
      throw Error(cat("preset ", name, ": --experts ", experts_override, " is fewer than the ",
                      c.n_activated_experts, " experts activated per token"));
    c.n_routed_experts = experts_override;
  }
  // The first n_layers entries of the preset's full pattern ("the first N layers of the real
  // model"), then the MTP block (ratio 0, as in both official configs).
  for (int l = 0; l < c.n_layers; ++l)
    c.compress_ratios.push_back(name == "tiny" ? tiny_ratio(l) : name == "flash" ? flash_ratio(l, full_layers)
                                                                                 : pro_ratio(l, full_layers));
  c.compress_ratios.push_back(0);
  return c;
}

std::string config_json(const ModelConfig& c) {
  using ojson = nlohmann::ordered_json;
  // Integral values print as integers, like the official file ("rope_theta": 10000).
  auto num = [](double v) -> ojson {
    if (std::floor(v) == v && std::fabs(v) < 1e15) return ojson(int64_t(v));
    return ojson(v);
  };
  const char* score = c.score_func == ScoreFunc::kSqrtSoftplus ? "sqrtsoftplus"
                      : c.score_func == ScoreFunc::kSigmoid    ? "sigmoid"
                                                               : "softmax";
  // Keys in the order of the official config.json (alphabetical, compress_* last).
  ojson j;
  j["architectures"] = {"DeepseekV4ForCausalLM"};
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["expert_dtype"] = c.expert_format == ExpertFormat::kFp4 ? "fp4" : "fp8";
  j["hc_eps"] = shortest(c.hc_eps);
  j["hc_mult"] = c.hc_mult;
  j["hc_sinkhorn_iters"] = c.hc_sinkhorn_iters;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.dim;
  j["index_head_dim"] = c.index_head_dim;
  j["index_n_heads"] = c.index_n_heads;
  j["index_topk"] = c.index_topk;
  j["initializer_range"] = 0.02;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["model_type"] = "deepseek_v4";
  j["moe_intermediate_size"] = c.moe_inter_dim;
  j["n_routed_experts"] = c.n_routed_experts;
  j["n_shared_experts"] = c.n_shared_experts;
  j["norm_topk_prob"] = true;
  j["num_attention_heads"] = c.n_heads;
  j["num_experts_per_tok"] = c.n_activated_experts;
  j["num_hidden_layers"] = c.n_layers;
  j["num_hash_layers"] = c.n_hash_layers;
  j["num_key_value_heads"] = 1;
  j["num_nextn_predict_layers"] = c.n_mtp_layers;
  j["o_groups"] = c.o_groups;
  j["o_lora_rank"] = c.o_lora_rank;
  j["q_lora_rank"] = c.q_lora_rank;
  j["qk_rope_head_dim"] = c.rope_head_dim;
  j["quantization_config"] = {{"activation_scheme", "dynamic"},
                              {"fmt", "e4m3"},
                              {"quant_method", "fp8"},
                              {"scale_fmt", "ue8m0"},
                              {"weight_block_size", {128, 128}}};
  j["rms_norm_eps"] = shortest(c.norm_eps);
  if (c.original_seq_len > 0)
    j["rope_scaling"] = {{"beta_fast", num(c.beta_fast)},
                         {"beta_slow", num(c.beta_slow)},
                         {"factor", num(c.rope_factor)},
                         {"original_max_position_embeddings", c.original_seq_len},
                         {"type", "yarn"}};
  j["rope_theta"] = num(c.rope_theta);
  j["routed_scaling_factor"] = shortest(c.route_scale);
  j["scoring_func"] = score;
  j["sliding_window"] = c.window_size;
  j["swiglu_limit"] = shortest(c.swiglu_limit);
  j["tie_word_embeddings"] = false;
  j["topk_method"] = "noaux_tc";
  j["torch_dtype"] = "bfloat16";
  j["transformers_version"] = "4.57.1";
  j["use_cache"] = true;
  j["vocab_size"] = c.vocab_size;
  j["compress_rope_theta"] = num(c.compress_rope_theta);
  j["compress_ratios"] = c.compress_ratios;
  return j.dump(2) + "\n";
}

}  // namespace dsv4
