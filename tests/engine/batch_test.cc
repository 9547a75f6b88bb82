// Batched decoding gives every sequence exactly (bit for bit) what it gets alone: the kernels
// compute each row independently, and attention stays within each sequence.
#include <gtest/gtest.h>

#include "engine/batch.h"
#include "tests/model/golden_util.h"

namespace dsv4 {
namespace {

TEST(DecodeBatch, EqualsSeparateDecoding) {
  DSV4_REQUIRE_SHARED();
  auto model = Model::load(test::shared_dir() + "/golden/flash-mini", Numerics::kReference, nullptr,
                           test::test_residency());
  auto ids = test::i32s(TensorDirectory::open(test::shared_dir() + "/golden/flash-mini/expected.safetensors")
                            ->get("input.prompt_ids"));
  // Five sequences of different lengths (one crossing the window and a ratio-128 block): five
  // rows take the kernels' 4–8-row paths, and attention runs every sequence in one region.
  std::vector<std::vector<int32_t>> prompts = {{ids.begin(), ids.begin() + 5},
                                               {ids.begin() + 10, ids.begin() + 140},
                                               {ids.begin() + 50, ids.begin() + 83},
                                               {ids.begin() + 20, ids.begin() + 21},
                                               {ids.begin() + 90, ids.begin() + 99}};
  std::vector<Session> alone, batched;
  for (auto& p : prompts) {
    alone.emplace_back(*model, SessionOptions{});
    batched.emplace_back(*model, SessionOptions{});
    alone.back().append(p);
    batched.back().append(p);
  }
  std::vector<int32_t> next = {7, 300, 1000, 42, 900};
  std::vector<float> logits;
  std::vector<Session*> ptrs;
  for (Session& s : batched) ptrs.push_back(&s);
  const int64_t V = model->config().vocab_size;
  for (int step = 0; step < 12; ++step) {
    decode_batch(ptrs, next, &logits);
    for (size_t i = 0; i < prompts.size(); ++i) {
      std::span<const float> a = alone[i].append(std::span<const int32_t>(&next[i], 1));
      for (int64_t k = 0; k < V; ++k) ASSERT_EQ(a[size_t(k)], logits[i * size_t(V) + size_t(k)]) << "seq " << i << " step " << step;
      next[i] = int32_t(std::max_element(a.begin(), a.end()) - a.begin());
    }
  }
}

}  // namespace
}  // namespace dsv4
