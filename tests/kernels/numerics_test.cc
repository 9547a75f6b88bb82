// Number formats and numerics kernels against ../shared/golden/numerics.safetensors (values of
// the official reference), plus exhaustive properties of the decoders.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/hadamard.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "model/config.h"
#include "model/hyper_connection.h"
#include "model/rope.h"
#include "tests/test_util.h"

namespace dsv4 {
namespace {

class Numerics : public ::testing::Test {
 protected:
  void SetUp() override {
    DSV4_REQUIRE_SHARED();
    dir_ = TensorDirectory::open(test::shared_dir() + "/golden/numerics.safetensors");
  }
  const TensorView& t(const std::string& n) { return dir_->get(n); }
  std::unique_ptr<TensorDirectory> dir_;
};

bool same_bits_or_nan(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
}

TEST_F(Numerics, E4m3DecodesAll256Codes) {
  auto ref = test::f32s(t("e4m3.code_to_value"));
  ASSERT_EQ(ref.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_TRUE(same_bits_or_nan(e4m3_to_f32(uint8_t(b)), ref[size_t(b)])) << b;
}

TEST_F(Numerics, E4m3EncodesRneSaturating) {
  auto in = test::f32s(t("e4m3.encode.input"));
  auto code = test::i32s(t("e4m3.encode.code"));
  auto val = test::f32s(t("e4m3.encode.value"));
  ASSERT_EQ(code.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(int(f32_to_e4m3(in[i])), int(code[i])) << "input " << in[i];
    EXPECT_TRUE(same_bits_or_nan(e4m3_to_f32(f32_to_e4m3(in[i])), val[i]));
  }
}

TEST_F(Numerics, E2m1DecodeEncodeAndPacking) {
  auto ref = test::f32s(t("e2m1.code_to_value"));
  for (int c = 0; c < 16; ++c) EXPECT_TRUE(same_bits_or_nan(e2m1_to_f32(uint8_t(c)), ref[size_t(c)])) << c;
  auto in = test::f32s(t("e2m1.encode.input"));
  auto code = test::i32s(t("e2m1.encode.code"));
  for (size_t i = 0; i < in.size(); ++i) EXPECT_EQ(int(f32_to_e2m1(in[i])), int(code[i])) << "input " << in[i];
  auto vals = test::f32s(t("e2m1.pack.example_values"));
  auto bytes = test::i32s(t("e2m1.pack.example_bytes"));
  std::vector<uint8_t> packed(bytes.begin(), bytes.end());
  for (size_t k = 0; k < vals.size(); ++k) EXPECT_EQ(fp4_packed_at(packed.data(), k), vals[k]);
}

TEST_F(Numerics, E8m0) {
  auto code = test::i32s(t("e8m0.code"));
  auto val = test::f32s(t("e8m0.value"));
  for (size_t i = 0; i < code.size(); ++i) EXPECT_TRUE(same_bits_or_nan(e8m0_to_f32(uint8_t(code[i])), val[i])) << code[i];
  EXPECT_EQ(e8m0_to_f32(0), std::ldexp(1.0f, -127));  // not zero
}

TEST_F(Numerics, PowerOfTwoScales) {
  auto amax = test::f32s(t("round_scale.amax"));
  auto s8 = test::f32s(t("round_scale.fp8_scale"));
  auto s4 = test::f32s(t("round_scale.fp4_scale"));
  for (size_t i = 0; i < amax.size(); ++i) {
    EXPECT_EQ(kernels::fp8_scale_for(amax[i]), s8[i]) << amax[i];
    EXPECT_EQ(kernels::fp4_scale_for(amax[i]), s4[i]) << amax[i];
  }
}

TEST_F(Numerics, ActQuantBlocks) {
  auto x = test::f32s(t("act_quant128.x"));
  auto q = test::f32s(t("act_quant128.q"));
  auto scale = test::f32s(t("act_quant128.scale"));
  auto y128 = test::f32s(t("act_quant128.y"));
  auto y64 = test::f32s(t("act_quant64.y"));
  std::vector<uint8_t> codes(x.size()), scales(x.size() / 128);
  kernels::fp8_quantize(x.data(), int64_t(x.size()), 128, codes.data(), scales.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(e4m3_to_f32(codes[i]), q[i]) << i;
  for (size_t b = 0; b < scales.size(); ++b) EXPECT_EQ(e8m0_to_f32(scales[b]), scale[b]) << b;
  std::vector<float> y(x);
  kernels::fp8_simulate(y.data(), int64_t(y.size()), 128);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(y[i], y128[i]) << i;
  y = x;
  kernels::fp8_simulate(y.data(), int64_t(y.size()), 64);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(y[i], y64[i]) << i;
}

TEST_F(Numerics, Fp4ActQuant) {
  auto x = test::f32s(t("fp4_act_quant32.x"));
  auto q = test::f32s(t("fp4_act_quant32.q"));
  auto scale = test::f32s(t("fp4_act_quant32.scale"));
  auto yr = test::f32s(t("fp4_act_quant32.y"));
  std::vector<uint8_t> codes(x.size()), scales(x.size() / 32);
  kernels::fp4_quantize(x.data(), int64_t(x.size()), 32, codes.data(), scales.data());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(e2m1_to_f32(codes[i]), q[i]) << i;
  for (size_t b = 0; b < scales.size(); ++b) EXPECT_EQ(e8m0_to_f32(scales[b]), scale[b]) << b;
  std::vector<float> y(x);
  kernels::fp4_simulate(y.data(), int64_t(y.size()), 32);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(y[i], yr[i]) << i;
}

TEST_F(Numerics, Bf16RoundToNearestEven) {
  auto in = test::f32s(t("bf16.input"));
  const TensorView& bits = t("bf16.bits");
  for (size_t i = 0; i < in.size(); ++i) {
    int32_t b;
    std::memcpy(&b, bits.data + 4 * i, 4);
    if (std::isnan(in[i])) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(in[i]))));
      continue;
    }
    EXPECT_EQ(int(f32_to_bf16(in[i])), b & 0xffff) << in[i];
  }
}

