// Finite-difference checks (F64, central differences) of the trainer's autograd gradients for
// every component of the forward: RMSNorm, Sinkhorn and the hyper-connections, the compressors
// (overlapping and not), attention of each kind (window, CSA with the indexer's picks, HCA, with
// RoPE and the sink), the indexer's scores, MoE with hash and score routing and the SwiGLU
// clamp, the head, MTP, and the whole model's training loss.
#include <gtest/gtest.h>

#include <functional>

#include "core/error.h"
#include "tests/train/train_util.h"
#include "train/layers.h"

namespace dsv4::train {
namespace {

using Named = std::vector<std::pair<std::string, torch::Tensor>>;

// Parameters of the tiny model with the symmetric parts of the initialization (unit norms,
// zero biases, sinks and ape) perturbed, so no gradient vanishes by symmetry.
TrainModel tiny_model() {
  const ModelConfig c = test::tiny_config();
  Params p = init_params(c, 7, torch::kDouble);
  torch::manual_seed(11);
  for (auto& [name, t] : p.tensors)
    if (t.is_floating_point() && (t.dim() == 1 || name.find(".ape") != std::string::npos))
      t.add_(torch::randn(t.sizes(), torch::kDouble) * (name.find("gate.bias") != std::string::npos ? 0.01 : 0.3));
  enable_grad(&p);
  return TrainModel(c, std::move(p));
}

// A scalar with a generic dependence on every output element.
torch::Tensor weigh(const torch::Tensor& out, uint64_t seed = 3) {
  torch::manual_seed(seed);
  torch::Tensor r = torch::randn(out.sizes(), torch::kDouble);
  return (out.masked_fill(out.isinf(), 0.0) * r).sum();
}

// Compares autograd's gradient of loss() w.r.t. each input with central differences at the
// entry of largest gradient and at `probes` random entries. Every input must get a non-zero
// gradient somewhere (a dead path is a bug, not a pass).
void check_gradients(const std::function<torch::Tensor()>& loss, const Named& inputs, int probes = 3) {
  std::vector<torch::Tensor> ts;
  for (const auto& [n, t] : inputs) ts.push_back(t);
  const std::vector<torch::Tensor> grads = torch::autograd::grad({loss()}, ts, {}, false, false, /*allow_unused=*/true);
  torch::manual_seed(5);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto& [name, t] = inputs[i];
    ASSERT_TRUE(grads[i].defined()) << name << ": no gradient";
    const torch::Tensor g = grads[i].reshape(-1);
    ASSERT_GT(g.abs().max().item<double>(), 0.0) << name << ": zero gradient";
    std::vector<int64_t> at{g.abs().argmax().item<int64_t>()};
    for (int k = 0; k < probes; ++k) at.push_back(torch::randint(g.numel(), {1}, torch::kLong).item<int64_t>());
    for (int64_t idx : at) {
      torch::NoGradGuard no_grad;
      torch::Tensor flat = t.view(-1);
      const double orig = flat[idx].item<double>(), h = 1e-6;
      flat[idx] = orig + h;
      const double up = loss().item<double>();
      flat[idx] = orig - h;
      const double down = loss().item<double>();
      flat[idx] = orig;
      const double numeric = (up - down) / (2 * h), analytic = g[idx].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-6 * (1 + std::abs(numeric))) << name << " entry " << idx;
    }
  }
}

Named params_with_prefix(const TrainModel& m, const std::string& prefix, const std::string& except = "~") {
  Named out;
  for (const auto& [name, t] : m.params.tensors)
    if (name.rfind(prefix, 0) == 0 && is_trainable(name) && name.find(except) == std::string::npos)
      out.emplace_back(name, t);
  return out;
}

torch::Tensor input(std::vector<int64_t> shape, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randn(shape, torch::kDouble).requires_grad_(true);
}

torch::Tensor tokens(int64_t B, int64_t S, int64_t V) {
  torch::manual_seed(21);
  return torch::randint(V, {B, S}, torch::kLong);
}

// Equal scores go to the lower id (the engine's rule; indexer scores tie at exactly 0).
TEST(TrainForward, TopKTiesToLowerId) {
  const torch::Tensor s = torch::tensor({0.0, 1.0, -0.0, 0.0, 1.0, 0.5}, torch::kDouble).view({1, 6});
  EXPECT_TRUE(top_k(s, 4).equal(torch::tensor({1, 4, 5, 0}, torch::kLong).view({1, 4})));
  EXPECT_TRUE(top_k(s.flip(-1), 5).equal(torch::tensor({1, 4, 0, 2, 3}, torch::kLong).view({1, 5})));
}

TEST(TrainGrad, RmsNorm) {
  torch::Tensor x = input({3, 7}, 1), w = input({7}, 2);
  check_gradients([&] { return weigh(rms_norm(x, w, 1e-6)); }, {{"x", x}, {"weight", w}});
}

