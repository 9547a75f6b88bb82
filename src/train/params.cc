#include "train/params.h"

#include <algorithm>
#include <numeric>

#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/linear.h"
#include "model/inventory.h"

namespace dsv4::train {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string scale_name(const std::string& weight_name) {
  return weight_name.substr(0, weight_name.size() - std::string(".weight").size()) + ".scale";
}

// FNV-1a of the name: a per-tensor random stream independent of the order tensors are made in.
uint64_t name_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return h;
}

torch::Tensor normal(const std::vector<int64_t>& shape, double stddev) {
  return torch::randn(shape, torch::kDouble) * stddev;
}

// Initial value of one tensor (F64). Linears N(0, 1/fan_in), output-side projections scaled
// down with depth; norms 1; hyper-connection mixes start near "copy the streams" (comb biased
// to the diagonal, small mixing weights); sinks and ape 0; embeddings N(0, 1).
torch::Tensor initial_value(const ParamSpec& s, const ModelConfig& c) {
  const std::string& n = s.name;
  const int64_t fan_in = s.shape.back();
  if (n == "embed.weight") return normal(s.shape, 1.0);
  if (ends_with(n, "norm.weight")) return torch::ones(s.shape, torch::kDouble);
  if (ends_with(n, "attn_sink") || ends_with(n, ".ape") || ends_with(n, "gate.bias"))
    return torch::zeros(s.shape, torch::kDouble);
  if (ends_with(n, "_fn")) return normal(s.shape, 0.1 / std::sqrt(double(fan_in)));
  if (ends_with(n, "_scale")) return torch::ones(s.shape, torch::kDouble);
  if (ends_with(n, "_base")) {
    torch::Tensor b = torch::zeros(s.shape, torch::kDouble);
    if (s.shape[0] > c.hc_mult) {  // pre, post, comb: comb's diagonal favoured
      const int hc = c.hc_mult;
      for (int j = 0; j < hc; ++j) b[2 * hc + j * hc + j] = 4.0;
    }
    return b;
  }
  double gain = 1.0;
  if (ends_with(n, "wo_b.weight") || ends_with(n, "w2.weight")) gain = 1.0 / std::sqrt(2.0 * c.n_layers);
  return normal(s.shape, gain / std::sqrt(double(fan_in)));
}

// tid2eid: each row n_activated distinct experts, drawn uniformly.
torch::Tensor random_hash_table(const ModelConfig& c) {
  torch::Tensor t = torch::empty({c.vocab_size, c.n_activated_experts}, torch::kLong);
  for (int64_t v = 0; v < c.vocab_size; ++v)
    t[v] = torch::randperm(c.n_routed_experts, torch::kLong).slice(0, 0, c.n_activated_experts);
  return t;
}

// One stored matrix as the engine's Linear view, to dequantize with its row decoder.
Linear linear_view(const TensorDirectory& dir, const TensorView& w) {
  Linear l;
  l.out = w.shape[0];
  l.in = w.shape[1];
  l.weight = w.data;
  if (w.dtype == DType::BF16) l.format = WeightFormat::kBF16;
  else if (w.dtype == DType::F32) l.format = WeightFormat::kF32;
  else {
    l.format = w.dtype == DType::I8 ? WeightFormat::kFP4 : WeightFormat::kFP8;
    if (w.dtype == DType::I8) l.in *= 2;
    l.scale = dir.get(scale_name(w.name)).data;
  }
  return l;
}

torch::Tensor load_tensor(const TensorDirectory& dir, const ParamSpec& s) {
  const TensorView& v = dir.get(s.name);
  if (v.dtype == DType::I64) {
    torch::Tensor t = torch::empty(s.shape, torch::kLong);
    std::memcpy(t.data_ptr<int64_t>(), v.data, v.nbytes);
    return t;
  }
  torch::Tensor t = torch::empty(s.shape, torch::kFloat);
  float* out = t.data_ptr<float>();
  if (s.shape.size() == 1 || v.dtype == DType::F32) {
    const int64_t n = t.numel();
    if (v.dtype == DType::F32) std::memcpy(out, v.data, size_t(n) * 4);
    else
      for (int64_t k = 0; k < n; ++k) out[k] = bf16_to_f32(uint16_t(v.data[2 * k] | (v.data[2 * k + 1] << 8)));
    return t;
  }
  const Linear l = linear_view(dir, v);
  for (int64_t r = 0; r < l.out; ++r) kernels::dequant_row(l, r, out + r * l.in);
  return t;
}

}  // namespace

const torch::Tensor& Params::at(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) throw Error(cat("parameter ", name, " missing"));
  return it->second;
}

bool is_trainable(const std::string& name) {
  return !ends_with(name, "gate.bias") && !ends_with(name, "gate.tid2eid");
}

std::vector<ParamSpec> param_specs(const ModelConfig& c) {
  std::vector<ParamSpec> out;
  for (const TensorSpec& t : expected_tensors(c)) {
    if (ends_with(t.name, ".scale") && (t.dtype == DType::F8_E8M0)) continue;
    ParamSpec s{t.name, t.shape};
    if (t.dtype == DType::I8) s.shape.back() *= 2;  // FP4 pairs unpacked
    out.push_back(s);
  }
  return out;
}

Params init_params(const ModelConfig& c, uint64_t seed, torch::Dtype dtype) {
  Params p;
  for (const ParamSpec& s : param_specs(c)) {
    torch::manual_seed(name_seed(seed, s.name));
    if (ends_with(s.name, "tid2eid")) p.tensors[s.name] = random_hash_table(c);
    else p.tensors[s.name] = initial_value(s, c).to(dtype);
  }
  return p;
}

Params load_params(const std::string& dir_path, const ModelConfig& c, torch::Dtype dtype) {
  std::unique_ptr<TensorDirectory> dir = TensorDirectory::open(dir_path);
  ModelConfig checked = c;
  detect_expert_format(&checked, *dir);
  check_inventory(checked, *dir);
  Params p;
  for (const ParamSpec& s : param_specs(checked)) {
    torch::Tensor t = load_tensor(*dir, s);
    p.tensors[s.name] = t.scalar_type() == torch::kLong ? t : t.to(dtype);
  }
  return p;
}

void enable_grad(Params* p) {
  for (auto& [name, t] : p->tensors)
    if (is_trainable(name)) t.requires_grad_(true);
}

}  // namespace dsv4::train
