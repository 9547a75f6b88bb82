#include "model/weights.h"

#include <cstring>

#include "core/error.h"
#include "core/thread_pool.h"
#include "kernels/isa.h"
#include "model/inventory.h"

namespace dsv4 {

namespace {

// Binding assumes check_inventory() has passed: names exist with the right dtype and shape.
struct Binder {
  const ModelConfig& c;
  const TensorDirectory& dir;
  int experts_begin = 0, experts_end = 1 << 30;

  Vec vec(const std::string& name) const {
    const TensorView& t = dir.get(name);
    Vec v(size_t(t.numel()));
    if (t.dtype == DType::F32) {
      std::memcpy(v.data(), t.data, t.nbytes);  // memcpy: the mapping may not be 4-aligned
    } else {
      for (size_t i = 0; i < v.size(); ++i) {
        uint16_t b;
        std::memcpy(&b, t.data + 2 * i, 2);
        v[i] = bf16_to_f32(b);
      }
    }
    return v;
  }
  Linear linear(const std::string& prefix) const {
    const TensorView& w = dir.get(prefix + ".weight");
    Linear l;
    l.out = w.shape[0];
    l.in = w.shape[1];
    l.weight = w.data;
    switch (w.dtype) {
      case DType::BF16: l.format = WeightFormat::kBF16; break;
      case DType::F32: l.format = WeightFormat::kF32; break;
      case DType::F8_E4M3: l.format = WeightFormat::kFP8; break;
      case DType::I8: case DType::U8: l.format = WeightFormat::kFP4; l.in *= 2; break;
      default: throw Error(cat("tensor '", prefix, ".weight' has unsupported dtype ", dtype_name(w.dtype)));
    }
    if (l.format == WeightFormat::kFP8 || l.format == WeightFormat::kFP4) l.scale = dir.get(prefix + ".scale").data;
    return l;
  }
  HcWeights hc(const std::string& p) const { return {vec(p + "_fn"), vec(p + "_base"), vec(p + "_scale")}; }
  HcHeadWeights hc_head(const std::string& p) const { return {vec(p + "_fn"), vec(p + "_base"), vec(p + "_scale")}; }
  CompressorWeights compressor(const std::string& p, int ratio, int64_t d) const {
    CompressorWeights w;
    w.ratio = ratio;
    w.overlap = ratio == 4;
    w.head_dim = d;
    w.wkv = linear(p + ".wkv");
    w.wgate = linear(p + ".wgate");
    w.ape = vec(p + ".ape");
    w.norm = vec(p + ".norm.weight");
    return w;
  }
  ExpertWeights expert(const std::string& p) const { return {linear(p + ".w1"), linear(p + ".w3"), linear(p + ".w2")}; }

