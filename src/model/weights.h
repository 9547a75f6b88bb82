// The model's weights as named fields mirroring the checkpoint (spec §2), bound once at load.
//
// Matrices stay in their stored format inside the file mapping (`Linear` views); only small
// vectors — norm weights, biases, hyper-connection parameters, sinks, ape — are converted to
// F32 vectors at load. Binding first checks the full tensor inventory derived from the config
// (inventory.h), so a bound `Weights` is complete and correctly shaped.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "kernels/linear.h"
#include "model/config.h"

namespace dsv4 {

using Vec = std::vector<float>;

// hc_{attn,ffn}_{fn,base,scale}: the mixing parameters of one hyper-connection (spec §4.3).
struct HcWeights {
  Vec fn;     // [M = (2+hc)·hc, hc·dim]
  Vec base;   // [M]
  Vec scale;  // [3]: pre, post, comb
};

// hc_head_{fn,base,scale}: the final collapse of the hc streams into one.
struct HcHeadWeights {
  Vec fn;     // [hc, hc·dim]
  Vec base;   // [hc]
  Vec scale;  // [1]
};

// Mirrors the reference `Compressor` (main: head_dim wide; indexer: index_head_dim wide).
struct CompressorWeights {
  int ratio = 0;         // r: tokens pooled per entry
  bool overlap = false;  // r == 4: entries pool the previous block too (coff = 2)
  int64_t head_dim = 0;  // d: width of one compressed entry
  Linear wkv;            // BF16 [coff·d, dim]
  Linear wgate;          // BF16 [coff·d, dim]
  Vec ape;               // [r, coff·d] added to the gate logits by position in block
  Vec norm;              // [d]
};

// Mirrors the reference `Indexer` (ratio-4 layers).
struct IndexerWeights {
  Linear wq_b;                   // FP8 [index_n_heads·index_head_dim, q_lora_rank]
  Linear weights_proj;           // BF16 [index_n_heads, dim]
  CompressorWeights compressor;  // ratio 4, d = index_head_dim
};

// Mirrors the reference `Attention`.
struct AttentionWeights {
  Vec attn_sink;  // [n_heads]
  Linear wq_a;    // FP8 [q_lora_rank, dim]
  Vec q_norm;     // [q_lora_rank]
  Linear wq_b;    // FP8 [n_heads·head_dim, q_lora_rank]
  Linear wkv;     // FP8 [head_dim, dim]: one K=V head
  Vec kv_norm;    // [head_dim]
  Linear wo_a;    // FP8 [o_groups·o_lora_rank, n_heads·head_dim/o_groups] (reference: BF16, no act quant)
  Linear wo_b;    // FP8 [dim, o_groups·o_lora_rank]
  std::unique_ptr<CompressorWeights> compressor;  // ratio ≠ 0 only
  std::unique_ptr<IndexerWeights> indexer;        // ratio 4 only
};

// One SwiGLU expert: w1 = gate, w3 = up, w2 = down.
struct ExpertWeights {
  Linear w1;  // [moe_inter_dim, dim]   routed: FP4 (I8 pairs); shared: FP8
  Linear w3;  // [moe_inter_dim, dim]
  Linear w2;  // [dim, moe_inter_dim]
};

// Mirrors the reference `MoE` (+ its `Gate`).
struct MoeWeights {
  Linear gate;                 // BF16 [n_routed_experts, dim], used in F32
  Vec bias;                    // [n_routed_experts]: score-routed layers (selection only)
  std::vector<int32_t> tid2eid;  // [vocab, n_activated]: hash layers (I64 in the file)
  std::vector<ExpertWeights> experts;  // [n_routed_experts]
  ExpertWeights shared;
};

// Mirrors the reference `Block`.
struct BlockWeights {
  int layer_id = 0;  // index into compress_ratios (n_layers for the MTP block)
  Vec attn_norm;     // [dim]
  Vec ffn_norm;      // [dim]
  HcWeights hc_attn, hc_ffn;
  AttentionWeights attn;
  MoeWeights ffn;
};

// Mirrors the reference `MTPBlock`: a block plus its input projections and own head mix.
struct MtpWeights {
  Linear e_proj;  // FP8 [dim, dim]
  Linear h_proj;  // FP8 [dim, dim]
  Vec enorm;      // [dim]
  Vec hnorm;      // [dim]
  Vec norm;       // [dim]: the MTP's pre-head norm
  HcHeadWeights hc_head;
  BlockWeights block;
};

struct Weights {
  Linear embed;  // BF16 [vocab, dim]
  Linear head;   // BF16 [vocab, dim], used in F32
  Vec norm;      // [dim]
  HcHeadWeights hc_head;
  std::vector<BlockWeights> layers;  // [n_layers]
  std::vector<MtpWeights> mtp;       // [n_mtp_layers]
};

// Validates the inventory of `dir` against `config` (refining config->expert_format from the
// checkpoint when config.json does not say) and binds every field. Throws Error naming the
// tensor and file on any mismatch.
// Only routed experts [experts_begin, experts_end) are bound; the others stay empty `Linear`s.
Weights bind_weights(ModelConfig* config, const TensorDirectory& dir, int experts_begin = 0,
                     int experts_end = 1 << 30);

// The routed expert id a tensor name belongs to ("layers.L.ffn.experts.E.…", "mtp.M.ffn.experts.E.…"),
// or -1 for every other tensor.
int routed_expert_of(const std::string& name);

// Routed and shared experts' FP4 matrices rearranged in place into 16-row tiles (kernels::tile_fp4), the
// layout the AVX-512 kernel reads without horizontal sums (prefill's expert products ~1.5× as
// fast). Only where that kernel runs and the weights are a private copy (Residency::kCopy): a
// file mapping stays as stored. Returns how many matrices were tiled.
int tile_routed_experts(Weights* w, const TensorDirectory& dir, ThreadPool* pool);

}  // namespace dsv4
