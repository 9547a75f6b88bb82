// QAT fake quantization against the golden numerics file (bit-exact encoders and act_quant
// round trips), its straight-through gradient, and the QAT forward against the golden
// reference-numerics logits with the README's end-to-end criteria (only statistical agreement
// is possible there: per-row cosine ≥ 0.9, argmax agreement ≥ 0.8).
#include <gtest/gtest.h>

#include "tests/model/golden_util.h"
#include "tests/test_util.h"
#include "train/forward.h"
#include "train/qat.h"

namespace dsv4::train {
namespace {

torch::Tensor floats(const TensorDirectory& d, const std::string& name) {
  const TensorView& v = d.get(name);
  return torch::tensor(test::f32s(v), torch::kFloat).view(v.shape);
}

void expect_bits_equal(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  const torch::Tensor finite = want.isfinite();
  EXPECT_TRUE(got.masked_select(finite).equal(want.masked_select(finite))) << what;
}

TEST(TrainQat, EncodersAndRoundTripsBitExact) {
  DSV4_REQUIRE_SHARED();
  auto n = TensorDirectory::open(test::shared_dir() + "/golden/numerics.safetensors");
  const torch::Tensor e4 = floats(*n, "e4m3.encode.input");
  expect_bits_equal(round_e4m3(e4.clamp(-448, 448)), floats(*n, "e4m3.encode.value"), "e4m3");
  const torch::Tensor e2 = floats(*n, "e2m1.encode.input");
  expect_bits_equal(round_e2m1(e2.clamp(-6, 6)), floats(*n, "e2m1.encode.value"), "e2m1");
  const torch::Tensor x = floats(*n, "act_quant128.x");
  expect_bits_equal(fp8_sim(x, 128), floats(*n, "act_quant128.y"), "act_quant128");
  expect_bits_equal(fp8_sim(x, 64), floats(*n, "act_quant64.y"), "act_quant64");
  expect_bits_equal(fp4_sim(floats(*n, "fp4_act_quant32.x"), 32), floats(*n, "fp4_act_quant32.y"), "fp4_act_quant32");
}

TEST(TrainQat, StraightThroughGradient) {
  torch::manual_seed(1);
  for (auto f : {+[](const torch::Tensor& t) { return fp8_sim(t, 32); }, +[](const torch::Tensor& t) { return fp4_sim(t, 32); },
                 +[](const torch::Tensor& t) { return fp8_weight_sim(t); }, +[](const torch::Tensor& t) { return fp4_weight_sim(t); }}) {
    torch::Tensor x = torch::randn({4, 64}, torch::kDouble).requires_grad_(true);
    torch::Tensor r = torch::randn({4, 64}, torch::kDouble);
    torch::Tensor y = f(x);
    EXPECT_FALSE(y.equal(x));  // it rounds
    (y * r).sum().backward();
    EXPECT_TRUE(x.grad().equal(r));
  }
}

TEST(TrainQat, ForwardAgreesWithReferenceNumerics) {
  DSV4_REQUIRE_SHARED();
  for (const std::string& name : test::golden_cases()) {
    if (name == "none") continue;
    SCOPED_TRACE(name);
    const std::string dir = test::shared_dir() + "/golden/" + name;
    const ModelConfig c = load_config(dir);
    TrainModel m(c, load_params(dir, c, torch::kFloat));
    m.qat = true;
    auto ex = TensorDirectory::open(dir + "/expected.safetensors");
    std::vector<float> ids = test::f32s(ex->get("input.prompt_ids"));
    torch::Tensor tokens = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong).unsqueeze(0);
    torch::NoGradGuard no_grad;
    const torch::Tensor got = forward(m, tokens).logits[0].to(torch::kDouble);
    const torch::Tensor want = floats(*ex, "logits.prefill").to(torch::kDouble);
    const torch::Tensor cos = (got * want).sum(-1) / (got.norm(2, -1) * want.norm(2, -1));
    const double agree = got.argmax(-1).eq(want.argmax(-1)).to(torch::kDouble).mean().item<double>();
    // Plain numerics (no rounding) as the control: QAT must be the closer of the two.
    m.qat = false;
    const torch::Tensor plain = forward(m, tokens).logits[0].to(torch::kDouble);
    const double plain_err = (plain - want).abs().max().item<double>(), qat_err = (got - want).abs().max().item<double>();
    std::printf("%s: min row cosine %.4f, argmax agreement %.3f; max|err| qat %.3g vs plain %.3g\n", name.c_str(),
                cos.min().item<double>(), agree, qat_err, plain_err);
    EXPECT_GE(cos.min().item<double>(), 0.9);
    EXPECT_GE(agree, 0.8);
    EXPECT_LT(qat_err, plain_err);
    // The first positions (before any rounding flip can spread) agree closely.
    const double rms = want.pow(2).mean().sqrt().item<double>();
    EXPECT_LE((got.narrow(0, 0, 7) - want.narrow(0, 0, 7)).abs().max().item<double>() / rms, 1e-3);
  }
}

}  // namespace
}  // namespace dsv4::train