TEST(TrainGrad, SinkhornThroughAllIterations) {
  torch::Tensor logits = input({5, 4, 4}, 1);
  check_gradients([&] { return weigh(sinkhorn(logits, 20, 1e-6)); }, {{"logits", logits}});
}

TEST(TrainGrad, HyperConnectionsPreNormPost) {
  const TrainModel m = tiny_model();
  torch::Tensor x = input({2, 5, 4, 32}, 1), f = input({2, 5, 32}, 2);
  Named in = params_with_prefix(m, "layers.0.hc_attn_");
  in.emplace_back("attn_norm", m.p("layers.0.attn_norm.weight"));
  in.emplace_back("x", x);
  in.emplace_back("f", f);
  check_gradients([&] {
    HcMix mix;
    torch::Tensor u = rms_norm(hc_pre(m, "layers.0.hc_attn_", x, &mix), m.p("layers.0.attn_norm.weight"), 1e-6);
    return weigh(hc_post(f * u, x, mix));
  }, in);
}

TEST(TrainGrad, CompressorOverlappingAndPlain) {
  const TrainModel m = tiny_model();
  torch::Tensor x = input({2, 19, 32}, 1);
  for (int layer : {1, 2}) {
    const std::string p = cat("layers.", layer, ".attn.compressor.");
    Named in = params_with_prefix(m, p);
    in.emplace_back("x", x);
    check_gradients([&] { return weigh(compress(m, p, layer, m.config.compress_ratio(layer), x, false)); }, in);
  }
}

TEST(TrainGrad, AttentionEveryKind) {
  const TrainModel m = tiny_model();
  torch::Tensor x = input({2, 21, 32}, 1);  // > window, several entries of each ratio
  for (int layer : {0, 1, 2}) {
    SCOPED_TRACE(cat("layer ", layer));
    const std::string p = cat("layers.", layer, ".attn.");
    Named in = params_with_prefix(m, p, "indexer.");  // the indexer's picks carry no gradient
    in.emplace_back("x", x);
    check_gradients([&] { return weigh(attention(m, p, layer, x, nullptr)); }, in);
  }
}

TEST(TrainGrad, IndexerScores) {
  const TrainModel m = tiny_model();
  torch::Tensor x = input({2, 21, 32}, 1);
  Named in = params_with_prefix(m, "layers.1.attn.indexer.");  // its inputs are detached
  check_gradients([&] {
    ForwardTrace trace;
    attention(m, "layers.1.attn.", 1, x, &trace);
    return weigh(trace.indexers.at(0).scores);
  }, in);
}

TEST(TrainGrad, MoeHashAndScoreRoutedWithClamp) {
  const TrainModel m = tiny_model();
  torch::Tensor leaf = input({2, 9, 32}, 1);
  const torch::Tensor ids = tokens(2, 9, m.config.vocab_size);
  for (int layer : {0, 1}) {
    SCOPED_TRACE(cat("layer ", layer));
    const std::string p = cat("layers.", layer, ".ffn.");
    Named in = params_with_prefix(m, p);
    in.emplace_back("x", leaf);
    check_gradients([&] { return weigh(moe(m, p, layer, leaf * 2.0, ids, nullptr)); }, in);
  }
}

// The clamp is active in this setting (else the clamp test above proves nothing).
TEST(TrainGrad, SwigluClampIsExercised) {
  torch::Tensor gl = (input({50}, 3) * 2.0).detach().requires_grad_(true);
  torch::Tensor vl = (input({50}, 4) * 2.0).detach().requires_grad_(true);
  EXPECT_GT((gl > 1.0).sum().item<int64_t>(), 0);
  EXPECT_GT((vl.abs() > 1.0).sum().item<int64_t>(), 0);
  check_gradients([&] { return weigh(swiglu(gl, vl, 1.0)); }, {{"gate", gl}, {"up", vl}}, 10);
}

// Cross-entropy of the main head and 0.3 × the MTP head, through every block: every trainable
// parameter but the indexers' gets a gradient, and a sample of entries matches.
TEST(TrainGrad, WholeModelWithMtp) {
  const TrainModel m = tiny_model();
  const torch::Tensor ids = tokens(2, 20, m.config.vocab_size);
  auto loss = [&] {
    ForwardResult r = forward(m, ids);
    const int64_t V = m.config.vocab_size, S = ids.size(1);
    torch::Tensor main = torch::nn::functional::cross_entropy(r.logits.narrow(1, 0, S - 1).reshape({-1, V}),
                                                              ids.narrow(1, 1, S - 1).reshape(-1));
    torch::Tensor mtp = mtp_forward(m, r.hidden.narrow(1, 0, S - 1), ids.narrow(1, 1, S - 1));
    torch::Tensor mtp_loss = torch::nn::functional::cross_entropy(mtp.narrow(1, 0, S - 2).reshape({-1, V}),
                                                                  ids.narrow(1, 2, S - 2).reshape(-1));
    return main + 0.3 * mtp_loss;
  };
  check_gradients(loss, params_with_prefix(m, "", "indexer."), 1);
}

}  // namespace
}  // namespace dsv4::train
