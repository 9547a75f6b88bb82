// Which experts a rank holds (contiguous, uneven counts allowed) and which tensors are a routed
// expert's (the ones a rank may leave unread).
#include <gtest/gtest.h>

#include "distributed/expert_parallel.h"
#include "model/weights.h"

namespace dsv4 {
namespace {

TEST(ExpertShare, ContiguousCoverEveryExpertOnce) {
  for (int E : {6, 16, 256, 384})
    for (int N = 1; N <= 7 && N <= E; ++N) {
      int next = 0;
      for (int r = 0; r < N; ++r) {
        const ExpertRange g = dist::expert_share(E, r, N);
        EXPECT_EQ(g.begin, next) << E << " experts, " << N << " ranks, rank " << r;
        const int n = g.end - g.begin;
        EXPECT_TRUE(n == E / N || n == E / N + 1) << n;
        next = g.end;
      }
      EXPECT_EQ(next, E);
    }
  const ExpertRange r1 = dist::expert_share(16, 1, 3);  // 6, 5, 5
  EXPECT_EQ(r1.begin, 6);
  EXPECT_EQ(r1.end, 11);
}

TEST(ExpertShare, RoutedExpertTensorNames) {
  EXPECT_EQ(routed_expert_of("layers.3.ffn.experts.17.w1.weight"), 17);
  EXPECT_EQ(routed_expert_of("mtp.0.ffn.experts.255.w2.scale"), 255);
  EXPECT_EQ(routed_expert_of("layers.3.ffn.shared_experts.w1.weight"), -1);
  EXPECT_EQ(routed_expert_of("layers.3.ffn.gate.weight"), -1);
  EXPECT_EQ(routed_expert_of("layers.3.ffn.experts.x.w1.weight"), -1);
  EXPECT_EQ(routed_expert_of("embed.weight"), -1);
}

}  // namespace
}  // namespace dsv4
