// The SIMD sparse attention against its scalar twin on every ISA this CPU supports: several key
// counts (0, odd, not a multiple of the SIMD width, a full 640-key set), head dims that are and
// are not handled by the SIMD path, sinks that dominate and that vanish.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/isa.h"
#include "kernels/sparse_attention.h"

namespace dsv4::kernels {
namespace {

struct Case {
  int heads;
  int64_t dim, n_kv;
  float sink_mean;
};

TEST(SparseAttention, MatchesScalarTwinOnEveryIsa) {
  const Isa saved = active_isa();
  for (const Case& k : {Case{64, 512, 640, 0.0f}, Case{8, 512, 37, 5.0f}, Case{4, 64, 1, -30.0f}, Case{4, 64, 0, 0.0f},
                        Case{12, 128, 129, 0.0f}, Case{3, 40, 17, 0.0f}}) {
    SCOPED_TRACE(testing::Message() << k.heads << " heads, dim " << k.dim << ", " << k.n_kv << " keys");
    std::mt19937 rng(uint32_t(k.heads * 1000 + k.n_kv));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> q(size_t(k.heads) * size_t(k.dim)), kv(size_t(k.n_kv) * size_t(k.dim) + 1);
    std::vector<float> sink(static_cast<size_t>(k.heads));
    for (auto& v : q) v = 3.0f * nd(rng);  // spread logits: softmax far from uniform
    for (auto& v : kv) v = nd(rng);
    for (auto& v : sink) v = k.sink_mean + nd(rng);
    std::vector<const float*> rows(static_cast<size_t>(k.n_kv));
    for (int64_t i = 0; i < k.n_kv; ++i) rows[size_t(i)] = kv.data() + i * k.dim;
    auto run = [&](bool reference) {
      std::vector<float> out(q.size(), -1.0f), scratch(size_t(k.heads) * size_t(k.n_kv) + 1);
      SparseAttentionArgs a{q.data(), rows.data(), k.n_kv, sink.data(), k.heads, k.dim,
                            1.0f / std::sqrt(float(k.dim)), out.data(), scratch.data()};
      if (reference) sparse_attention_reference(a);
      else sparse_attention(a);
      return out;
    };
    const std::vector<float> ref = run(true);
    for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
      if (!isa_supported(isa)) continue;
      set_isa(isa);
      SCOPED_TRACE(std::string(isa_name(isa)));
      const std::vector<float> got = run(false);
      // Outputs are convex combinations of unit-variance values: absolute F32 rounding scale.
      for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(got[i], ref[i], 2e-5f) << "element " << i;
    }
  }
  set_isa(saved);
}

}  // namespace
}  // namespace dsv4::kernels