// dot_rows (the hyper-connection mixes) promises dot's bits row by row, whatever the row count
// and tail length — decode and prefill call both paths.
TEST_F(Numerics, DotRowsMatchesDotBitForBit) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t n : {1, 15, 16, 17, 100, 4096 + 5}) {
    for (int64_t rows : {1, 3, 4, 5, 9}) {
      std::vector<float> a(size_t(rows * n)), b(static_cast<size_t>(n)), out(static_cast<size_t>(rows));
      for (auto& v : a) v = nd(rng);
      for (auto& v : b) v = nd(rng);
      kernels::dot_rows(a.data(), rows, b.data(), n, out.data());
      for (int64_t r = 0; r < rows; ++r)
        EXPECT_EQ(std::bit_cast<uint32_t>(out[size_t(r)]), std::bit_cast<uint32_t>(kernels::dot(a.data() + r * n, b.data(), n)))
            << "n " << n << " rows " << rows << " row " << r;
    }
  }
}

// The expert SwiGLU against the formula in double: within 3e-7 relative (its e^x is within
// 2 ulp of expf) over the whole clamped range, the clamp itself, and tails where e^−x over- or
// underflows.
TEST(SwiGlu, MatchesTheFormulaAndClamps) {
  std::vector<float> g, v;
  for (float x = -120.0f; x <= 30.0f; x += 0.01953125f) g.push_back(x), v.push_back(0.75f - 0.001f * x);
  for (float x : {-1e30f, -90.0f, -87.5f, -1e-30f, 0.0f, 1e-30f, 9.99f, 10.0f, 10.01f, 1e30f}) g.push_back(x), v.push_back(-3.0f);
  v.push_back(25.0f), g.push_back(1.0f);  // up clamped to L
  v.push_back(-25.0f), g.push_back(1.0f);
  for (float limit : {10.0f, 0.0f}) {
    std::vector<float> out(g.size());
    kernels::swiglu(g.data(), v.data(), int64_t(g.size()), limit, 1.5f, out.data());
    for (size_t i = 0; i < g.size(); ++i) {
      double gi = g[i], vi = v[i];
      if (limit > 0) gi = std::min(gi, double(limit)), vi = std::clamp(vi, -double(limit), double(limit));
      const double want = gi / (1.0 + std::exp(-gi)) * vi * 1.5;
      const double tol = gi < -87 ? 1e-35 : 3e-7 * std::fabs(want) + 1e-38;
      EXPECT_NEAR(out[i], want, tol) << "g " << g[i] << " v " << v[i] << " limit " << limit;
    }
  }
}

