// Generation on the golden checkpoints: greedy decoding is the argmax of the forward pass,
// chunking does not change it, MTP speculative decoding is exact (greedy: identical tokens;
// sampling: the same distribution), and seeded sampling is reproducible. Routed experts streamed
// through an expert cache give the same tokens, and their reads start when a token is sampled.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "engine/generate.h"
#include "model/expert_cache.h"
#include "model/synthetic.h"
#include "tests/model/golden_util.h"
#include "tests/test_util.h"

namespace dsv4 {
namespace {

class Generate : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    DSV4_REQUIRE_SHARED();
    const std::string dir = test::shared_dir() + "/golden/" + GetParam();
    model_ = Model::load(dir, Numerics::kReference);
    auto expected = TensorDirectory::open(dir + "/expected.safetensors");
    auto ids = test::i32s(expected->get("input.prompt_ids"));
    prompt_.assign(ids.begin(), ids.begin() + 40);
  }
  GenerateResult run(int64_t n, bool speculative, SamplingParams sp = {}, int64_t chunk = 256) {
    Session s(*model_, SessionOptions{0, chunk, speculative});
    GenerateOptions o;
    o.max_tokens = n;
    o.sampling = sp;
    o.speculative = speculative;
    return generate(&s, prompt_, o);
  }
  std::unique_ptr<Model> model_;
  std::vector<int32_t> prompt_;
};

TEST_P(Generate, GreedyIsArgmaxOfStepwiseLogits) {
  GenerateResult g = run(24, false);
  ASSERT_EQ(g.tokens.size(), 24u);
  SequenceState st = model_->new_sequence();
  ForwardOutput out;
  model_->forward(&st, prompt_, LogitsMode::kLast, &out);
  for (int32_t expect : g.tokens) {
    int32_t am = int32_t(std::max_element(out.logits.begin(), out.logits.end()) - out.logits.begin());
    ASSERT_EQ(am, expect);
    model_->forward(&st, std::span<const int32_t>(&am, 1), LogitsMode::kLast, &out);
  }
}

TEST_P(Generate, ChunkedPromptGivesTheSameGeneration) {
  EXPECT_EQ(run(24, false, {}, 7).tokens, run(24, false, {}, 256).tokens);
}

// Greedy speculative decoding must be token-for-token identical to plain greedy, rejections included.
TEST_P(Generate, GreedySpeculativeIsIdentical) {
  GenerateResult plain = run(200, false);
  GenerateResult spec = run(200, true);
  EXPECT_EQ(spec.tokens, plain.tokens);
  EXPECT_GT(spec.drafted, 0);
  EXPECT_LT(spec.accepted, spec.drafted) << "no rejection exercised";
  std::printf("%s: %lld drafted, %lld accepted (%.0f%%)\n", GetParam().c_str(), (long long)spec.drafted,
              (long long)spec.accepted, 100.0 * double(spec.accepted) / double(spec.drafted));
}

TEST_P(Generate, SeededSamplingIsReproducible) {
  SamplingParams sp;
  sp.temperature = 0.9f;
  sp.top_p = 0.95f;
  sp.seed = 1234;
  GenerateResult a = run(20, false, sp), b = run(20, false, sp);
  EXPECT_EQ(a.tokens, b.tokens);
  sp.seed = 99;
  EXPECT_NE(run(20, false, sp).tokens, a.tokens);
}

