// Sampler (engine/sampler.h): greedy, reproducibility, the filters, the penalties' definitions,
// log-probabilities, and a chi-square check that temperature sampling draws from softmax(l/T).
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "core/error.h"

namespace dsv4 {
namespace {

SamplingParams temp(float t, uint64_t seed = 1) {
  SamplingParams p;
  p.temperature = t;
  p.seed = seed;
  return p;
}

std::vector<float> softmax(const std::vector<float>& l, double t = 1) {
  double m = *std::max_element(l.begin(), l.end()), z = 0;
  std::vector<float> p(l.size());
  for (double v : l) z += std::exp((v - m) / t);
  for (size_t i = 0; i < l.size(); ++i) p[i] = float(std::exp((l[i] - m) / t) / z);
  return p;
}

// Logits whose softmax is exactly-ish the given probabilities.
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(float(std::log(p)));
  return l;
}

std::set<int32_t> support(const std::vector<float>& p) {
  std::set<int32_t> s;
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] > 0) s.insert(int32_t(i));
  return s;
}

TEST(Sampler, GreedyIsArgmaxWithTiesToLowestId) {
  Sampler s(SamplingParams{});
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 2.0f, 1.9f};
  EXPECT_EQ(s.sample(l, {}), 1);
  EXPECT_EQ(s.sample(std::vector<float>{-INFINITY, -3.0f, -2.0f}, {}), 2);
  std::vector<float> p = s.probabilities(l, {});
  EXPECT_EQ(support(p), (std::set<int32_t>{1}));
  EXPECT_FLOAT_EQ(p[1], 1.0f);
}