TEST_F(Numerics, Sinkhorn) {
  auto mixes = test::f32s(t("sinkhorn.mixes"));
  auto scale = test::f32s(t("sinkhorn.hc_scale"));
  auto base = test::f32s(t("sinkhorn.hc_base"));
  auto pre = test::f32s(t("sinkhorn.pre"));
  auto post = test::f32s(t("sinkhorn.post"));
  auto comb = test::f32s(t("sinkhorn.comb"));
  const int hc = 4, rows = int(mixes.size() / 24);
  for (int r = 0; r < rows; ++r) {
    const float* m = mixes.data() + r * 24;
    for (int j = 0; j < hc; ++j) {
      float p = 1.0f / (1.0f + std::exp(-(m[j] * scale[0] + base[size_t(j)]))) + 1e-6f;
      float q = 2.0f / (1.0f + std::exp(-(m[4 + j] * scale[1] + base[size_t(4 + j)])));
      EXPECT_NEAR(p, pre[size_t(r * hc + j)], 1e-6 * std::fabs(pre[size_t(r * hc + j)]));
      EXPECT_NEAR(q, post[size_t(r * hc + j)], 1e-6 * std::fabs(post[size_t(r * hc + j)]));
    }
    float c[16];
    for (int i = 0; i < 16; ++i) c[i] = m[8 + i] * scale[2] + base[size_t(8 + i)];
    sinkhorn(c, hc, 20, 1e-6f);
    for (int i = 0; i < 16; ++i) {
      float ref = comb[size_t(r * 16 + i)];
      EXPECT_NEAR(c[i], ref, 1e-6 * std::fabs(ref) + 1e-7) << "row " << r << " entry " << i;
    }
  }
}

TEST_F(Numerics, Hadamard) {
  for (int n : {64, 128}) {
    auto x = test::f32s(t(cat("hadamard", n, ".x")));
    auto y = test::f32s(t(cat("hadamard", n, ".y")));
    for (size_t r = 0; r < x.size() / size_t(n); ++r) {
      kernels::hadamard_inplace(x.data() + r * size_t(n), n);
      for (int i = 0; i < n; ++i) {
        float ref = y[r * size_t(n) + size_t(i)];
        EXPECT_NEAR(x[r * size_t(n) + size_t(i)], ref, 1e-6 * test::rms(y.data(), y.size()));
      }
    }
  }
}

TEST_F(Numerics, RopeTables) {
  // The real V4 rope settings (both official configs agree).
  ModelConfig c;
  c.rope_head_dim = 64;
  c.rope_theta = 10000;
  c.compress_rope_theta = 160000;
  c.rope_factor = 16;
  c.original_seq_len = 65536;
  c.beta_fast = 32;
  c.beta_slow = 1;
  for (const char* kind : {"compress", "window"}) {
    bool compress = std::string(kind) == "compress";
    RopeTable tab = compress ? make_rope_table(c, c.compress_rope_theta, true) : make_rope_table(c, c.rope_theta, false);
    auto inv = test::f32s(t(cat("rope.", kind, ".inv_freq")));
    for (size_t i = 0; i < inv.size(); ++i) EXPECT_NEAR(tab.inv_freq[i], inv[i], 1e-6 * inv[i]) << kind << i;
    auto cs = test::f32s(t(cat("rope.", kind, ".cos")));
    auto sn = test::f32s(t(cat("rope.", kind, ".sin")));
    float co[32], si[32];
    for (int p = 0; p < 300; ++p) {
      tab.cos_sin(p, co, si);
      for (int i = 0; i < 32; ++i) {
        EXPECT_NEAR(co[i], cs[size_t(p * 32 + i)], 1e-6) << kind << " pos " << p << " pair " << i;
        EXPECT_NEAR(si[i], sn[size_t(p * 32 + i)], 1e-6) << kind << " pos " << p << " pair " << i;
      }
    }
  }
}

// Properties that need no reference data.
TEST(Formats, E4m3RoundTripsEveryFiniteCode) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f) continue;
    EXPECT_EQ(int(f32_to_e4m3(e4m3_to_f32(uint8_t(b)))), b == 0x80 ? 0x80 : b) << b;
  }
  EXPECT_EQ(f32_to_e4m3(1e9f), 0x7e);
  EXPECT_EQ(f32_to_e4m3(-1e9f), 0xfe);
}

TEST(Formats, E2m1TiesToEven) {
  const float in[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 7.0f};
  const float out[] = {0.0f, 1.0f, 1.0f, 2.0f, 2.0f, 4.0f, 4.0f, 6.0f};
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(in[i])), out[i]) << in[i];
    EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(-in[i])), -out[i]) << -in[i];
  }
}

}  // namespace
}  // namespace dsv4