// The second generated token is the first one speculative sampling decides (accept the draft or
// resample the residual). Over many seeds its frequencies must match plain sampling: a
// two-sample chi-square test of homogeneity at p < 0.001.
TEST_P(Generate, SpeculativeSamplingPreservesTheDistribution) {
  Session base(*model_, SessionOptions{0, 256, true});
  base.append(prompt_);
  const int kRuns = 600;
  std::map<int32_t, int> plain, spec;
  for (int seed = 0; seed < kRuns; ++seed)
    for (bool speculative : {false, true}) {
      Session s = base;
      GenerateOptions o;
      o.max_tokens = 2;
      o.sampling.temperature = 1.0f;
      o.sampling.top_k = 8;
      o.sampling.seed = uint64_t(seed) * 2654435761u + (speculative ? 17 : 0);
      o.speculative = speculative;
      GenerateResult r = generate(&s, {}, o);
      ASSERT_EQ(r.tokens.size(), 2u);
      (speculative ? spec : plain)[r.tokens[1]]++;
    }
  // Pool categories with small expected counts into one bin.
  double chi2 = 0;
  int df = -1, rest_a = 0, rest_b = 0;
  std::map<int32_t, int> all = plain;
  for (auto [t, c] : spec) all[t] += c;
  for (auto [t, c] : all) {
    int a = plain[t], b = spec[t];
    if (c < 20) {
      rest_a += a, rest_b += b;
      continue;
    }
    double e = c / 2.0;
    chi2 += (a - e) * (a - e) / e + (b - e) * (b - e) / e;
    ++df;
  }
  if (rest_a + rest_b > 0) {
    double e = (rest_a + rest_b) / 2.0;
    chi2 += (rest_a - e) * (rest_a - e) / e + (rest_b - e) * (rest_b - e) / e;
    ++df;
  }
  ASSERT_GE(df, 1);
  // Wilson–Hilferty approximation of the chi-square quantile at 0.999.
  const double z = 3.090, k = df;
  const double bound = k * std::pow(1 - 2 / (9 * k) + z * std::sqrt(2 / (9 * k)), 3);
  EXPECT_LT(chi2, bound) << "df " << df;
  std::printf("chi2 %.1f (df %d, bound %.1f)\n", chi2, df, bound);
}

INSTANTIATE_TEST_SUITE_P(Cases, Generate, ::testing::ValuesIn(test::golden_cases()));

// A synthetic stack (2 of 4 layers hash-routed, MTP) with its routed experts streamed from disk:
// seeded sampling, plain and speculative, gives the tokens of the resident model; and when a
// token reaches on_token, the reads of its hash-routed experts have already started (generate
// issues them as soon as the token is sampled, before the callback and the MTP draft).
TEST(GenerateStreamed, SameTokensAndHashExpertsReadWhenSampled) {
  test::TempDir dir("gen-stream");
  write_synthetic_checkpoint(preset_config("tiny", 4, 32), dir.str(), 11);
  std::unique_ptr<Model> resident = Model::load(dir.str(), Numerics::kReference, nullptr, Residency::kCopy);
  const ModelConfig& c = resident->config();
  const size_t slot = ExpertCache::slot_bytes_for(c, resident->weights(), resident->tensors());
  std::unique_ptr<Model> streamed = Model::load(dir.str(), Numerics::kReference, nullptr, Residency::kCopy, 64 * slot);
  ASSERT_NE(streamed->expert_cache(), nullptr);
  ASSERT_GE(c.n_hash_layers, 1);
  const std::vector<int32_t> prompt{1000, 2000, 3000};
  const int64_t n = 16;
  for (bool speculative : {false, true}) {
    SCOPED_TRACE(speculative ? "speculative" : "plain");
    GenerateOptions o;
    o.max_tokens = n;
    o.speculative = speculative;
    o.sampling.temperature = 1.0f;
    o.sampling.seed = 5;
    Session a(*resident, SessionOptions{0, 256, speculative});
    const GenerateResult want = generate(&a, prompt, o);
    int64_t seen = 0, missing = 0;
    o.on_token = [&](int32_t t) {
      if (++seen == n) return true;  // the last token: nothing will run it
      for (int l = 0; l < c.n_hash_layers; ++l)
        for (int k = 0; k < c.n_activated_experts; ++k) {
          const int32_t e = streamed->weights().layers[size_t(l)].ffn.tid2eid[size_t(int64_t(t) * c.n_activated_experts + k)];
          missing += !streamed->expert_cache()->holds(l, e);
        }
      return true;
    };
    Session b(*streamed, SessionOptions{0, 256, speculative});
    const GenerateResult got = generate(&b, prompt, o);
    EXPECT_EQ(got.tokens, want.tokens);
    ASSERT_EQ(int64_t(got.tokens.size()), n);
    EXPECT_EQ(missing, 0) << "hash-routed experts of sampled tokens not being read at on_token";
    if (speculative) {
      EXPECT_GT(got.drafted, 0);
    }
  }
}

}  // namespace
}  // namespace dsv4
