#include "model/inventory.h"

#include <filesystem>
#include <set>

#include "core/error.h"

namespace dsv4 {

const char* tensor_kind_name(TensorKind k) {
  switch (k) {
    case TensorKind::kEmbedHead: return "embed/head";
    case TensorKind::kAttention: return "attention";
    case TensorKind::kCompressor: return "compressor";
    case TensorKind::kIndexer: return "indexer";
    case TensorKind::kRoutedExpert: return "routed experts";
    case TensorKind::kSharedExpert: return "shared experts";
    case TensorKind::kRouter: return "router";
    case TensorKind::kHyperConnection: return "hyper-connections";
    case TensorKind::kNorm: return "norms";
    case TensorKind::kMtpProjection: return "mtp projections";
  }
  return "?";
}

int64_t TensorSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}
int64_t TensorSpec::nbytes() const { return numel() * int64_t(dtype_size(dtype)); }

namespace {

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Builder {
  const ModelConfig& c;
  std::vector<TensorSpec> out;

  void add(std::string name, DType t, std::vector<int64_t> shape, TensorKind k) {
    out.push_back({std::move(name), t, std::move(shape), k});
  }
  // An FP8 linear: weight [o, i] E4M3 and its 128×128 UE8M0 scale.
  void fp8(const std::string& p, int64_t o, int64_t i, TensorKind k) {
    add(p + ".weight", DType::F8_E4M3, {o, i}, k);
    add(p + ".scale", DType::F8_E8M0, {cdiv(o, 128), cdiv(i, 128)}, k);
  }
  void expert_linear(const std::string& p, int64_t o, int64_t i) {
    if (c.expert_format == ExpertFormat::kFp4) {
      add(p + ".weight", DType::I8, {o, i / 2}, TensorKind::kRoutedExpert);
      add(p + ".scale", DType::F8_E8M0, {o, i / 32}, TensorKind::kRoutedExpert);
    } else {
      fp8(p, o, i, TensorKind::kRoutedExpert);
    }
  }
  void hc(const std::string& p, int64_t m) {
    add(p + "_fn", DType::F32, {m, c.hc_mult * c.dim}, TensorKind::kHyperConnection);
    add(p + "_base", DType::F32, {m}, TensorKind::kHyperConnection);
    add(p + "_scale", DType::F32, {m == c.hc_mult ? 1 : 3}, TensorKind::kHyperConnection);
  }
  void compressor(const std::string& p, int ratio, int64_t d, TensorKind k) {
    int64_t coff = ratio == 4 ? 2 : 1;
    add(p + ".wkv.weight", DType::BF16, {coff * d, c.dim}, k);
    add(p + ".wgate.weight", DType::BF16, {coff * d, c.dim}, k);
    add(p + ".ape", DType::F32, {ratio, coff * d}, k);
    add(p + ".norm.weight", DType::BF16, {d}, k);
  }
  void block(const std::string& p, int layer) {
    const int64_t D = c.dim, H = c.n_heads, Dh = c.head_dim, I = c.moe_inter_dim;
    add(p + "attn_norm.weight", DType::BF16, {D}, TensorKind::kNorm);
    add(p + "ffn_norm.weight", DType::BF16, {D}, TensorKind::kNorm);
    hc(p + "hc_attn", c.hc_mix_dim());
    hc(p + "hc_ffn", c.hc_mix_dim());
    const std::string a = p + "attn.";
    add(a + "attn_sink", DType::F32, {H}, TensorKind::kAttention);
    fp8(a + "wq_a", c.q_lora_rank, D, TensorKind::kAttention);
    add(a + "q_norm.weight", DType::BF16, {c.q_lora_rank}, TensorKind::kNorm);
    fp8(a + "wq_b", H * Dh, c.q_lora_rank, TensorKind::kAttention);
    fp8(a + "wkv", Dh, D, TensorKind::kAttention);
    add(a + "kv_norm.weight", DType::BF16, {Dh}, TensorKind::kNorm);
    fp8(a + "wo_a", c.o_groups * c.o_lora_rank, H * Dh / c.o_groups, TensorKind::kAttention);
    fp8(a + "wo_b", D, c.o_groups * c.o_lora_rank, TensorKind::kAttention);
    int ratio = c.compress_ratio(layer);
    if (ratio != 0) compressor(a + "compressor", ratio, Dh, TensorKind::kCompressor);
    if (ratio == 4) {
      fp8(a + "indexer.wq_b", int64_t(c.index_n_heads) * c.index_head_dim, c.q_lora_rank, TensorKind::kIndexer);
      add(a + "indexer.weights_proj.weight", DType::BF16, {c.index_n_heads, D}, TensorKind::kIndexer);
      compressor(a + "indexer.compressor", 4, c.index_head_dim, TensorKind::kIndexer);
    }
    const std::string f = p + "ffn.";
    add(f + "gate.weight", DType::BF16, {c.n_routed_experts, D}, TensorKind::kRouter);
    if (c.is_hash_layer(layer))
      add(f + "gate.tid2eid", DType::I64, {c.vocab_size, c.n_activated_experts}, TensorKind::kRouter);
    else
      add(f + "gate.bias", DType::F32, {c.n_routed_experts}, TensorKind::kRouter);
    for (int e = 0; e < c.n_routed_experts; ++e) {
      const std::string x = f + "experts." + std::to_string(e) + ".";
      expert_linear(x + "w1", I, D);
      expert_linear(x + "w2", D, I);
      expert_linear(x + "w3", I, D);
    }
    fp8(f + "shared_experts.w1", I, D, TensorKind::kSharedExpert);
    fp8(f + "shared_experts.w2", D, I, TensorKind::kSharedExpert);
    fp8(f + "shared_experts.w3", I, D, TensorKind::kSharedExpert);
  }
};

}  // namespace

