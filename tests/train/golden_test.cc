// The trainer's forward against the golden no-sim numerics (golden README §5–§6): logits of the
// prefill, of the decode steps (one causal pass over prompt + decode ids gives the same rows)
// and of the MTP block, within max|a−b| ≤ 1e-4·rms(ref) with identical argmax, and the
// score-routed experts identical as sets — in F32 and in F64.
#include <gtest/gtest.h>

#include <set>

#include "model/config.h"
#include "tests/model/golden_util.h"
#include "tests/test_util.h"
#include "train/forward.h"

namespace dsv4::train {
namespace {

torch::Tensor ids_of(const TensorView& v) {
  std::vector<float> f = test::f32s(v);
  return torch::tensor(std::vector<int64_t>(f.begin(), f.end()), torch::kLong);
}

torch::Tensor floats_of(const TensorView& v) {
  std::vector<float> f = test::f32s(v);
  return torch::tensor(f, torch::kDouble).view(v.shape);
}

// max|a−b| / rms(ref) and whether every row's argmax agrees.
void expect_close(const torch::Tensor& got, const torch::Tensor& ref, const std::string& what) {
  ASSERT_EQ(got.sizes(), ref.sizes()) << what;
  const torch::Tensor g = got.to(torch::kDouble);
  const double rms = ref.pow(2).mean().sqrt().item<double>();
  const double err = (g - ref).abs().max().item<double>() / rms;
  EXPECT_LE(err, 1e-4) << what;
  std::printf("%-20s max|a-b|/rms = %.2e\n", what.c_str(), err);
  EXPECT_TRUE(g.argmax(-1).equal(ref.argmax(-1))) << what << ": argmax differs";
}

class TrainGolden : public ::testing::TestWithParam<std::tuple<std::string, torch::Dtype>> {};

TEST_P(TrainGolden, LogitsAndRoutingMatchNoSim) {
  DSV4_REQUIRE_SHARED();
  const auto [name, dtype] = GetParam();
  if (name == "none") GTEST_SKIP() << "no golden cases";
  const std::string dir = test::shared_dir() + "/golden/" + name;
  const ModelConfig c = load_config(dir);
  const TrainModel m(c, load_params(dir, c, dtype));
  auto ex = TensorDirectory::open(dir + "/expected-nosim.safetensors");
  const torch::Tensor prompt = ids_of(ex->get("input.prompt_ids")), dec = ids_of(ex->get("input.decode_ids"));
  const int64_t P = prompt.size(0), T = dec.size(0);
  const torch::Tensor tokens = torch::cat({prompt, dec}).unsqueeze(0);

  torch::NoGradGuard no_grad;
  ForwardTrace trace;
  ForwardResult r = forward(m, tokens, &trace);
  expect_close(r.logits[0].narrow(0, 0, P), floats_of(ex->get("logits.prefill")), "logits.prefill");
  expect_close(r.logits[0].narrow(0, P, T), floats_of(ex->get("logits.decode")), "logits.decode");
  torch::Tensor mtp = mtp_forward(m, r.hidden.narrow(1, 0, P + T - 1), tokens.narrow(1, 1, P + T - 1), &trace);
  expect_close(mtp[0].narrow(0, 0, P), floats_of(ex->get("logits.mtp_prefill")), "logits.mtp_prefill");
  expect_close(mtp[0].narrow(0, P, T - 1), floats_of(ex->get("logits.mtp_decode")), "logits.mtp_decode");

  // Score-routed layers in order (main layers ≥ num_hash_layers, then the MTP block).
  ASSERT_EQ(int(trace.routes.size()), c.n_layers - c.n_hash_layers + 1);
  for (size_t k = 0; k < trace.routes.size(); ++k) {
    const bool is_mtp = k + 1 == trace.routes.size();
    const std::string tag = is_mtp ? "mtp" : cat("block", c.n_hash_layers + int(k));
    torch::Tensor want = torch::cat({ids_of(ex->get(cat("moe.", tag, ".prefill.experts"))),
                                     ids_of(ex->get(cat("moe.", tag, ".decode.experts")))}).view({-1, c.n_activated_experts});
    torch::Tensor got = trace.routes[k].experts[0];
    ASSERT_EQ(got.size(0), want.size(0)) << tag;
    int differ = 0;
    for (int64_t s = 0; s < got.size(0); ++s)
      differ += std::get<0>(got[s].sort()).equal(std::get<0>(want[s].sort())) ? 0 : 1;
    EXPECT_EQ(differ, 0) << tag << ": rows whose expert set differs";
  }
}

std::string case_name(const ::testing::TestParamInfo<TrainGolden::ParamType>& info) {
  std::string n = std::get<0>(info.param) + (std::get<1>(info.param) == torch::kDouble ? "_f64" : "_f32");
  for (char& ch : n)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

INSTANTIATE_TEST_SUITE_P(Cases, TrainGolden,
                         ::testing::Combine(::testing::ValuesIn(test::golden_cases()),
                                            ::testing::Values(torch::kFloat, torch::kDouble)),
                         case_name);

}  // namespace
}  // namespace dsv4::train