  BlockWeights block(const std::string& p, int layer) const {
    BlockWeights b;
    b.layer_id = layer;
    b.attn_norm = vec(p + "attn_norm.weight");
    b.ffn_norm = vec(p + "ffn_norm.weight");
    b.hc_attn = hc(p + "hc_attn");
    b.hc_ffn = hc(p + "hc_ffn");
    const std::string a = p + "attn.";
    AttentionWeights& at = b.attn;
    at.attn_sink = vec(a + "attn_sink");
    at.wq_a = linear(a + "wq_a");
    at.q_norm = vec(a + "q_norm.weight");
    at.wq_b = linear(a + "wq_b");
    at.wkv = linear(a + "wkv");
    at.kv_norm = vec(a + "kv_norm.weight");
    at.wo_a = linear(a + "wo_a");
    at.wo_a.dequantized = true;
    at.wo_b = linear(a + "wo_b");
    const int ratio = c.compress_ratio(layer);
    if (ratio != 0)
      at.compressor = std::make_unique<CompressorWeights>(compressor(a + "compressor", ratio, c.head_dim));
    if (ratio == 4) {
      at.indexer = std::make_unique<IndexerWeights>();
      at.indexer->wq_b = linear(a + "indexer.wq_b");
      at.indexer->weights_proj = linear(a + "indexer.weights_proj");
      at.indexer->compressor = compressor(a + "indexer.compressor", 4, c.index_head_dim);
    }
    const std::string f = p + "ffn.";
    MoeWeights& m = b.ffn;
    m.gate = linear(f + "gate");
    if (c.is_hash_layer(layer)) {
      const TensorView& t = dir.get(f + "gate.tid2eid");
      m.tid2eid.resize(size_t(t.numel()));
      for (size_t i = 0; i < m.tid2eid.size(); ++i) {
        int64_t e;
        std::memcpy(&e, t.data + 8 * i, 8);
        if (e < 0 || e >= c.n_routed_experts)
          throw Error(cat(*t.file, ": tensor '", f, "gate.tid2eid' holds expert id ", e, " outside [0, ",
                          c.n_routed_experts, ")"));
        m.tid2eid[i] = int32_t(e);
      }
    } else {
      m.bias = vec(f + "gate.bias");
    }
    for (int e = 0; e < c.n_routed_experts; ++e)
      m.experts.push_back(e >= experts_begin && e < experts_end ? expert(f + "experts." + std::to_string(e))
                                                               : ExpertWeights{});
    m.shared = expert(f + "shared_experts");
    return b;
  }
};

}  // namespace

int routed_expert_of(const std::string& name) {
  const size_t at = name.find(".ffn.experts.");
  if (at == std::string::npos) return -1;
  int e = 0;
  size_t i = at + 13;
  if (i >= name.size() || name[i] < '0' || name[i] > '9') return -1;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && e < (1 << 24); ++i) e = e * 10 + (name[i] - '0');
  return e;
}

Weights bind_weights(ModelConfig* config, const TensorDirectory& dir, int experts_begin, int experts_end) {
  detect_expert_format(config, dir);
  check_inventory(*config, dir);
  const ModelConfig& c = *config;
  Binder b{c, dir, experts_begin, experts_end};
  Weights w;
  w.embed = b.linear("embed");
  w.head = b.linear("head");
  w.norm = b.vec("norm.weight");
  w.hc_head = b.hc_head("hc_head");
  for (int l = 0; l < c.n_layers; ++l) w.layers.push_back(b.block("layers." + std::to_string(l) + ".", l));
  for (int m = 0; m < c.n_mtp_layers; ++m) {
    const std::string p = "mtp." + std::to_string(m) + ".";
    MtpWeights t;
    t.e_proj = b.linear(p + "e_proj");
    t.h_proj = b.linear(p + "h_proj");
    t.enorm = b.vec(p + "enorm.weight");
    t.hnorm = b.vec(p + "hnorm.weight");
    t.norm = b.vec(p + "norm.weight");
    t.hc_head = b.hc_head(p + "hc_head");
    t.block = b.block(p, c.n_layers + m);
    w.mtp.push_back(std::move(t));
  }
  return w;
}

int tile_routed_experts(Weights* w, const TensorDirectory& dir, ThreadPool* pool) {
  if (!dir.copied() || kernels::active_isa() != kernels::Isa::kAvx512) return 0;
  std::vector<Linear*> todo;
  auto add_expert = [&](ExpertWeights& e) {
    for (Linear* l : {&e.w1, &e.w2, &e.w3})
      if (l->weight && kernels::can_tile_fp4(*l)) todo.push_back(l);
  };
  auto add = [&](BlockWeights& b) {
    for (ExpertWeights& e : b.ffn.experts) add_expert(e);
    add_expert(b.ffn.shared);  // a prefill's largest product (every prompt row): as fast as the routed ones
  };
  for (BlockWeights& b : w->layers) add(b);
  for (MtpWeights& m : w->mtp) add(m.block);
  if (todo.empty()) return 0;
  for (const auto& f : dir.files()) f->set_writable(true);
  parallel_for(pool, int64_t(todo.size()), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      Linear* l = todo[size_t(i)];
      kernels::tile_fp4(const_cast<uint8_t*>(l->weight), const_cast<uint8_t*>(l->scale), l->out, l->in);
      l->tiled = true;
    }
  });
  for (const auto& f : dir.files()) f->set_writable(false);
  return int(todo.size());
}

}  // namespace dsv4