TEST(Sampler, SameSeedSameSequence) {
  std::vector<float> l = {0.5f, 1.0f, 0.0f, -0.5f, 0.8f, 0.3f};
  auto run = [&](uint64_t seed) {
    Sampler s(temp(1.0f, seed));
    std::vector<int32_t> out;
    for (int i = 0; i < 200; ++i) out.push_back(s.sample(l, out));
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
  Sampler a(temp(1, 5)), b(temp(1, 5));
  for (int i = 0; i < 100; ++i) {
    float u = a.uniform();
    EXPECT_EQ(u, b.uniform());
    EXPECT_GE(u, 0.0f);
    EXPECT_LT(u, 1.0f);
  }
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  SamplingParams p = temp(1.0f);
  p.top_k = 3;
  Sampler s(p);
  std::vector<float> l = {0.0f, 3.0f, 1.0f, 2.5f, 2.9f, -1.0f};
  EXPECT_EQ(support(s.probabilities(l, {})), (std::set<int32_t>{1, 3, 4}));
  std::vector<float> pr = s.probabilities(l, {});
  EXPECT_NEAR(pr[1] + pr[3] + pr[4], 1.0, 1e-6);
  EXPECT_NEAR(pr[1] / pr[4], std::exp(0.1), 1e-5);  // relative odds unchanged
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) seen.insert(s.sample(l, {}));
  EXPECT_EQ(seen, (std::set<int32_t>{1, 3, 4}));
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingP) {
  const std::vector<float> l = logits_of({0.05, 0.5, 0.15, 0.3});  // sorted: 1 (.5), 3 (.3), 2 (.15), 0 (.05)
  auto kept = [&](float top_p) {
    SamplingParams p = temp(1.0f);
    p.top_p = top_p;
    return support(Sampler(p).probabilities(l, {}));
  };
  EXPECT_EQ(kept(0.3f), (std::set<int32_t>{1}));
  EXPECT_EQ(kept(0.75f), (std::set<int32_t>{1, 3}));
  EXPECT_EQ(kept(0.9f), (std::set<int32_t>{1, 2, 3}));
  EXPECT_EQ(kept(1.0f), (std::set<int32_t>{0, 1, 2, 3}));
  // With top-k the mass is relative to the k kept tokens: top-2 = {.5, .3}; .5/.8 = .625 < .7.
  SamplingParams p = temp(1.0f);
  p.top_k = 2;
  p.top_p = 0.7f;
  EXPECT_EQ(support(Sampler(p).probabilities(l, {})), (std::set<int32_t>{1, 3}));
  p.top_p = 0.6f;
  EXPECT_EQ(support(Sampler(p).probabilities(l, {})), (std::set<int32_t>{1}));
  // A large vocabulary (the partial sort grows past its first chunk).
  std::vector<float> big(5000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = float(i % 97) * 0.001f;
  SamplingParams q = temp(1.0f);
  q.top_p = 0.99f;
  std::vector<float> pb = Sampler(q).probabilities(big, {});
  const std::vector<float> sb = softmax(big);
  double mass = 0;
  for (int32_t id : support(pb)) mass += sb[size_t(id)];
  EXPECT_GE(mass, 0.99 - 1e-6);
  EXPECT_LT(support(pb).size(), big.size());
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheMax) {
  const std::vector<float> l = logits_of({0.05, 0.5, 0.15, 0.3});
  auto kept = [&](float min_p, int top_k = 0) {
    SamplingParams p = temp(1.0f);
    p.min_p = min_p;
    p.top_k = top_k;
    return support(Sampler(p).probabilities(l, {}));
  };
  EXPECT_EQ(kept(0.2f), (std::set<int32_t>{1, 2, 3}));  // floor .1
  EXPECT_EQ(kept(0.5f), (std::set<int32_t>{1, 3}));     // floor .25
  EXPECT_EQ(kept(0.7f), (std::set<int32_t>{1}));        // floor .35
  EXPECT_EQ(kept(0.2f, 2), (std::set<int32_t>{1, 3}));
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  const std::vector<float> l = {1.0f, 2.0f, 0.0f};
  std::vector<float> cold = Sampler(temp(0.5f)).probabilities(l, {}), hot = Sampler(temp(2.0f)).probabilities(l, {});
  std::vector<float> ec = softmax(l, 0.5), eh = softmax(l, 2.0);
  for (size_t i = 0; i < l.size(); ++i) {
    EXPECT_NEAR(cold[i], ec[i], 1e-6);
    EXPECT_NEAR(hot[i], eh[i], 1e-6);
  }
}

// OpenAI: logit −= presence·[count > 0] + frequency·count. HF/llama.cpp repetition: a seen
// token's positive logit is divided by the penalty, a negative one multiplied.
TEST(Sampler, PenaltiesFollowTheirDefinitions) {
  const std::vector<float> l = {2.0f, -1.0f, 0.5f, 3.0f, 0.0f};
  const std::vector<int32_t> history = {0, 0, 0, 1, 3, 1};
  SamplingParams p;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  std::vector<float> got = apply_penalties(l, history, p);
  EXPECT_FLOAT_EQ(got[0], 2.0f - 0.5f - 0.75f);
  EXPECT_FLOAT_EQ(got[1], -1.0f - 0.5f - 0.5f);
  EXPECT_FLOAT_EQ(got[2], 0.5f);
  EXPECT_FLOAT_EQ(got[3], 3.0f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(got[4], 0.0f);

  SamplingParams r;
  r.repetition_penalty = 2.0f;
  got = apply_penalties(l, history, r);
  EXPECT_FLOAT_EQ(got[0], 1.0f);   // once, however often it occurred
  EXPECT_FLOAT_EQ(got[1], -2.0f);  // negative: multiplied
  EXPECT_FLOAT_EQ(got[3], 1.5f);
  EXPECT_FLOAT_EQ(got[2], 0.5f);

  // Greedy and the sampled distribution both see the penalised logits.
  EXPECT_EQ(Sampler(r).sample(l, history), 3);  // penalised {1, -2, .5, 1.5, 0}
  r.repetition_penalty = 8.0f;
  EXPECT_EQ(Sampler(r).sample(l, history), 2);  // penalised {.25, -8, .5, .375, 0}
}

TEST(Sampler, PenalisedDistributionIsSoftmaxOfPenalisedLogits) {
  const std::vector<float> l = {2.0f, -1.0f, 0.5f, 3.0f};
  const std::vector<int32_t> history = {3, 3, 0};
  SamplingParams p = temp(0.8f);
  p.frequency_penalty = 0.4f;
  p.repetition_penalty = 1.3f;
  std::vector<float> got = Sampler(p).probabilities(l, history);
  std::vector<float> want = softmax(apply_penalties(l, history, p), 0.8);
  for (size_t i = 0; i < l.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << i;
  EXPECT_THROW(apply_penalties(l, std::vector<int32_t>{4}, p), Error);
}

TEST(Sampler, LogprobsAreThoseOfTheRawModel) {
  SamplingParams p;
  p.top_logprobs = 3;
  p.presence_penalty = 5;  // changes the choice, not the reported distribution
  Sampler s(p);
  const std::vector<float> l = {1.0f, 3.0f, 2.0f, 2.0f, -1.0f};
  SampleInfo info;
  int32_t id = s.sample(l, std::vector<int32_t>{1}, &info);
  EXPECT_EQ(id, 2);  // 3 − 5 < 2; ties 2/3 → 2
  std::vector<float> sm = softmax(l);
  EXPECT_NEAR(info.logprob, std::log(sm[2]), 1e-5);
  ASSERT_EQ(info.top.size(), 3u);
  EXPECT_EQ(info.top[0].first, 1);
  EXPECT_EQ(info.top[1].first, 2);
  EXPECT_EQ(info.top[2].first, 3);
  EXPECT_NEAR(info.top[0].second, std::log(sm[1]), 1e-5);
}

TEST(Sampler, SampleFromDrawsOnlyPositiveWeights) {
  Sampler s(temp(1.0f, 9));
  const std::vector<float> w = {0.0f, 2.0f, 0.0f, 6.0f, 0.0f};  // unnormalised: 1/4, 3/4
  int n3 = 0;
  for (int i = 0; i < 4000; ++i) {
    int32_t id = s.sample_from(w);
    ASSERT_TRUE(id == 1 || id == 3) << id;
    n3 += id == 3;
  }
  EXPECT_NEAR(n3 / 4000.0, 0.75, 0.03);
  EXPECT_THROW(s.sample_from(std::vector<float>{0.0f, 0.0f}), Error);
  EXPECT_THROW(s.sample_from(std::vector<float>{0.5f, -0.1f}), Error);
}

// 20,000 draws at T = 0.7 against softmax(l/0.7): chi-square with 9 degrees of freedom. The
// seed is fixed, so the test is deterministic; 27.88 is the 0.1% critical value, and the same
// draws tested against the untempered softmax(l) (a wrong distribution) exceed it by far.
TEST(Sampler, TemperatureSamplingMatchesSoftmaxChiSquare) {
  const std::vector<float> l = {0.3f, 1.2f, -0.4f, 0.9f, 0.0f, 1.5f, -1.0f, 0.6f, 0.2f, 1.0f};
  const double T = 0.7;
  const int kDraws = 20000;
  Sampler s(temp(float(T), 2024));
  std::vector<int> count(l.size());
  for (int i = 0; i < kDraws; ++i) ++count[size_t(s.sample(l, {}))];
  auto chi2 = [&](const std::vector<float>& p) {
    double x = 0;
    for (size_t i = 0; i < l.size(); ++i) {
      double e = kDraws * double(p[i]);
      x += (count[i] - e) * (count[i] - e) / e;
    }
    return x;
  };
  const double right = chi2(softmax(l, T)), wrong = chi2(softmax(l, 1.0));
  EXPECT_LT(right, 27.88);
  EXPECT_GT(wrong, 100.0);
}

TEST(Sampler, RejectsBadParameters) {
  auto make = [](auto edit) {
    SamplingParams p;
    edit(p);
    Sampler s(p);
  };
  EXPECT_THROW(make([](SamplingParams& p) { p.temperature = -1; }), Error);
  EXPECT_THROW(make([](SamplingParams& p) { p.temperature = NAN; }), Error);
  EXPECT_THROW(make([](SamplingParams& p) { p.top_k = -2; }), Error);
  EXPECT_THROW(make([](SamplingParams& p) { p.top_p = 0; }), Error);
  EXPECT_THROW(make([](SamplingParams& p) { p.top_p = 1.5f; }), Error);
  EXPECT_THROW(make([](SamplingParams& p) { p.min_p = -0.1f; }), Error);
  EXPECT_THROW(make([](SamplingParams& p) { p.repetition_penalty = 0; }), Error);
  EXPECT_THROW(make([](SamplingParams& p) { p.top_logprobs = -1; }), Error);
  Sampler s(SamplingParams{});
  EXPECT_THROW(s.sample(std::vector<float>{}, {}), Error);
  EXPECT_THROW(s.sample(std::vector<float>{1.0f, NAN}, {}), Error);
  EXPECT_THROW(s.sample(std::vector<float>{-INFINITY, -INFINITY}, {}), Error);
}

}  // namespace
}  // namespace dsv4