std::vector<TensorSpec> expected_tensors(const ModelConfig& c) {
  Builder b{c, {}};
  b.add("embed.weight", DType::BF16, {c.vocab_size, c.dim}, TensorKind::kEmbedHead);
  b.add("head.weight", DType::BF16, {c.vocab_size, c.dim}, TensorKind::kEmbedHead);
  b.add("norm.weight", DType::BF16, {c.dim}, TensorKind::kNorm);
  b.hc("hc_head", c.hc_mult);
  for (int l = 0; l < c.n_layers; ++l) b.block("layers." + std::to_string(l) + ".", l);
  for (int m = 0; m < c.n_mtp_layers; ++m) {
    const std::string p = "mtp." + std::to_string(m) + ".";
    b.fp8(p + "e_proj", c.dim, c.dim, TensorKind::kMtpProjection);
    b.fp8(p + "h_proj", c.dim, c.dim, TensorKind::kMtpProjection);
    b.add(p + "enorm.weight", DType::BF16, {c.dim}, TensorKind::kNorm);
    b.add(p + "hnorm.weight", DType::BF16, {c.dim}, TensorKind::kNorm);
    b.add(p + "norm.weight", DType::BF16, {c.dim}, TensorKind::kNorm);
    b.hc(p + "hc_head", c.hc_mult);
    b.block(p, c.n_layers + m);
  }
  return std::move(b.out);
}

void detect_expert_format(ModelConfig* c, const TensorDirectory& dir) {
  if (c->has_expert_dtype) return;
  for (const char* prefix : {"layers.0.", "mtp.0."}) {
    const TensorView* t = dir.find(std::string(prefix) + "ffn.experts.0.w1.weight");
    if (!t) continue;
    if (t->dtype == DType::I8 || t->dtype == DType::U8) c->expert_format = ExpertFormat::kFp4;
    else if (t->dtype == DType::F8_E4M3) c->expert_format = ExpertFormat::kFp8;
    return;
  }
}

void check_inventory(const ModelConfig& c, const TensorDirectory& dir) {
  // A missing tensor has no file of its own; name where it was looked for (the checkpoint's
  // directory, or its one file) so the message still says which checkpoint is incomplete.
  std::string where = "checkpoint";
  if (dir.files().size() == 1) where = dir.files()[0]->path();
  else if (!dir.files().empty()) where = std::filesystem::path(dir.files()[0]->path()).parent_path().string();
  // A config that disagrees wildly with the checkpoint (say n_routed_experts = 2^31 - 1) would make
  // expected_tensors() build billions of names before the first lookup fails. The routed-expert
  // tensors alone bound the count from below, so refuse such a pairing first, cheaply.
  const int64_t min_expected = (int64_t(c.n_layers) + c.n_mtp_layers) * int64_t(c.n_routed_experts) * 6;
  if (min_expected > int64_t(dir.tensors().size()))
    throw Error(cat(where, ": config.json implies at least ", min_expected, " tensors (", c.n_layers + c.n_mtp_layers,
                    " blocks x ", c.n_routed_experts, " routed experts x 6), the checkpoint holds ",
                    dir.tensors().size()));
  std::set<std::string> expected_names;
  for (const TensorSpec& s : expected_tensors(c)) {
    expected_names.insert(s.name);
    const TensorView* t = dir.find(s.name);
    if (!t) throw Error(cat(where, ": checkpoint is missing tensor '", s.name, "' (", dtype_name(s.dtype), " ",
                            TensorView{s.name, s.dtype, s.shape}.shape_str(), ") required by config.json"));
    // FP4 pairs are stored as I8 by the official checkpoints; accept U8 bytes too.
    bool dtype_ok = t->dtype == s.dtype || (s.dtype == DType::I8 && t->dtype == DType::U8);
    if (!dtype_ok)
      throw Error(cat(*t->file, ": tensor '", s.name, "' has dtype ", dtype_name(t->dtype), ", expected ",
                      dtype_name(s.dtype)));
    if (t->shape != s.shape)
      throw Error(cat(*t->file, ": tensor '", s.name, "' has shape ", t->shape_str(), ", expected ",
                      TensorView{s.name, s.dtype, s.shape}.shape_str(), " from config.json"));
  }
  for (const auto& [name, t] : dir.tensors())
    if (!expected_names.count(name))
      throw Error(cat(*t.file, ": unexpected tensor '", name, "' (", dtype_name(t.dtype), " ", t.shape_str(),
                      ") — not part of the model config.json describes"));
}

}  // namespace dsv4
