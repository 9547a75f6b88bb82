// A decode step gives the same bits on one thread and on several: the engine shares a step's
// products out differently by thread count (the grouped output projection's groups in one region
// at decode, the MoE's fused regions), and a row's value must never depend on that.
#include <bit>
#include <cstring>

#include "core/thread_pool.h"
#include "tests/model/golden_util.h"

namespace dsv4 {
namespace {

class DecodeThreads : public ::testing::TestWithParam<std::string> {};

// Logits of the prompt's last row and of each decode step, on `threads` threads.
std::vector<std::vector<float>> run(const std::string& dir, int threads, const std::vector<int32_t>& prompt,
                                    const std::vector<int32_t>& decode) {
  ThreadPool pool(threads);
  auto model = Model::load(dir, Numerics::kReference, &pool, test::test_residency());
  SequenceState st = model->new_sequence();
  ForwardOutput out;
  std::vector<std::vector<float>> logits;
  model->forward(&st, prompt, LogitsMode::kLast, &out);
  logits.push_back(out.logits);
  for (int32_t t : decode) {
    model->forward(&st, std::span<const int32_t>(&t, 1), LogitsMode::kLast, &out);
    logits.push_back(out.logits);
  }
  return logits;
}

TEST_P(DecodeThreads, OneThreadAndSeveralGiveTheSameBits) {
  DSV4_REQUIRE_SHARED();
  const std::string dir = test::shared_dir() + "/golden/" + GetParam();
  auto expected = TensorDirectory::open(dir + "/expected.safetensors");
  const auto prompt = test::i32s(expected->get("input.prompt_ids"));
  auto decode = test::i32s(expected->get("input.decode_ids"));
  decode.resize(std::min<size_t>(decode.size(), 8));
  const auto one = run(dir, 1, prompt, decode);
  for (int threads : {2, 3}) {
    SCOPED_TRACE(std::to_string(threads) + " threads");
    const auto many = run(dir, threads, prompt, decode);
    ASSERT_EQ(one.size(), many.size());
    for (size_t s = 0; s < one.size(); ++s) {
      ASSERT_EQ(one[s].size(), many[s].size());
      ASSERT_FALSE(one[s].empty());
      for (size_t k = 0; k < one[s].size(); ++k)
        ASSERT_EQ(std::bit_cast<uint32_t>(one[s][k]), std::bit_cast<uint32_t>(many[s][k])) << "step " << s << " logit " << k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, DecodeThreads, ::testing::ValuesIn(test::golden_cases()));

}  // namespace
}  // namespace dsv4
