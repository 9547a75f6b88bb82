// Chunked prefill must not change the result: every chunk size (1 = token-by-token decode, odd
// sizes that split window and compression blocks, the whole prompt) gives the same logits for
// every position and leaves the same state for the following decode steps (plain numerics,
// so the comparison is not blurred by FP8 rounding ties).
#include <gtest/gtest.h>

#include "tests/model/golden_util.h"

namespace dsv4 {
namespace {

class ChunkedPrefill : public ::testing::TestWithParam<std::string> {};

std::vector<float> run(const Model& m, const std::vector<int32_t>& prompt, const std::vector<int32_t>& decode,
                       int64_t chunk) {
  SequenceState st = m.new_sequence();
  ForwardOutput out;
  std::vector<float> logits;
  for (size_t s = 0; s < prompt.size(); s += size_t(chunk)) {
    size_t n = std::min(size_t(chunk), prompt.size() - s);
    m.forward(&st, std::span<const int32_t>(prompt.data() + s, n), LogitsMode::kAll, &out);
    logits.insert(logits.end(), out.logits.begin(), out.logits.end());
  }
  for (int32_t t : decode) {
    m.forward(&st, std::span<const int32_t>(&t, 1), LogitsMode::kLast, &out);
    logits.insert(logits.end(), out.logits.begin(), out.logits.end());
  }
  return logits;
}

TEST_P(ChunkedPrefill, EveryChunkSizeMatchesWholePrompt) {
  DSV4_REQUIRE_SHARED();
  const std::string dir = test::shared_dir() + "/golden/" + GetParam();
  auto model = Model::load(dir, Numerics::kPlain);
  auto expected = TensorDirectory::open(dir + "/expected-nosim.safetensors");
  auto prompt = test::i32s(expected->get("input.prompt_ids"));
  auto decode_all = test::i32s(expected->get("input.decode_ids"));
  std::vector<int32_t> decode(decode_all.begin(), decode_all.begin() + 8);
  std::vector<float> whole = run(*model, prompt, decode, int64_t(prompt.size()));
  for (int64_t chunk : {1, 7, 64}) {
    std::vector<float> got = run(*model, prompt, decode, chunk);
    ASSERT_EQ(got.size(), whole.size());
    EXPECT_LE(test::rel_max_err(got.data(), whole.data(), whole.size()), 1e-4) << "chunk " << chunk;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, ChunkedPrefill, ::testing::ValuesIn(test::golden_cases()));

}  // namespace
}  // namespace dsv4
