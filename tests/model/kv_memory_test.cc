// The KV state a long prefill leaves measured against inspect's / bench's figure
// (kv_bytes_per_token: fixed + per token × context): a 3000-token prompt, prefilled in chunks as
// the engine does, on each golden model in reference numerics (FP8 / FP4 rows). The measured
// bytes are the allocations' capacities; growth by an eighth keeps them within 13% above the
// rows they hold (the vector's doubling would leave up to 2×: 1024 entries' room for 750).
#include <gtest/gtest.h>

#include <random>

#include "tests/model/golden_util.h"

namespace dsv4 {
namespace {

class KvMemory : public ::testing::TestWithParam<std::string> {};

TEST_P(KvMemory, MeasuredMatchesBytesPerToken) {
  DSV4_REQUIRE_SHARED();
  auto model = Model::load(test::shared_dir() + "/golden/" + GetParam(), Numerics::kReference);
  const int64_t context = 3000, chunk = 256;
  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(model->config().vocab_size) - 1);
  SequenceState st = model->new_sequence();
  ForwardOutput out;
  for (int64_t done = 0; done < context; done += chunk) {
    std::vector<int32_t> t(static_cast<size_t>(std::min(chunk, context - done)));
    for (auto& x : t) x = tok(rng);
    model->forward(&st, t, LogitsMode::kNone, &out);
  }
  double fixed = 0;
  const double per_token = kv_bytes_per_token(model->config(), Numerics::kReference, &fixed);
  const double predicted = fixed + per_token * double(context), measured = double(st.bytes());
  EXPECT_GE(measured, 0.99 * predicted) << "fixed " << fixed << " + " << per_token << " B/token";
  EXPECT_LE(measured, 1.13 * predicted) << "fixed " << fixed << " + " << per_token << " B/token";
  EXPECT_GT(per_token * double(context), fixed / 2);  // the context part is not negligible here
}

INSTANTIATE_TEST_SUITE_P(Cases, KvMemory, ::testing::ValuesIn(test::golden_cases()));

}  // namespace
}  // namespace dsv4
