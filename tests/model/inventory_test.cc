// The tensor inventory derived from the official V4-Flash and V4-Pro config.json values (spec
// §1.2) must match the released checkpoints (spec §2.2): total counts, which layers carry which
// optional tensors, and concrete shapes. Needs no checkpoint: the configs are written out here.
#include "model/inventory.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/config.h"

namespace dsv4 {
namespace {

using Shape = std::vector<int64_t>;

// Official HF config.json values (spec §1.1 key names, §1.2 values). compress_ratios: layers
// 0,1 → 0, then 2..41 alternate 4,128, layer 42 → 4, MTP → 0 (44 entries).
const char* const kFlashConfig = R"({
  "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
  "vocab_size": 129280, "hidden_size": 4096, "moe_intermediate_size": 2048,
  "num_hidden_layers": 43, "num_nextn_predict_layers": 1, "num_hash_layers": 3,
  "num_attention_heads": 64, "num_key_value_heads": 1, "head_dim": 512, "qk_rope_head_dim": 64,
  "q_lora_rank": 1024, "o_groups": 8, "o_lora_rank": 1024,
  "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 6,
  "scoring_func": "sqrtsoftplus", "routed_scaling_factor": 1.5, "norm_topk_prob": true, "topk_method": "noaux_tc",
  "swiglu_limit": 10.0, "sliding_window": 128,
  "rope_theta": 10000, "compress_rope_theta": 160000,
  "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
                   "beta_fast": 32, "beta_slow": 1},
  "index_n_heads": 64, "index_head_dim": 128, "index_topk": 512,
  "hc_mult": 4, "hc_sinkhorn_iters": 20, "hc_eps": 1e-06, "rms_norm_eps": 1e-06,
  "max_position_embeddings": 1048576, "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": false,
  "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                          "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
  "expert_dtype": "fp4", "torch_dtype": "bfloat16",
  "compress_ratios": [0, 0, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128,
                      4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 0]
})";

// Pro: layers 0,1 → 128, 2..59 alternate 4,128, layer 60 → 4, MTP → 0 (62 entries). No
// expert_dtype, as in the HF Pro config dump (spec §1.1 trap): experts default to FP4.
const char* const kProConfig = R"({
  "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
  "vocab_size": 129280, "hidden_size": 7168, "moe_intermediate_size": 3072,
  "num_hidden_layers": 61, "num_nextn_predict_layers": 1, "num_hash_layers": 3,
  "num_attention_heads": 128, "num_key_value_heads": 1, "head_dim": 512, "qk_rope_head_dim": 64,
  "q_lora_rank": 1536, "o_groups": 16, "o_lora_rank": 1024,
  "n_routed_experts": 384, "n_shared_experts": 1, "num_experts_per_tok": 6,
  "scoring_func": "sqrtsoftplus", "routed_scaling_factor": 2.5, "norm_topk_prob": true, "topk_method": "noaux_tc",
  "swiglu_limit": 10.0, "sliding_window": 128,
  "rope_theta": 10000, "compress_rope_theta": 160000,
  "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
                   "beta_fast": 32, "beta_slow": 1},
  "index_n_heads": 64, "index_head_dim": 128, "index_topk": 1024,
  "hc_mult": 4, "hc_sinkhorn_iters": 20, "hc_eps": 1e-06, "rms_norm_eps": 1e-06,
  "max_position_embeddings": 1048576, "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": false,
  "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                          "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
  "torch_dtype": "bfloat16",
  "compress_ratios": [128, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128,
                      4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128,
                      4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 0]
})";

struct Inventory {
  ModelConfig config;
  std::map<std::string, TensorSpec> by_name;
  size_t count = 0;

