// Anticipatory Routing: with `on`, the expert selection of step t is the one the parameters of
// step t − Δt give step t's batch (recomputed here from saved states, independently of the
// trainer's cache), while gradients still reach the router; in `auto`, an injected loss spike (a
// corrupted batch) switches it on and `calm` calm steps switch it off; runs and resumes are
// bit-identical.
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/train/train_util.h"
#include "train/anticipatory.h"
#include "train/forward.h"
#include "train/params.h"
#include "train/trainer.h"

namespace dsv4::train {
namespace {

// Uniformly random tokens: the corrupted batch that makes a loss spike.
std::vector<int32_t> noise_stream(int64_t n, int32_t V) {
  std::vector<int32_t> out;
  uint64_t x = 999;
  for (int64_t i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    out.push_back(int32_t((x >> 33) % uint64_t(V)));
  }
  return out;
}

TrainOptions options(ArMode mode) {
  TrainOptions o;
  o.steps = 60;
  o.batch = 4;
  o.seq_len = 32;
  o.lr = 1e-2;
  o.seed = 1;
  o.anticipatory.mode = mode;
  o.anticipatory.delta = 2;
  o.anticipatory.calm = 5;
  return o;
}

// The parameters stored in a training state file.
Params params_of_state(const ModelConfig& c, const std::string& path) {
  Params p = init_params(c, 0, torch::kFloat);
  torch::serialize::InputArchive a;
  a.load_from(path);
  for (auto& [name, t] : p.tensors) a.read("param." + name, t);
  return p;
}

// What standard routing selects for step `step`'s batch under parameters p: the step's forward
// (main, then MTP on the same rows as the trainer), each layer's top-k, flattened.
std::vector<int64_t> selection(const ModelConfig& c, const Params& p, const std::vector<int32_t>& data,
                               const TrainOptions& o, int64_t step) {
  torch::NoGradGuard no_grad;
  const TrainModel m(c, p);
  const torch::Tensor batch = sample_batch(data, o.batch, o.seq_len + 1, o.seed, step);
  const int64_t S = o.seq_len;
  const torch::Tensor in = batch.narrow(1, 0, S);
  ForwardTrace trace;
  const ForwardResult f = forward(m, in, &trace);
  mtp_forward(m, f.hidden.narrow(1, 0, S - 1), in.narrow(1, 1, S - 1), &trace);
  std::vector<int64_t> out;
  for (const RouteStats& r : trace.routes) {
    const torch::Tensor v = r.experts.contiguous();
    out.insert(out.end(), v.data_ptr<int64_t>(), v.data_ptr<int64_t>() + v.numel());
  }
  return out;
}

TEST(AnticipatoryRouting, OnSelectsWithTheParametersOfDeltaStepsAgo) {
  set_threads(1);
  const ModelConfig c = test::tiny_config();
  const std::vector<int32_t> data = test::learnable_stream(5000, int32_t(c.vocab_size));
  const TrainOptions o = options(ArMode::kOn);
  const int64_t delta = o.anticipatory.delta;
  Trainer t(c, o);
  const std::string dir = ::testing::TempDir() + "/dsv4_ar_states";
  std::filesystem::create_directories(dir);
  auto state = [&](int64_t s) { return dir + "/" + std::to_string(s) + ".pt"; };
  int differing = 0;
  for (int64_t s = 0; s < 8; ++s) {
    t.save_state(state(s));  // θ_s
    const StepReport r = t.step(data);
    EXPECT_TRUE(r.anticipatory) << "step " << s;
    EXPECT_TRUE(std::isfinite(r.grad_norm) && r.grad_norm > 0) << "step " << s;
    // Steps 0 … Δt route with θ_0 (no older parameters exist), later ones with θ_{s−Δt}.
    const std::vector<int64_t> want = selection(c, params_of_state(c, state(std::max<int64_t>(0, s - delta))), data, o, s);
    ASSERT_EQ(t.last_routing(), want) << "step " << s;
    if (s >= delta) differing += selection(c, params_of_state(c, state(s)), data, o, s) != want;
  }
  // The old parameters really select differently from the current ones (the test can fail).
  EXPECT_GE(differing, 3);
  std::filesystem::remove_all(dir);
}

// The selection is forced, the gate weights still come from the current scores: the router's
// weight gets a gradient through them.
TEST(AnticipatoryRouting, ForcedSelectionKeepsTheRouterGradient) {
  const ModelConfig c = test::tiny_config();
  TrainModel m(c, init_params(c, 5, torch::kDouble));
  enable_grad(&m.params);
  const torch::Tensor tokens = torch::randint(0, c.vocab_size, {2, 16}, torch::TensorOptions().dtype(torch::kLong));
  ForwardTrace own;
  forward(m, tokens, &own);
  ForwardTrace forced;
  for (const RouteStats& r : own.routes) forced.forced_experts.push_back((r.experts + 1).remainder(c.n_routed_experts));
  const torch::Tensor loss = forward(m, tokens, &forced).logits.pow(2).mean();
  ASSERT_EQ(forced.routes.size(), own.routes.size());
  ASSERT_FALSE(forced.routes.empty());
  for (size_t i = 0; i < forced.routes.size(); ++i)
    EXPECT_TRUE(torch::equal(forced.routes[i].experts, forced.forced_experts[i])) << "layer " << i;
  loss.backward();
  for (const RouteStats& r : forced.routes) {
    const std::string gate = r.bias_name.substr(0, r.bias_name.size() - 4) + "weight";  // "…gate.weight"
    const torch::Tensor g = m.p(gate).grad();
    ASSERT_TRUE(g.defined()) << gate;
    EXPECT_GT(g.abs().max().item<double>(), 0.0) << gate;
  }
}

struct RunLog {
  std::vector<double> losses;
  std::vector<bool> active;
};

// `steps` steps of `t`, the batch of step `spike` drawn from noise instead of the stream.
RunLog train(Trainer* t, int64_t steps, int64_t spike, const std::vector<int32_t>& data, const std::vector<int32_t>& noise) {
  RunLog run;
  while (t->steps_done() < steps) {
    const StepReport r = t->step(t->steps_done() == spike ? noise : data);
    run.losses.push_back(r.loss);
    run.active.push_back(r.anticipatory);
  }
  return run;
}

TEST(AnticipatoryRouting, AutoSwitchesOnAtASpikeAndOffAfterCalmSteps) {
  set_threads(1);
  const ModelConfig c = test::tiny_config();
  const std::vector<int32_t> data = test::learnable_stream(5000, int32_t(c.vocab_size));
  const std::vector<int32_t> noise = noise_stream(5000, int32_t(c.vocab_size));
  const TrainOptions o = options(ArMode::kAuto);
  const int64_t spike = 20, calm = o.anticipatory.calm, steps = spike + calm + 3;
  Trainer t(c, o);
  const RunLog run = train(&t, steps, spike, data, noise);
  std::printf("loss before the spike %.3f, at the spike %.3f\n", run.losses[spike - 1], run.losses[spike]);
  EXPECT_GT(run.losses[spike], run.losses[spike - 1] + 1.0);
  // Off until the spike's step; on for the `calm` steps after it; off again.
  for (int64_t s = 0; s < steps; ++s)
    EXPECT_EQ(run.active[size_t(s)], s > spike && s <= spike + calm) << "step " << s;

  // `off` ignores the spike.
  Trainer plain(c, options(ArMode::kOff));
  const RunLog off = train(&plain, spike + 3, spike, data, noise);
  for (bool a : off.active) EXPECT_FALSE(a);
  // Before the spike both runs are the same; routing from older parameters changes the steps after.
  for (int64_t s = 0; s <= spike; ++s) EXPECT_EQ(off.losses[size_t(s)], run.losses[size_t(s)]) << "step " << s;
  EXPECT_NE(off.losses[spike + 2], run.losses[spike + 2]);
}

TEST(AnticipatoryRouting, RerunsAndResumesAreBitIdentical) {
  set_threads(1);
  const ModelConfig c = test::tiny_config();
  const std::vector<int32_t> data = test::learnable_stream(5000, int32_t(c.vocab_size));
  const std::vector<int32_t> noise = noise_stream(5000, int32_t(c.vocab_size));
  const TrainOptions o = options(ArMode::kAuto);
  Trainer a(c, o), b(c, o);
  const RunLog ra = train(&a, 24, 20, data, noise);
  const RunLog rb = train(&b, 21, 20, data, noise);  // stops while active, with selections cached
  const std::string path = ::testing::TempDir() + "/dsv4_ar_resume.pt";
  b.save_state(path);
  Trainer resumed(c, o);
  resumed.load_state(path);
  const RunLog rc = train(&resumed, 24, 20, data, noise);
  std::vector<double> joined = rb.losses;
  joined.insert(joined.end(), rc.losses.begin(), rc.losses.end());
  std::vector<bool> joined_active = rb.active;
  joined_active.insert(joined_active.end(), rc.active.begin(), rc.active.end());
  EXPECT_EQ(joined, ra.losses);
  EXPECT_EQ(joined_active, ra.active);
  EXPECT_TRUE(ra.active[21]);  // the resume happened inside an active stretch
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace dsv4::train