  explicit Inventory(const char* json) : config(parse_config(json, "official/config.json")) {
    for (TensorSpec& s : expected_tensors(config)) {
      ++count;
      by_name.emplace(s.name, std::move(s));
    }
  }
  // Number of tensors whose name starts with `prefix` and ends with `suffix`.
  int count_matching(const std::string& prefix, const std::string& suffix) const {
    int n = 0;
    for (const auto& [name, _] : by_name)
      if (name.rfind(prefix, 0) == 0 && name.size() >= suffix.size() &&
          name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
        ++n;
    return n;
  }
  // Layers (main, by index) holding tensor layers.{i}.<suffix>.
  std::vector<int> layers_with(const std::string& suffix) const {
    std::vector<int> out;
    for (int l = 0; l < config.n_layers; ++l)
      if (by_name.count("layers." + std::to_string(l) + "." + suffix)) out.push_back(l);
    return out;
  }
  void expect(const std::string& name, DType dtype, const Shape& shape) const {
    auto it = by_name.find(name);
    ASSERT_NE(it, by_name.end()) << name;
    EXPECT_EQ(dtype_name(it->second.dtype), dtype_name(dtype)) << name;
    EXPECT_EQ(it->second.shape, shape) << name;
  }
};

std::vector<int> range(int from, int to, int step = 1) {
  std::vector<int> v;
  for (int i = from; i < to; i += step) v.push_back(i);
  return v;
}

TEST(InventoryTest, FlashConfigValues) {
  ModelConfig c = parse_config(kFlashConfig, "flash/config.json");
  EXPECT_EQ(c.compress_ratios.size(), 44u);
  EXPECT_EQ(c.attention_kind(0), AttentionKind::kWindow);
  EXPECT_EQ(c.attention_kind(2), AttentionKind::kIndexed);
  EXPECT_EQ(c.attention_kind(41), AttentionKind::kCompressed);
  EXPECT_EQ(c.attention_kind(42), AttentionKind::kIndexed);
  EXPECT_EQ(c.attention_kind(43), AttentionKind::kWindow);  // MTP
  EXPECT_EQ(c.hc_mix_dim(), 24);
  EXPECT_EQ(c.nope_head_dim(), 448);
  EXPECT_TRUE(c.has_expert_dtype);
  EXPECT_EQ(c.expert_format, ExpertFormat::kFp4);
}

TEST(InventoryTest, FlashCountsMatchTheOfficialIndex) {
  Inventory inv(kFlashConfig);
  EXPECT_EQ(inv.count, 69187u);
  EXPECT_EQ(inv.by_name.size(), inv.count) << "duplicate names";
  // Spec §2.2 counts [ckpt]: compressor on 41 layers, indexer on 21, gate.bias on 40 + mtp.0,
  // tid2eid on layers 0,1,2 only, 43×256×3 routed expert weights (+ as many scales).
  std::vector<int> compressed = range(2, 43), indexed = range(2, 43, 2);
  EXPECT_EQ(inv.layers_with("attn.compressor.wkv.weight"), compressed);
  EXPECT_EQ(inv.layers_with("attn.indexer.wq_b.weight"), indexed);
  EXPECT_EQ(inv.count_matching("layers.", ".attn.indexer.compressor.ape"), 21);
  EXPECT_EQ(inv.layers_with("ffn.gate.bias"), range(3, 43));
  EXPECT_EQ(inv.layers_with("ffn.gate.tid2eid"), (std::vector<int>{0, 1, 2}));
  EXPECT_TRUE(inv.by_name.count("mtp.0.ffn.gate.bias"));
  EXPECT_FALSE(inv.by_name.count("mtp.0.ffn.gate.tid2eid"));
  EXPECT_EQ(inv.count_matching("layers.", "experts.0.w1.weight"), 43);
  int expert_weights = 0, expert_scales = 0;
  for (const auto& [name, s] : inv.by_name)
    if (name.rfind("layers.", 0) == 0 && name.find(".ffn.experts.") != std::string::npos)
      ++(name.ends_with(".weight") ? expert_weights : expert_scales);
  EXPECT_EQ(expert_weights, 43 * 256 * 3);
  EXPECT_EQ(expert_scales, 43 * 256 * 3);
  // The MTP block has no compressor/indexer and no embed/head of its own.
  EXPECT_EQ(inv.count_matching("mtp.0.", ".compressor.ape"), 0);
  EXPECT_EQ(inv.count_matching("mtp.", "embed.weight") + inv.count_matching("mtp.", "head.weight"), 0);
}

TEST(InventoryTest, FlashConcreteShapes) {
  Inventory inv(kFlashConfig);
  const std::string a = "layers.2.attn.", f = "layers.5.ffn.";
  inv.expect("embed.weight", DType::BF16, {129280, 4096});
  inv.expect("head.weight", DType::BF16, {129280, 4096});
  inv.expect("hc_head_fn", DType::F32, {4, 16384});
  inv.expect("hc_head_scale", DType::F32, {1});
  inv.expect("layers.0.hc_attn_fn", DType::F32, {24, 16384});
  inv.expect("layers.0.hc_ffn_scale", DType::F32, {3});
  inv.expect(a + "attn_sink", DType::F32, {64});
  inv.expect(a + "wq_a.weight", DType::F8_E4M3, {1024, 4096});
  inv.expect(a + "wq_a.scale", DType::F8_E8M0, {8, 32});
  inv.expect(a + "wq_b.weight", DType::F8_E4M3, {32768, 1024});
  inv.expect(a + "wq_b.scale", DType::F8_E8M0, {256, 8});
  inv.expect(a + "wkv.weight", DType::F8_E4M3, {512, 4096});
  inv.expect(a + "wkv.scale", DType::F8_E8M0, {4, 32});
  inv.expect(a + "wo_a.weight", DType::F8_E4M3, {8192, 4096});
  inv.expect(a + "wo_a.scale", DType::F8_E8M0, {64, 32});
  inv.expect(a + "wo_b.weight", DType::F8_E4M3, {4096, 8192});
  inv.expect(a + "wo_b.scale", DType::F8_E8M0, {32, 64});
  inv.expect(a + "compressor.wkv.weight", DType::BF16, {1024, 4096});  // ratio 4: coff = 2
  inv.expect(a + "compressor.ape", DType::F32, {4, 1024});
  inv.expect("layers.3.attn.compressor.ape", DType::F32, {128, 512});  // ratio 128
  inv.expect("layers.3.attn.compressor.wgate.weight", DType::BF16, {512, 4096});
  inv.expect(a + "indexer.wq_b.weight", DType::F8_E4M3, {8192, 1024});
  inv.expect(a + "indexer.wq_b.scale", DType::F8_E8M0, {64, 8});
  inv.expect(a + "indexer.weights_proj.weight", DType::BF16, {64, 4096});
  inv.expect(a + "indexer.compressor.wkv.weight", DType::BF16, {256, 4096});
  inv.expect(a + "indexer.compressor.ape", DType::F32, {4, 256});
  inv.expect(a + "indexer.compressor.norm.weight", DType::BF16, {128});
  inv.expect("layers.0.ffn.gate.tid2eid", DType::I64, {129280, 6});
  inv.expect(f + "gate.weight", DType::BF16, {256, 4096});
  inv.expect(f + "gate.bias", DType::F32, {256});
  inv.expect(f + "experts.255.w1.weight", DType::I8, {2048, 2048});
  inv.expect(f + "experts.255.w1.scale", DType::F8_E8M0, {2048, 128});
  inv.expect(f + "experts.0.w3.weight", DType::I8, {2048, 2048});
  inv.expect(f + "experts.0.w2.weight", DType::I8, {4096, 1024});
  inv.expect(f + "experts.0.w2.scale", DType::F8_E8M0, {4096, 64});
  inv.expect(f + "shared_experts.w1.weight", DType::F8_E4M3, {2048, 4096});
  inv.expect(f + "shared_experts.w1.scale", DType::F8_E8M0, {16, 32});
  inv.expect(f + "shared_experts.w2.weight", DType::F8_E4M3, {4096, 2048});
  inv.expect("mtp.0.e_proj.weight", DType::F8_E4M3, {4096, 4096});
  inv.expect("mtp.0.h_proj.scale", DType::F8_E8M0, {32, 32});
  inv.expect("mtp.0.hc_head_fn", DType::F32, {4, 16384});
  inv.expect("mtp.0.enorm.weight", DType::BF16, {4096});
}

TEST(InventoryTest, ProCountsMatchTheOfficialTable) {
  Inventory inv(kProConfig);
  EXPECT_FALSE(inv.config.has_expert_dtype);
  EXPECT_EQ(inv.count, 145116u);
  EXPECT_EQ(inv.by_name.size(), inv.count) << "duplicate names";
  // Every main layer is compressed (no pure sliding-window layer); CSA on the even layers 2..60.
  EXPECT_EQ(inv.layers_with("attn.compressor.wkv.weight"), range(0, 61));
  EXPECT_EQ(inv.layers_with("attn.indexer.wq_b.weight"), range(2, 61, 2));
  EXPECT_EQ(inv.layers_with("ffn.gate.tid2eid"), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(inv.layers_with("ffn.gate.bias"), range(3, 61));
  EXPECT_EQ(inv.count_matching("layers.", "experts.383.w2.scale"), 61);
}

TEST(InventoryTest, ProConcreteShapes) {
  Inventory inv(kProConfig);
  const std::string a = "layers.4.attn.", f = "layers.7.ffn.";
  inv.expect("embed.weight", DType::BF16, {129280, 7168});
  inv.expect("hc_head_fn", DType::F32, {4, 28672});
  inv.expect("layers.0.hc_attn_fn", DType::F32, {24, 28672});
  inv.expect(a + "wq_a.weight", DType::F8_E4M3, {1536, 7168});
  inv.expect(a + "wq_a.scale", DType::F8_E8M0, {12, 56});
  inv.expect(a + "wq_b.weight", DType::F8_E4M3, {65536, 1536});
  inv.expect(a + "wq_b.scale", DType::F8_E8M0, {512, 12});
  inv.expect(a + "wkv.weight", DType::F8_E4M3, {512, 7168});
  inv.expect(a + "wkv.scale", DType::F8_E8M0, {4, 56});
  inv.expect(a + "wo_a.weight", DType::F8_E4M3, {16384, 4096});
  inv.expect(a + "wo_a.scale", DType::F8_E8M0, {128, 32});
  inv.expect(a + "wo_b.weight", DType::F8_E4M3, {7168, 16384});
  inv.expect(a + "wo_b.scale", DType::F8_E8M0, {56, 128});
  inv.expect(a + "indexer.wq_b.weight", DType::F8_E4M3, {8192, 1536});
  inv.expect(a + "indexer.weights_proj.weight", DType::BF16, {64, 7168});
  inv.expect("layers.0.attn.compressor.ape", DType::F32, {128, 512});
  inv.expect(f + "experts.0.w1.weight", DType::I8, {3072, 3584});
  inv.expect(f + "experts.0.w1.scale", DType::F8_E8M0, {3072, 224});
  inv.expect(f + "experts.383.w2.weight", DType::I8, {7168, 1536});
  inv.expect(f + "experts.383.w2.scale", DType::F8_E8M0, {7168, 96});
  inv.expect(f + "shared_experts.w3.weight", DType::F8_E4M3, {3072, 7168});
  inv.expect(f + "shared_experts.w3.scale", DType::F8_E8M0, {24, 56});
  inv.expect("mtp.0.ffn.gate.bias", DType::F32, {384});
}

TEST(InventoryTest, Fp8ExpertsChangeOnlyTheExpertTensors) {
  std::string text = kFlashConfig;
  text.replace(text.find("\"fp4\""), 5, "\"fp8\"");
  Inventory inv(text.c_str());
  EXPECT_EQ(inv.count, 69187u);
  inv.expect("layers.5.ffn.experts.0.w1.weight", DType::F8_E4M3, {2048, 4096});
  inv.expect("layers.5.ffn.experts.0.w1.scale", DType::F8_E8M0, {16, 32});
}

}  // namespace
}  // namespace dsv4
